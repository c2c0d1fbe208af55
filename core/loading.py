"""``babelplug.load``: resolve a model reference, check options, load the backend.

Everything that can be wrong with the request (unknown model, backend, hub or
option) is found before any weights are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import Backend
from .catalog import HubRef, ModelEntry
from .config import Setting, load_config
from .errors import ModelLoadError, OptionError, UnknownBackendError, UnknownChatFormatError, UnknownHubError, UnknownModelError
from .hubs import Hub
from .manager import Registry, plugin_manager, registry
from .model import Model, ModelInfo
from .schemas import validate


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
    offline: bool = False
    sources: dict[str, str] = field(default_factory=dict)
    """Where ``hub``, ``revision`` and ``offline`` came from (see :mod:`babelplug.config`)."""

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
    """``model_type`` from a folder's ``config.json`` (None if absent or unset); ModelLoadError if it is broken JSON."""
    from .checks import read_config

    kind = (read_config(path) or {}).get("model_type")
    return kind if isinstance(kind, str) else None


def detect_backend(reg: Registry, path: Path) -> type[Backend]:
    """The one backend that declares the folder's ``model_type``."""
    from .checks import require_config

    kind = require_config(path)["model_type"]  # names a missing config.json, broken JSON or a missing model_type
    found = [cls for cls in reg.backends.values() if kind in cls.model_types]
    if len(found) != 1:
        which = "no backend declares" if not found else "several backends (" + ", ".join(c.name for c in found) + ") declare"
        raise ModelLoadError(f"{path}: {which} its model_type {kind!r}; pass backend=... (known: {', '.join(reg.backends)})")
    return found[0]


def check_backend_serves(cls: type[Backend], path: Path) -> None:
    kind = model_type(path)
    if cls.model_types and kind is not None and kind not in cls.model_types:
        raise ModelLoadError(
            f"{path}: holds a {kind!r} model, but backend {cls.name!r} serves {', '.join(cls.model_types)}"
        )


def resolve(
    model: str | os.PathLike[str], *, backend: str | None = None, hub: str | None = None,
    revision: str | None = None, offline: bool | None = None, **options: Any,
) -> Target:  # fmt: skip
    """Resolve ``model`` (local folder, catalog name or alias, or hub id) and check the options.

    Hub, revision, offline mode and options merge the arguments with the
    configuration (see :mod:`babelplug.config`); nothing is downloaded.
    """
    return _resolve(model, backend, hub, revision, offline, options, need_backend=True)


def hub_for(reg: Registry, setting: Setting) -> Hub:
    """The registered hub a setting names, or an error naming the setting's source and close matches."""
    if setting.value not in reg.hubs:
        hint = "" if setting.source == "argument" else f" (from {setting.source})"
        raise UnknownHubError(str(setting.value), reg.hubs, hint)
    return reg.hubs[setting.value]


def _resolve(model: str | os.PathLike[str], backend: str | None, hub: str | None, revision: str | None,
             offline: bool | None, options: dict[str, Any], need_backend: bool) -> Target:  # fmt: skip
    reg, cfg = registry(), load_config()
    cls = backend_class(reg, backend) if backend else None
    if hub is not None:
        hub_for(reg, Setting(hub, "argument"))
    ref = os.fspath(model)
    local = Path(ref).expanduser()
    if local.is_dir():  # an existing folder wins over any configuration
        target = Target(local.name, None, cls or detect_backend(reg, local), "local", None, local)
        target.offline, target.sources = bool(cfg.pick("offline", offline).value), {"hub": "local folder"}
        target.options = dict(options)
        if target.backend is not None:
            check_options(target.backend, target.options)
        return target
    table = cfg.model_table([ref])
    asked = cfg.pick("hub", hub, table[1] if table else None)
    entry = reg.lookup_model(ref) or plugin_manager().hook.resolve_model(ref=ref, hub=None if asked.source == "default" else asked.value)
    if entry is None and "/" not in ref:
        hint = f"; not a local folder either ({local.resolve()})"
        raise UnknownModelError(ref, list(reg.models) + list(reg.aliases), hint)
    if entry is not None:
        table = cfg.model_table([ref, entry.name, *entry.aliases])
    per_model = table[1] if table else {}
    chosen = cfg.pick("hub", hub, per_model)
    if entry is None:  # an id on the chosen hub
        entry = ModelEntry(name=ref, backend=backend or "", hubs={str(chosen.value): HubRef(ref)})
    hub_obj = hub_for(reg, chosen)
    if chosen.source == "default" and entry.hubs and not hub_obj.serves(entry):
        chosen = Setting(next(iter(entry.hubs)), "catalog (the entry's first hub)")
        hub_obj = hub_for(reg, chosen)
    if entry.hubs and not hub_obj.serves(entry):
        where = "" if chosen.source == "argument" else f" (hub from {chosen.source})"
        raise ModelLoadError(f"model {entry.name!r} has no id on hub {chosen.value!r}{where}; it is on: {', '.join(entry.hubs)}")
    if need_backend and cls is None and entry.backend:
        if entry.backend not in reg.backends:
            raise UnknownBackendError(
                entry.backend, reg.backends,
                f" (catalog entry {entry.name!r}, {entry.source or 'a plugin'}: no loaded plugin provides it)",
            )  # fmt: skip
        cls = reg.backends[entry.backend]
    rev = cfg.pick("revision", revision, per_model)
    if rev.value is None and entry.hubs.get(hub_obj.name) and entry.hubs[hub_obj.name].revision:
        rev = Setting(entry.hubs[hub_obj.name].revision, "catalog")
    if rev.value is None:
        rev = Setting(hub_obj.revision(None), f"default (hub {hub_obj.name!r})")
    off = cfg.pick("offline", offline)
    target = Target(entry.name, entry, cls if need_backend else None, hub_obj.name, hub_obj.revision(rev.value))
    target.offline = bool(off.value)
    target.sources = {"hub": chosen.source, "revision": rev.source, "offline": off.source}
    if table:
        target.sources["table"] = f'[models."{table[0]}"]'
    defaults: dict[str, Any] = dict(entry.options)
    if entry.chat_format:
        defaults.setdefault("chat_format", entry.chat_format)
    configured = {k.split(".", 1)[1]: s.value for k, s in per_model.items() if k.startswith("options.")}
    if configured and target.backend is not None:
        source = next(s.source for k, s in per_model.items() if k.startswith("options."))
        validate(configured, target.backend.options_schema, f'{source.removeprefix("file ")}: [models."{table[0]}"].options', OptionError)  # type: ignore[index]
    target.options = {**defaults, **configured, **options}
    if target.backend is not None:
        check_options(target.backend, target.options)
    return target


def check_options(cls: type[Backend], options: dict[str, Any]) -> None:
    validate(options, cls.options_schema, f"load options of backend {cls.name!r}", OptionError)
    formats = registry().chat_formats
    name = options.get("chat_format")
    if isinstance(name, str) and name != "template" and name not in formats:
        raise UnknownChatFormatError(name, [*formats, "template"], f" (load option of backend {cls.name!r})")
    cls.validate_options(options)


def load(
    model: str | os.PathLike[str], *, backend: str | None = None, hub: str | None = None,
    revision: str | None = None, offline: bool | None = None, **options: Any,
) -> Model:  # fmt: skip
    """Load a model through its backend.

    :param model: a local model folder (always wins), a catalog name or alias
        (``"xglm-564m"``), or a repository id on the configured hub
        (``"facebook/xglm-564M"``).
    :param backend: the backend to use; default: the catalog's, or the one that
        declares the folder's ``config.json`` ``model_type``.
    :param hub: where weights come from (``"huggingface"``, ``"modelscope"``,
        ``"local"``, ...); default: the configuration's (see :mod:`babelplug.config`).
    :param revision: the hub revision (branch, tag or commit); default: the
        configuration's, else the catalog's, else the hub's (``main``, ``master``).
    :param offline: make no network call; default: the configuration's.
    :param options: load options, checked against the backend's options schema
        (over the configuration's ``[models."NAME"].options`` and the catalog's).
    """
    target = resolve(model, backend=backend, hub=hub, revision=revision, offline=offline, **options)
    path = target.path or locate(target)
    cls = target.backend
    if cls is None:
        cls = detect_backend(registry(), path)
        check_options(cls, target.options)
    check_backend_serves(cls, path)
    instance = cls.load(path, **target.options)
    info = ModelInfo(target.name, cls.name, target.hub, target.revision, path, target.entry)
    return Model(instance, info)


def target_of(model: str | os.PathLike[str], *, hub: str | None = None, revision: str | None = None,
              offline: bool | None = None) -> Target:  # fmt: skip
    """Resolve hub, id, revision and options of ``model`` without needing its backend (``config show``)."""
    return _resolve(model, None, hub, revision, offline, {}, need_backend=False)


def locate(target: Target) -> Path:
    """The local folder of a resolved target, through its hub (offline: from the cache only)."""
    if target.path is not None:
        return target.path
    assert target.entry is not None and target.hub is not None
    return registry().hubs[target.hub].locate(target.entry, target.revision, target.offline)


def download(model: str | os.PathLike[str], *, hub: str | None = None, revision: str | None = None,
             offline: bool | None = None) -> tuple[Target, Path]:  # fmt: skip
    """Fetch a model's files into its hub's cache (no backend needed); return the target and the folder."""
    if Path(os.fspath(model)).expanduser().is_dir():
        raise ModelLoadError(f"{os.fspath(model)!r} is a local folder: there is nothing to download")
    target = target_of(model, hub=hub, revision=revision, offline=offline)
    if not registry().hubs[target.hub or ""].downloads:
        raise ModelLoadError(f"hub {target.hub!r} has nothing to download; choose another hub with --hub")
    if target.offline:
        source = target.sources["offline"].replace("argument", "--offline / offline=True")
        raise ModelLoadError(
            f"cannot download {target.name!r} from hub {target.hub!r}: offline mode is on "
            f"(from {source}); pass --no-offline or unset it"
        )
    return target, locate(target)
