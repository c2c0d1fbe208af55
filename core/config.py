"""Configuration: where weights come from, merged from files, environment and arguments.

Sources, highest precedence first (a model reference that is an existing local
folder is always loaded from that folder, whatever the configuration says):

1. **argument**: ``babelplug.load(..., hub=, revision=, offline=)`` or the CLI
   flags ``--hub``, ``--revision``, ``--offline/--no-offline``;
2. **per-model table** ``[models."NAME"]`` of a config file (``hub``,
   ``revision``, ``options``), matched by catalog name, alias or the reference
   as given, case-insensitively; for task data, the **per-task table**
   ``[tasks."NAME"]`` (``hub``, ``revision``; see :mod:`babelplug.sources`);
3. **environment**: ``BABELPLUG_HUB``, ``BABELPLUG_OFFLINE`` (then a true
   ``HF_HUB_OFFLINE``), ``BABELPLUG_LOCAL_ROOT``, ``HF_HUB_CACHE``,
   ``MODELSCOPE_CACHE``;
4. **file**: ``$BABELPLUG_CONFIG`` when set (then the only file read, and it must
   exist); otherwise the user file ``$XDG_CONFIG_HOME/babelplug/config.toml``
   (default ``~/.config/babelplug/config.toml``) and then the project file
   ``./babelplug.toml``, which wins key by key;
5. **default**: ``hub = "huggingface"``, ``offline = false``, ``timeout = 10``.

Files are TOML checked against ``specs/config.schema.json``; relative paths in a
file are relative to that file. Every value remembers its source
(``babelplug config show`` prints them). Errors are
:class:`~babelplug.errors.ConfigError`\\ s naming the file, line and key.
Configuration is re-read on every use, so it is never stale.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .schemas import schema

Key = tuple[str, ...]

DEFAULTS: dict[Key, Any] = {("hub",): "huggingface", ("offline",): False, ("timeout",): 10.0}

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Setting:
    """A configuration value and where it came from (``"env BABELPLUG_HUB"``, ``"file PATH"``...)."""

    value: Any
    source: str


def _bool(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in _TRUE | _FALSE:
        raise ConfigError(f"env {var}", f"expected a boolean (1/0, true/false, yes/no, on/off), got {raw!r}")
    return value in _TRUE


def _path(raw: str, base: Path | None = None) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() or base is None else base / path


#: (variable, key, parser); earlier variables win over later ones for the same key.
ENV_VARS: tuple[tuple[str, Key], ...] = (
    ("BABELPLUG_HUB", ("hub",)),
    ("BABELPLUG_OFFLINE", ("offline",)),
    ("HF_HUB_OFFLINE", ("offline",)),
    ("BABELPLUG_LOCAL_ROOT", ("local_root",)),
    ("HF_HUB_CACHE", ("hubs", "huggingface", "cache_dir")),
    ("MODELSCOPE_CACHE", ("hubs", "modelscope", "cache_dir")),
)


def _from_env(env: Mapping[str, str]) -> dict[Key, Setting]:
    out: dict[Key, Setting] = {}
    for var, key in ENV_VARS:
        raw = env.get(var)
        if raw is None or key in out:
            continue
        if var == "HF_HUB_OFFLINE":  # huggingface_hub's own switch: only a true value counts
            if raw.strip().lower() in _TRUE:
                out[key] = Setting(True, f"env {var}")
        elif key == ("offline",):
            out[key] = Setting(_bool(var, raw), f"env {var}")
        elif key[-1] in ("local_root", "cache_dir"):
            if raw.strip():
                out[key] = Setting(_path(raw), f"env {var}")
        elif raw.strip():
            out[key] = Setting(raw.strip(), f"env {var}")
    return out


def config_files(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[Path]:
    """The config files that apply, lowest precedence first (they may not exist, except ``$BABELPLUG_CONFIG``)."""
    env = os.environ if env is None else env
    if env.get("BABELPLUG_CONFIG"):
        return [Path(env["BABELPLUG_CONFIG"]).expanduser().absolute()]
    xdg = env.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return [Path(xdg) / "babelplug" / "config.toml", (cwd or Path.cwd()) / "babelplug.toml"]


def _toml() -> Any:
    """``tomllib`` (Python >= 3.11), else the ``tomli`` backport."""
    try:
        import tomllib

        return tomllib
    except ModuleNotFoundError:
        try:
            import tomli

            return tomli
        except ModuleNotFoundError:
            raise ConfigError("babelplug", "reading config files needs Python >= 3.11 or the 'tomli' package") from None


def _toml_error(path: Path, exc: ValueError) -> ConfigError:
    text = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if found:
        message = f"invalid TOML (column {found.group(2)}): {text[: found.start()]}"
        return ConfigError(str(path), message, line=int(found.group(1)))
    return ConfigError(str(path), f"invalid TOML: {text}")


def _line_of(text: str, parts: Iterable[str]) -> int | None:
    """The line where the key path ``parts`` is defined (as a key, dotted key or table header), if found."""
    lines, line = text.splitlines(), None
    for name in parts:
        word = re.escape(name)
        quoted = rf"""(?:"{word}"|'{word}'|(?<![\w"'-]){word}(?![\w"'-]))"""
        pattern = re.compile(rf"^\s*(?:\[[^\]]*{quoted}|[^=\[]*{quoted}[^=]*=)")
        found = next((i for i in range(line or 0, len(lines)) if pattern.search(lines[i])), None)
        if found is None:
            return None
        line = found
    return None if line is None else line + 1


def _display(key: Key) -> str:
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else f'"{p}"' for p in key)


def _first_problem(doc: Any) -> tuple[list[str], str] | None:
    """The key path and message of the first schema violation in a config document."""
    from jsonschema import Draft202012Validator

    from .schemas import _message

    errors = sorted(Draft202012Validator(schema("config")).iter_errors(doc), key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    if not errors:
        return None
    first = errors[0]
    parts = [str(p) for p in first.absolute_path]
    message = _message(first)
    unknown = re.match(r"unknown key '([^']+)'", message)
    if unknown:
        parts.append(unknown.group(1))
    return parts, message


def read_file(path: Path) -> dict[Key, Setting]:
    """Parse and check one config file into flat settings (``("models", name, "hub")`` ...)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read config file: {exc.strerror or exc}") from None
    try:
        doc = _toml().loads(text)
    except ValueError as exc:  # TOMLDecodeError
        raise _toml_error(path, exc) from None
    problem = _first_problem(doc)
    if problem is not None:
        parts, message = problem
        key = _display(tuple(parts)) if parts else None
        raise ConfigError(str(path), message, line=_line_of(text, parts), key=key)
    source, base = f"file {path}", path.parent
    out: dict[Key, Setting] = {}

    def walk(prefix: Key, value: Any) -> None:
        if isinstance(value, dict) and not (prefix[:1] == ("models",) and len(prefix) == 4):
            for k, v in value.items():
                walk(prefix + (k,), v)
            return
        if prefix == ("local_root",) or (prefix[0] == "hubs" and prefix[-1] == "cache_dir"):
            value = _path(value, base)
        elif prefix == ("timeout",):
            value = float(value)
        out[prefix] = Setting(value, source)

    walk((), doc)
    return out


@dataclass
class Config:
    """The merged configuration (environment over files); arguments are applied by :meth:`pick`."""

    values: dict[Key, Setting] = field(default_factory=dict)
    files: list[tuple[Path, bool]] = field(default_factory=list)
    """Every config file that applies, and whether it exists (was read)."""

    def get(self, *key: str) -> Setting | None:
        """The environment or file setting for ``key``, if any (no default)."""
        return self.values.get(key)

    def value(self, *key: str) -> Any:
        """The effective value of a global key (environment > file > default)."""
        found = self.values.get(key)
        return found.value if found else DEFAULTS.get(key)

    def model_table(self, names: Iterable[str]) -> tuple[str, dict[str, Setting]] | None:
        """The ``[models."NAME"]`` table for the first of ``names`` that has one (case-insensitive)."""
        return self.table("models", names)

    def task_table(self, names: Iterable[str]) -> tuple[str, dict[str, Setting]] | None:
        """The ``[tasks."NAME"]`` table (task data settings) for the first of ``names`` that has one."""
        return self.table("tasks", names)

    def table(self, section: str, names: Iterable[str]) -> tuple[str, dict[str, Setting]] | None:
        """The ``[SECTION."NAME"]`` table for the first of ``names`` that has one (case-insensitive)."""
        tables: dict[str, dict[str, Setting]] = {}
        for key, setting in self.values.items():
            if key[0] == section and len(key) >= 3:
                tables.setdefault(key[1], {})[".".join(key[2:])] = setting
        lowered = {name.lower(): name for name in tables}
        for name in names:
            if name.lower() in lowered:
                found = lowered[name.lower()]
                return found, tables[found]
        return None

    def pick(self, key: str, argument: Any = None, model: Mapping[str, Setting] | None = None) -> Setting:
        """Effective ``key``: argument > per-model (or per-task) table > environment > file > default."""
        if argument is not None:
            return Setting(argument, "argument")
        if model and key in model:
            return model[key]
        found = self.values.get((key,))
        if found is not None:
            return found
        return Setting(DEFAULTS.get((key,)), "default")

    def rows(self) -> list[tuple[str, Setting]]:
        """Every set or defaulted key with its setting, for display."""
        merged = {k: Setting(v, "default") for k, v in DEFAULTS.items()} | self.values
        order = {"models": 1, "tasks": 2}
        return [(_display(k), merged[k]) for k in sorted(merged, key=lambda k: (order.get(k[0], 0), len(k) > 1, k))]


def load_config(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Config:
    """Read the config files and the environment (defaults: ``os.environ`` and the current directory)."""
    env = os.environ if env is None else env
    files = config_files(env, cwd)
    explicit = bool(env.get("BABELPLUG_CONFIG"))
    values: dict[Key, Setting] = {}
    seen: list[tuple[Path, bool]] = []
    for path in files:
        exists = path.is_file() or (explicit and path.exists() and not path.is_dir())
        if explicit and not exists:
            raise ConfigError("env BABELPLUG_CONFIG", f"no such config file: {path}")
        seen.append((path, exists))
        if exists:
            values.update(read_file(path))
    values.update(_from_env(env))
    return Config(values, seen)
