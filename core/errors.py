"""The typed errors babelplug raises. Every one derives from :class:`BabelplugError`.

Each error says what is wrong and where: the model, plugin, file, line or field
concerned. The CLI prints ``str(error)`` on one line and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BabelplugError(Exception):
    """Base class of every error babelplug raises on purpose."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ``did you mean`` suffix listing the candidates closest to ``word``."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(word, pool, n=n, cutoff=0.5)
    if close:
        return "; did you mean " + ", ".join(repr(c) for c in close) + "?"
    if pool:
        shown = ", ".join(pool[:12]) + (", ..." if len(pool) > 12 else "")
        return f"; known: {shown}"
    return ""


class UnknownNameError(BabelplugError, KeyError):
    """A name (model, backend, task, chat format, hub) that nothing registered."""

    kind = "name"

    def __init__(self, name: str, known: Iterable[str] = (), hint: str = ""):
        self.name = name
        super().__init__(f"unknown {self.kind} {name!r}{close_matches(name, known)}{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownModelError(UnknownNameError):
    kind = "model"


class UnknownBackendError(UnknownNameError):
    kind = "backend"


class UnknownTaskError(UnknownNameError):
    kind = "task"


class UnknownChatFormatError(UnknownNameError):
    kind = "chat format"


class UnknownHubError(UnknownNameError):
    kind = "hub"


class PluginError(BabelplugError):
    """A plugin failed to import, registered something invalid, or broke the contract."""


class SpecError(BabelplugError):
    """A JSON document (task, model entry, options, parameters) breaks its schema.

    ``source`` names the file or object checked, ``path`` the JSON path of the
    offending value (``$.prompt.choices[1]``).
    """

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path, self.message = source, path, message
        super().__init__(f"{source}: {path}: {message}")


class OptionError(SpecError):
    """Unknown or invalid load option or generation parameter."""


class RequestError(SpecError):
    """One request of a batch is unusable: names its index and the part at fault.

    ``index`` is the request's position in the list given to ``score`` or
    ``generate``; ``part`` is ``"context"``, ``"continuation"`` or ``"prompt"``.
    """

    def __init__(self, source: str, index: int, part: str, message: str):
        self.index, self.part = index, part
        super().__init__(source, f"$[{index}].{part}", message)


class InputTooLargeError(RequestError):
    """A request exceeds the model's maximum length, or the character or memory budget of the load options."""


class DataError(BabelplugError):
    """A data record is malformed: names ``file:line`` and the field (``line=None``: the whole file, e.g. a column)."""

    def __init__(self, file: str, line: int | None, field: str, message: str):
        self.file, self.line, self.field = file, line, field
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: field {field!r}: {message}")


class DataSourceError(BabelplugError):
    """A task's data cannot be found or read: a missing file, a dataset not in the hub cache
    (offline), an unknown dataset id, subset or split, an unreadable format, or no records.

    The message names the task, language and split, and the file or the hub, dataset id,
    subset, revision and cache searched.
    """


class CapabilityError(BabelplugError):
    """A backend was asked for an operation it does not declare."""


class ModelLoadError(BabelplugError):
    """The model folder is missing, incomplete or inconsistent."""


class ConfigError(SpecError):
    """A configuration file, environment variable or flag is invalid.

    Names the source (a file, or ``env VAR``), the line where known and the key:
    ``babelplug.toml:3: models."x".revison: unknown key ...``.
    """

    def __init__(self, source: str, message: str, *, line: int | None = None, key: str | None = None):
        self.source, self.path, self.message, self.line, self.key = source, key or "$", message, line, key
        where = f"{source}:{line}" if line else source
        BabelplugError.__init__(self, f"{where}: {key}: {message}" if key else f"{where}: {message}")


class TemplateError(BabelplugError, ValueError):
    """A malformed prompt template, or a name or index it cannot resolve."""


class MetricError(BabelplugError, ValueError):
    """Inputs a metric cannot score: mismatched lengths, an empty choice, an unknown metric name."""


class MissingDependencyError(BabelplugError):
    """An optional dependency is not installed; the message names the extra to install."""


class RunFolderError(BabelplugError):
    """A run folder cannot be used: it holds another run, a finished one, or is ambiguous."""

    def __init__(self, folder: object, message: str):
        self.folder = str(folder)
        super().__init__(f"{folder}: {message}")


class RunLockedError(RunFolderError):
    """Another process is running into the same run folder."""

    def __init__(self, folder: object, pid: int | None):
        self.pid = pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(folder, f"{who} is running into this folder (lock {folder}/.lock); wait for it or choose another folder")


class PartialFileError(RunFolderError):
    """A run's ``partial.jsonl`` is corrupt or belongs to another run: names the file and line."""

    def __init__(self, file: object, line: int, message: str):
        self.file, self.line = str(file), line
        BabelplugError.__init__(self, f"{file}:{line}: {message}")
        self.folder = str(getattr(file, "parent", file))
