"""Run folders: one per run, named ``<runs>/<task>/<model>/<run-id>``.

A run folder holds ``run.json`` (the run's identity), ``partial.jsonl`` while it
runs, then ``samples.jsonl`` and ``results.json``, written atomically. A run
holds an exclusive lock on ``.lock`` (with its PID in it) while it runs. A
folder is resumed only by a run of the same identity; a folder that holds another
run, or a finished one, is refused unless ``overwrite`` is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import RunFolderError, RunLockedError

#: Parent of the automatic run folders the CLI makes when no ``--output`` is given.
RUNS_ROOT = "babelplug-runs"
IDENTITY, PARTIAL, SAMPLES, RESULTS, LOCK = "run.json", "partial.jsonl", "samples.jsonl", "results.json", ".lock"
#: The files a run writes; ``overwrite`` removes these and nothing else.
RUN_FILES = (IDENTITY, PARTIAL, SAMPLES, RESULTS)

_MIB = 1 << 20
_WHOLE_LIMIT = 8 * _MIB  # other files up to this size are hashed whole
_PICKLED = (".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
_IGNORED = re.compile(r"^(\.|README|LICENSE)|\.md$", re.IGNORECASE)


# --- weights digest -----------------------------------------------------------


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def _ends(handle: Any, start: int, end: int) -> str:
    """sha256 of the first and the last MiB of ``[start, end)``."""
    handle.seek(start)
    head = handle.read(min(_MIB, max(end - start, 0)))
    handle.seek(max(start, end - _MIB))
    return _sha(head, handle.read(max(min(_MIB, end - start), 0)))


def _file_digest(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    with path.open("rb") as handle:
        if path.name.endswith(".safetensors"):
            prefix = handle.read(8)
            length = min(int.from_bytes(prefix, "little"), max(size - 8, 0)) if len(prefix) == 8 else 0
            header = handle.read(length)
            return {"size": size, "header": _sha(prefix, header), "data": _ends(handle, 8 + length, size)}
        if path.name.endswith(_PICKLED):
            return {"size": size, "mtime_ns": path.stat().st_mtime_ns, "ends": _ends(handle, 0, size)}
        if size <= _WHOLE_LIMIT:
            return {"sha256": _sha(handle.read())}
        return {"size": size, "ends": _ends(handle, 0, size)}


def weights_manifest(model_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Per-file digests of a model folder's top-level files (see :func:`weights_digest`)."""
    root = Path(model_dir)
    if root.is_file():
        return {root.name: _file_digest(root)}
    if not root.is_dir():
        return {}
    files = sorted(p for p in root.iterdir() if p.is_file() and not _IGNORED.search(p.name))
    return {p.name: _file_digest(p) for p in files}


def weights_digest(model_dir: str | os.PathLike[str]) -> str:
    """A cheap digest of a model folder's weights, tokenizer and config.

    ``*.safetensors``: size, sha256 of the JSON header (8-byte length + header),
    and of the first and last MiB of the tensor data. Other weight files
    (``*.bin``, ``*.pt``, ``*.gguf``, ...): size, mtime_ns, and sha256 of the first
    and last MiB. Every other top-level file (``config.json``,
    ``model.safetensors.index.json``, tokenizer files) is hashed whole (up to
    8 MiB; larger ones like weight files without mtime). Hidden files, README,
    LICENSE and ``*.md`` are left out. A missing folder digests as ``"absent"``.
    """
    manifest = weights_manifest(model_dir)
    return _sha(json.dumps(manifest, sort_keys=True).encode()) if manifest else "absent"


# --- identity -----------------------------------------------------------------


def canonical(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` as it reads back from JSON (non-JSON values as ``str``)."""
    return json.loads(json.dumps(dict(identity), sort_keys=True, ensure_ascii=False, default=str))


def identity_hash(identity: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``identity``."""
    text = json.dumps(canonical(identity), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return _sha(text.encode())


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two identities (``model.path``, ``weights``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "(whole identity)"]


def run_id(fingerprint: str, now: datetime | None = None) -> str:
    """``20261202T191500Z-3fa9c2d1``: the UTC start time and the identity hash's first 8 digits."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{moment:%Y%m%dT%H%M%SZ}-{fingerprint[:8]}"


def slug(name: str) -> str:
    """A folder name for a task or model name (``org/model`` becomes ``org--model``)."""
    text = re.sub(r"[^A-Za-z0-9._+=-]", "_", name.replace("\\", "/").strip("/").replace("/", "--")).lstrip(".")
    return text or "_"


# --- folder state, files, lock ------------------------------------------------


def state(folder: Path) -> str:
    """``"finished"`` (results.json), ``"unfinished"`` (run.json or partial.jsonl), else ``"empty"``."""
    if (folder / RESULTS).is_file():
        return "finished"
    return "unfinished" if (folder / IDENTITY).is_file() or (folder / PARTIAL).is_file() else "empty"


def read_identity(folder: Path) -> dict[str, Any] | None:
    """The identity in ``folder/run.json``; None when there is none; a RunFolderError when it is corrupt."""
    path = folder / IDENTITY
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(folder, f"{IDENTITY} is corrupt ({exc}); pass --overwrite to replace this run, or choose another folder") from None
    if not isinstance(value, dict):
        raise RunFolderError(folder, f"{IDENTITY} is not a JSON object; pass --overwrite to replace this run, or choose another folder")
    return value


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync, ``os.replace``, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _holder(fd: int) -> int | None:
    raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(raw) if raw.isdigit() else None


def lock(folder: Path) -> int:
    """Take the exclusive lock ``folder/.lock`` (non-blocking) and write this PID in it; the descriptor holds it."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # no flock on this platform: no lock
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = _holder(fd)
        os.close(fd)
        raise RunLockedError(folder, pid) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def unlock(fd: int) -> None:
    """Clear the PID and release a lock taken by :func:`lock`."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


class RunDir:
    """An open run folder: locked for this run until :meth:`finish` or :meth:`release`."""

    def __init__(self, path: Path, identity: dict[str, Any], fingerprint: str, resumed: bool, fd: int | None):
        self.path, self.identity, self.fingerprint, self.resumed = path, identity, fingerprint, resumed
        self._fd = fd

    def __repr__(self) -> str:
        return f"<RunDir {str(self.path)!r} resumed={self.resumed}>"

    @property
    def partial(self) -> Path:
        return self.path / PARTIAL

    def finish(self, results: str, samples: str) -> None:
        """Write ``samples.jsonl`` then ``results.json`` atomically, remove ``partial.jsonl``, release the lock."""
        write_atomic(self.path / SAMPLES, samples)
        write_atomic(self.path / RESULTS, results)
        self.partial.unlink(missing_ok=True)
        _fsync_dir(self.path)
        self.release()

    def release(self) -> None:
        """Release the lock (idempotent); the files stay for a later resume."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            unlock(fd)

    def __del__(self) -> None:  # a safety net; run() releases explicitly
        try:
            self.release()
        except Exception:  # at interpreter exit the descriptor may be gone already
            pass

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- choosing a folder --------------------------------------------------------


def check_output(output: str | os.PathLike[str], *, overwrite: bool = False, resume: bool | None = None) -> None:
    """The refusals an explicit output folder gets whatever the run's identity (checked before a model loads).

    Raises :class:`RunFolderError` for a path that is not a folder, ``resume`` with
    ``overwrite``, ``resume=True`` on a folder with no unfinished run, a finished run
    or a run of unknown identity without ``overwrite``; :class:`RunLockedError` when
    another process runs into it.
    """
    folder = Path(output)
    if folder.is_dir() and (folder / LOCK).is_file():
        unlock(lock(folder))
    _static_checks(folder, overwrite, resume)


def _static_checks(folder: Path, overwrite: bool, resume: bool | None) -> None:
    if overwrite and resume:
        raise RunFolderError(folder, "resume and overwrite exclude each other: resume keeps the run's work, overwrite discards it")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(folder, "not a folder")
    now = state(folder) if folder.is_dir() else "empty"
    if resume and now != "unfinished":
        what = "its run is finished (results.json)" if now == "finished" else "it holds no run"
        raise RunFolderError(folder, f"nothing to resume: {what}")
    if overwrite or now == "empty":
        return
    if read_identity(folder) is None:
        raise RunFolderError(folder, f"holds run files but no {IDENTITY} (an older babelplug, or not a babelplug run); pass --overwrite to replace them, or choose another folder")
    if now == "finished":
        raise RunFolderError(folder, f"holds a finished run ({RESULTS}); pass --overwrite to run again into it, or choose another folder")


def _refuse_different(folder: Path, old: dict[str, Any], new: dict[str, Any], resume: bool | None) -> RunFolderError:
    keys = ", ".join(differences(old, new))
    if resume:
        return RunFolderError(folder, f"cannot resume: this folder holds a different run (differs in: {keys})")
    return RunFolderError(folder, f"holds a different run (differs in: {keys}); pass --overwrite to replace it, or choose another folder")


def _explicit(folder: Path, ident: dict[str, Any], fp: str, overwrite: bool, resume: bool | None) -> RunDir:
    _static_checks(folder, overwrite, resume)
    folder.mkdir(parents=True, exist_ok=True)
    fd = lock(folder)
    try:
        _static_checks(folder, overwrite, resume)  # again, now that it is ours
        now = state(folder)
        old = read_identity(folder) if now != "empty" and not overwrite else None
        resumed = False
        if now != "empty" and overwrite:
            for name in RUN_FILES:
                (folder / name).unlink(missing_ok=True)
        elif old is not None and old != ident:
            raise _refuse_different(folder, old, ident, resume)
        elif now == "unfinished":
            if resume is False:
                raise RunFolderError(folder, "holds this run, unfinished; resume it, or pass --overwrite to start it over")
            resumed = True
        if not resumed:
            write_atomic(folder / IDENTITY, json.dumps(ident, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
        return RunDir(folder, ident, fp, resumed, fd)
    except BaseException:
        unlock(fd)
        raise


def _matching(parent: Path, ident: dict[str, Any]) -> list[Path]:
    if not parent.is_dir():
        return []
    found = []
    for folder in sorted(p for p in parent.iterdir() if p.is_dir()):
        try:
            if state(folder) == "unfinished" and read_identity(folder) == ident:
                found.append(folder)
        except RunFolderError:  # a corrupt run.json is another run's problem
            continue
    return found


def _automatic(parent: Path, ident: dict[str, Any], fp: str, resume: bool | None) -> RunDir:
    found = _matching(parent, ident) if resume is not False else []
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found)
        raise RunFolderError(parent, f"{len(found)} unfinished runs match this run: {listed}; pass --resume DIR to resume one, or --fresh to start a new one")
    if found:
        fd = lock(found[0])
        if state(found[0]) == "unfinished":
            return RunDir(found[0], ident, fp, True, fd)
        unlock(fd)  # it finished while we looked: start a new run
    if resume:
        raise RunFolderError(parent, "nothing to resume: no unfinished run with this identity")
    parent.mkdir(parents=True, exist_ok=True)
    base = run_id(fp)
    for n in range(1, 1000):
        folder = parent / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        fd = lock(folder)
        try:
            write_atomic(folder / IDENTITY, json.dumps(ident, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
        except BaseException:
            unlock(fd)
            raise
        return RunDir(folder, ident, fp, False, fd)
    raise RunFolderError(parent, f"could not make a new run folder {base}-N")


def open_run(
    identity: Mapping[str, Any],
    *,
    output: str | os.PathLike[str] | None = None,
    runs: str | os.PathLike[str] | None = None,
    group: Sequence[str] = (),
    overwrite: bool = False,
    resume: bool | None = None,
) -> RunDir:
    """Choose, lock and prepare the folder of a run with this ``identity``.

    :param output: an explicit folder. Empty: a new run. Same identity, unfinished:
        resumed (unless ``resume=False``). Another identity, a finished run, or run
        files of unknown identity: refused unless ``overwrite`` (which removes the
        run files, :data:`RUN_FILES`, and nothing else).
    :param runs: a parent folder: the run goes to ``runs/<group...>/<run-id>``; the
        one unfinished run there of the same identity is resumed (several: an error
        listing them); finished runs and other runs are never touched.
    :param resume: True: must resume; False: never resume; None: resume when
        unambiguous.
    """
    ident = canonical(identity)
    fp = identity_hash(ident)
    if (output is None) == (runs is None):
        raise RunFolderError(output or runs or ".", "give exactly one of output (a run folder) and runs (a parent of run folders)")
    if output is not None:
        return _explicit(Path(output), ident, fp, overwrite, resume)
    if overwrite:
        raise RunFolderError(runs, "overwrite applies to an explicit output folder; automatic run folders are never overwritten")
    return _automatic(Path(runs).joinpath(*(slug(g) for g in group)), ident, fp, resume)  # type: ignore[arg-type]
