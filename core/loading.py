"""``babelplug.load``: resolve a model reference, check options, load the backend.

Everything that can be wrong with the request (unknown model, backend, hub or
option) is found before any weights are read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import Backend
from .catalog import HubRef, ModelEntry
from .errors import ModelLoadError, OptionError, UnknownBackendError, UnknownHubError, UnknownModelError
from .hubs import offline_default
from .manager import Registry, plugin_manager, registry
from .model import Model, ModelInfo
from .schemas import validate

DEFAULT_HUB = "huggingface"


@dataclass
class Target:
    """A model reference resolved as far as possible without touching weights."""

    name: str
    entry: ModelEntry | None
    backend: type[Backend] | None
    hub: str | None
    revision: str | None
    path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def repo_id(self) -> str | None:
        ref = self.entry.hubs.get(self.hub or "") if self.entry else None
        return ref.id if ref else None


def backend_class(reg: Registry, name: str) -> type[Backend]:
    """The registered backend ``name``, or an error listing close matches."""
    if name not in reg.backends:
        raise UnknownBackendError(name, reg.backends)
    return reg.backends[name]


def model_type(path: Path) -> str | None:
    """``model_type`` from a folder's ``config.json``, if readable."""
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def detect_backend(reg: Registry, path: Path) -> type[Backend]:
    """The one backend that declares the folder's ``model_type``."""
    kind = model_type(path)
    if kind is None:
        raise ModelLoadError(f"{path}: not a model folder (no readable config.json with a model_type)")
    found = [cls for cls in reg.backends.values() if kind in cls.model_types]
    if len(found) != 1:
        which = "no backend" if not found else "several backends (" + ", ".join(c.name for c in found) + ")"
        raise UnknownBackendError(kind, [c.name for c in found] or reg.backends, f" for model_type {kind!r}: {which} declare it; pass backend=...")
    return found[0]


def check_backend_serves(cls: type[Backend], path: Path) -> None:
    kind = model_type(path)
    if cls.model_types and kind is not None and kind not in cls.model_types:
        raise ModelLoadError(
            f"{path}: holds a {kind!r} model, but backend {cls.name!r} serves {', '.join(cls.model_types)}"
        )


def resolve(model: str | os.PathLike[str], *, backend: str | None = None, hub: str | None = None, revision: str | None = None, **options: Any) -> Target:
    """Resolve ``model`` (catalog name or alias, local folder, or hub id) and check the options."""
    reg = registry()
    cls = backend_class(reg, backend) if backend else None
    if hub is not None and hub not in reg.hubs:
        raise UnknownHubError(hub, reg.hubs)
    ref = os.fspath(model)
    local = Path(ref).expanduser()
    if local.is_dir():
        target = Target(local.name, None, cls or detect_backend(reg, local), "local", None, local)
    else:
        entry = reg.lookup_model(ref) or plugin_manager().hook.resolve_model(ref=ref, hub=hub)
        if entry is None and "/" not in ref:
            hint = f"; not a local folder either ({local.resolve()})"
            raise UnknownModelError(ref, list(reg.models) + list(reg.aliases), hint)
        if entry is None:  # an id on a hub
            entry = ModelEntry(name=ref, backend=backend or "", hubs={hub or DEFAULT_HUB: HubRef(ref)})
        hub = hub or (DEFAULT_HUB if DEFAULT_HUB in entry.hubs or not entry.hubs else next(iter(entry.hubs)))
        if entry.hubs and hub not in entry.hubs:
            raise ModelLoadError(f"model {entry.name!r} has no id on hub {hub!r}; it is on: {', '.join(entry.hubs)}")
        if cls is None and entry.backend:
            if entry.backend not in reg.backends:
                raise UnknownBackendError(
                    entry.backend, reg.backends,
                    f" (catalog entry {entry.name!r}, {entry.source or 'a plugin'}: no loaded plugin provides it)",
                )  # fmt: skip
            cls = reg.backends[entry.backend]
        revision = revision or entry.hubs[hub].revision
        target = Target(entry.name, entry, cls, hub, revision)
    defaults: dict[str, Any] = dict(target.entry.options) if target.entry else {}
    if target.entry and target.entry.chat_format:
        defaults.setdefault("chat_format", target.entry.chat_format)
    target.options = {**defaults, **options}
    if target.backend is not None:
        check_options(target.backend, target.options)
    return target


def check_options(cls: type[Backend], options: dict[str, Any]) -> None:
    validate(options, cls.options_schema, f"load options of backend {cls.name!r}", OptionError)


def load(model: str | os.PathLike[str], *, backend: str | None = None, hub: str | None = None, revision: str | None = None, **options: Any) -> Model:
    """Load a model through its backend.

    :param model: a catalog name or alias (``"xglm-564m"``), a local model
        folder, or a repository id on a hub (``"facebook/xglm-564M"``).
    :param backend: the backend to use; default: the catalog's, or the one that
        declares the folder's ``config.json`` ``model_type``.
    :param hub: where weights come from (``"huggingface"``, ``"local"``, ...).
    :param revision: the hub revision (branch, tag or commit).
    :param options: load options, checked against the backend's options schema.
    """
    target = resolve(model, backend=backend, hub=hub, revision=revision, **options)
    path = target.path
    if path is None:
        repo_id = target.repo_id or target.name
        path = registry().hubs[target.hub or DEFAULT_HUB].resolve(repo_id, target.revision, offline_default())
    cls = target.backend
    if cls is None:
        cls = detect_backend(registry(), path)
        check_options(cls, target.options)
    check_backend_serves(cls, path)
    instance = cls.load(path, **target.options)
    info = ModelInfo(target.name, cls.name, target.hub, target.revision, path, target.entry)
    return Model(instance, info)
