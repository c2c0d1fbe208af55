"""Hook specifications: the contract between babelplug and its plugins.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose
names are hooks below. Built-in plugins and third-party ones are loaded the
same way: a third-party distribution declares an entry point in the group
``babelplug``, e.g. in its ``pyproject.toml``::

    [project.entry-points.babelplug]
    my_family = "my_package.babelplug_plugin"

Every registration hook receives a ``register`` callable: the plugin calls it
once per thing it adds. Registering a name that already exists is an error
unless ``override=True`` is passed. Registration hooks must stay cheap: import
torch, transformers or modelscope inside :meth:`Backend.load`, never at module
import time, so listing commands (``babelplug models``) stay fast.

Hook implementations are checked against these specifications when a plugin is
loaded: a plugin with a misspelled hook name or argument is skipped with a
warning (a :class:`~babelplug.errors.PluginError` under ``BABELPLUG_STRICT_PLUGINS=1``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .catalog import ModelEntry

hookspec = pluggy.HookspecMarker("babelplug")
hookimpl = pluggy.HookimplMarker("babelplug")


@hookspec
def register_backends(register: Callable[..., None]) -> None:
    """Register backend classes and the catalog entries they serve.

    :param register: ``register(backend_cls=None, models=(), override=False)``.
        ``backend_cls`` is a :class:`~babelplug.backend.Backend` subclass (or
        ``None`` to add catalog entries only); ``models`` is an iterable of
        catalog entries, each a :class:`~babelplug.catalog.ModelEntry`, a
        mapping that ``specs/model.schema.json`` accepts, or the path of a JSON
        catalog file (``{"models": [...]}``). Entries without a ``backend`` key
        get ``backend_cls``'s name.
    """


@hookspec
def register_chat_formats(register: Callable[..., None]) -> None:
    """Register named chat formats.

    :param register: ``register(name, fn, override=False)`` where
        ``fn(messages: Sequence[Message]) -> str`` renders a conversation.
        Catalog entries and backends refer to chat formats by name.
    """


@hookspec
def register_task_specs(register: Callable[..., None]) -> None:
    """Register task files.

    :param register: ``register(path, override=False)`` with the path of a
        task JSON file (checked against ``specs/task.schema.json`` when the
        task is used). The task's ``name`` field is its registry name.
    """


@hookspec
def register_hubs(register: Callable[..., None]) -> None:
    """Register hubs: places model weights come from.

    :param register: ``register(hub, override=False)`` where ``hub`` is a
        :class:`~babelplug.hubs.Hub` with a ``name`` and a
        ``resolve(repo_id, revision, offline) -> Path`` method. Offline, a hub
        must make no network call and fail at once on a cache miss, naming the
        hub, id, revision and cache searched. Optional overrides:
        ``locate(entry, revision, offline)`` (find a catalog entry),
        ``revision(rev)`` (map revision names), ``cache_setting()`` and
        ``cached()`` (for ``babelplug config show`` and ``babelplug cache ls``).
        Users pick a hub by name: ``hub = "NAME"`` in the configuration,
        ``BABELPLUG_HUB``, ``--hub`` or ``load(..., hub=)``.
    """


@hookspec(firstresult=True)
def resolve_model(ref: str, hub: str | None) -> ModelEntry | None:
    """Claim a model reference that the catalog does not know.

    Called only when ``ref`` is neither a catalog name or alias nor an existing
    local folder. Return a :class:`~babelplug.catalog.ModelEntry`, or ``None``
    to let other plugins try.

    Stops at first non-None result.

    :param ref: the reference as the user gave it (``"org/name"``, say).
    :param hub: the hub the user asked for, or ``None`` for the default.
    """


@hookspec(firstresult=True)
def backend_call(
    backend: Backend, operation: str, args: Sequence[Any], params: Mapping[str, Any]
) -> Any:
    """Perform one backend operation; the wrapper point for cross-cutting plugins.

    babelplug's own implementation runs last and calls
    ``getattr(backend, operation)(*args)`` (plus ``params`` for ``generate``).
    A plugin that caches, traces or times calls implements this hook with
    ``@hookimpl(wrapper=True)`` and wraps every call of every backend::

        @hookimpl(wrapper=True)
        def backend_call(backend, operation, args, params):
            start = time.perf_counter()
            result = yield
            log(operation, time.perf_counter() - start)
            return result

    A non-wrapper implementation that returns non-None replaces the call
    (a cache hit, say). Stops at first non-None result.

    :param backend: the loaded backend instance.
    :param operation: ``"tokenize"``, ``"score"``, ``"generate"`` or ``"chat_format"``.
    :param args: the operation's positional arguments (texts, requests, prompts, messages).
    :param params: validated generation parameters (empty for other operations).
    """
