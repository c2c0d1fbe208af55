"""The plugin manager and the registry it fills.

Built-in plugins and third-party entry points (group ``babelplug``) are loaded
through one path. A plugin that fails to import or register is skipped with a
:class:`PluginWarning` naming it, so one broken plugin never bricks the CLI;
``BABELPLUG_STRICT_PLUGINS=1`` turns that into a :class:`~babelplug.errors.PluginError`.
``BABELPLUG_PLUGINS`` (comma-separated plugin names) loads only those plugins.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

from . import calls, hookspecs
from .backend import Backend
from .catalog import ModelEntry, read_catalog
from .errors import PluginError
from .hubs import Hub

GROUP = "babelplug"

#: Built-in plugins: (name, module), loaded exactly like entry points.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("catalog", "babelplug.plugins.catalog"),
    ("chat_formats", "babelplug.plugins.chat_formats"),
    ("hubs", "babelplug.plugins.hubs"),
    ("tasks", "babelplug.plugins.tasks"),
    ("xglm", "babelplug.plugins.xglm"),
    ("mt0", "babelplug.plugins.mt0"),
    ("bloomz", "babelplug.plugins.bloomz"),
    ("wangchanglm", "babelplug.plugins.wangchanglm"),
    ("polylm", "babelplug.plugins.polylm"),
)


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed to load or register."""


@dataclass
class Registry:
    """Everything plugins registered, by name."""

    backends: dict[str, type[Backend]] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    chat_formats: dict[str, Callable[..., str]] = field(default_factory=dict)
    tasks: dict[str, Path] = field(default_factory=dict)
    hubs: dict[str, Hub] = field(default_factory=dict)
    plugins: dict[str, str] = field(default_factory=dict)
    """Loaded plugin names and where they came from (``builtin`` or ``entry point``)."""
    owners: dict[tuple[str, str], str] = field(default_factory=dict)

    def lookup_model(self, ref: str) -> ModelEntry | None:
        """The catalog entry named or aliased ``ref`` (case-insensitive)."""
        key = ref.lower()
        name = key if key in self.models else self.aliases.get(key)
        return self.models.get(name) if name else None

    def _claim(self, kind: str, name: str, plugin: str, table: Mapping[str, Any], override: bool) -> None:
        owner = self.owners.get((kind, name))
        if name in table and not override:
            raise PluginError(
                f"plugin {plugin!r} registers {kind} {name!r}, already registered by plugin "
                f"{owner!r}; pass override=True to replace it"
            )
        self.owners[(kind, name)] = plugin


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    return None if raw is None else {p.strip() for p in raw.split(",") if p.strip()}


def _strict() -> bool:
    return os.environ.get("BABELPLUG_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def _fail(message: str, cause: BaseException | None = None) -> None:
    if _strict():
        raise PluginError(message) from cause
    warnings.warn(message, PluginWarning, stacklevel=3)


def _candidates() -> Iterable[tuple[str, Callable[[], Any], str]]:
    for name, module in BUILTIN_PLUGINS:
        yield name, (lambda m=module: importlib.import_module(m)), "builtin"
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist else "unknown distribution"
        yield ep.name, ep.load, dist


def build_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with every allowed plugin loaded and checked."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    pm.register(calls, name="babelplug.calls")
    allowed = _env_list("BABELPLUG_PLUGINS")
    for name, load, origin in _candidates():
        if (allowed is not None and name not in allowed) or pm.has_plugin(name):
            continue
        try:
            plugin = load()
            pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - isolate any plugin failure
            _fail(f"plugin {name!r} ({origin}) failed to load: {type(exc).__name__}: {exc}", exc)
            continue
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            pm.unregister(name=name)
            _fail(f"plugin {name!r} ({origin}) implements unknown hooks: {exc}", exc)
    return pm


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call every registration hook, one plugin at a time, and collect the results."""
    reg = Registry()
    for name, plugin in pm.list_name_plugin():
        if plugin is not calls:
            reg.plugins[name] = "builtin" if name in dict(BUILTIN_PLUGINS) else "entry point"
    for hook, make_register in _REGISTRATIONS.items():
        for impl in getattr(pm.hook, hook).get_hookimpls():
            try:
                impl.function(register=make_register(reg, impl.plugin_name))
            except Exception as exc:  # noqa: BLE001 - isolate any plugin failure
                _fail(f"plugin {impl.plugin_name!r} failed in {hook}: {type(exc).__name__}: {exc}", exc)
    return reg


def _backend_register(reg: Registry, plugin: str) -> Callable[..., None]:
    def register(backend_cls: type[Backend] | None = None, models: Iterable[Any] = (), override: bool = False) -> None:
        default = None
        if backend_cls is not None:
            if not (isinstance(backend_cls, type) and issubclass(backend_cls, Backend)):
                raise PluginError(f"plugin {plugin!r} registered {backend_cls!r}, not a Backend subclass")
            backend_cls.check_contract()
            reg._claim("backend", backend_cls.name, plugin, reg.backends, override)
            reg.backends[backend_cls.name] = backend_cls
            default = backend_cls.name
        for item in models:
            entries = (
                read_catalog(Path(item), backend=default)
                if isinstance(item, (str, os.PathLike))
                else [item if isinstance(item, ModelEntry) else ModelEntry.from_dict(item, backend=default)]
            )
            for entry in entries:
                _add_model(reg, entry, plugin, override)

    return register


def _add_model(reg: Registry, entry: ModelEntry, plugin: str, override: bool) -> None:
    reg._claim("model", entry.name, plugin, reg.models, override)
    reg.models[entry.name] = entry
    for alias in entry.aliases:
        reg._claim("model alias", alias.lower(), plugin, reg.aliases, override)
        reg.aliases[alias.lower()] = entry.name


def _named_register(table: str) -> Callable[[Registry, str], Callable[..., None]]:
    def make(reg: Registry, plugin: str) -> Callable[..., None]:
        def register(name: str, value: Any, override: bool = False) -> None:
            target = getattr(reg, table)
            reg._claim(table[:-1].replace("_", " "), name, plugin, target, override)
            target[name] = value

        return register

    return make


def _task_register(reg: Registry, plugin: str) -> Callable[..., None]:
    def register(path: str | os.PathLike[str], override: bool = False) -> None:
        from .tasks import task_name

        path = Path(path)
        name = task_name(path)
        reg._claim("task", name, plugin, reg.tasks, override)
        reg.tasks[name] = path

    return register


def _hub_register(reg: Registry, plugin: str) -> Callable[..., None]:
    def register(hub: Hub, override: bool = False) -> None:
        reg._claim("hub", hub.name, plugin, reg.hubs, override)
        reg.hubs[hub.name] = hub

    return register


_REGISTRATIONS: dict[str, Callable[[Registry, str], Callable[..., None]]] = {
    "register_backends": _backend_register,
    "register_chat_formats": _named_register("chat_formats"),
    "register_task_specs": _task_register,
    "register_hubs": _hub_register,
}


@cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built on first use)."""
    return build_plugin_manager()


@cache
def registry() -> Registry:
    """The process-wide registry (built on first use)."""
    return build_registry(plugin_manager())


def reset() -> None:
    """Forget the plugin manager and registry; the next use rebuilds them."""
    registry.cache_clear()
    plugin_manager.cache_clear()
