"""Resumable computation over a durable, line-atomic ``partial.jsonl``.

The file starts with a header line ``{"babelplug_partial": 1, "identity": HASH}``
and holds one ``{"key": ..., "value": ...}`` line per finished request; the last
line of each chunk also carries ``"end": true``. Each chunk is appended as
complete lines in one ``os.write`` on an ``O_APPEND`` descriptor and fsynced, so
after ``kill -9`` or a power loss the file ends in at most one torn line. Resuming
drops a torn last line and any records after the last ``end`` (an unfinished
chunk): those requests are redone, in the same chunk as in an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, PartialFileError, PluginError

#: Requests per call into the model: the unit of progress and of resumption.
#: ``BABELPLUG_CHUNK`` overrides it (a positive integer).
CHUNK = 256

#: Version written in (and required of) the partial file's header.
VERSION = 1


class ResumeWarning(UserWarning):
    """A resumed run dropped a torn last line of its partial file."""


def chunk_size() -> int:
    """Requests per chunk: ``$BABELPLUG_CHUNK`` if set, else :data:`CHUNK`."""
    raw = os.environ.get("BABELPLUG_CHUNK", "").strip()
    if not raw:
        return CHUNK
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError("env BABELPLUG_CHUNK", f"expected a positive integer, got {raw!r}")
    return int(raw)


def _key(request: Any) -> str:
    return hashlib.sha256(json.dumps(request, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:32]


def _line(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_partial(path: Path, fingerprint: str) -> tuple[dict[str, Any], int]:
    """The finished ``{key: raw value}`` of ``path`` and the byte length of its good prefix.

    A torn last line (no newline, or not JSON) and the records of an unfinished
    last chunk are left out of the prefix with a :class:`ResumeWarning`; a bad
    header, a corrupt line before the last, or a header of another run raises
    :class:`PartialFileError`.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    # Every complete line ends in b"\n"; lines[-1] is what follows the last newline (b"" if none torn).
    complete, tail = lines[:-1], lines[-1]
    if complete and not tail:
        try:
            json.loads(complete[-1].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if len(complete) > 1:  # a complete but garbled last record: torn too (never the header)
                tail = complete.pop()
    if tail:
        warnings.warn(
            f"{path}: dropped a torn last line ({len(tail)} bytes) left by an interrupted write; its request is redone",
            ResumeWarning, stacklevel=3,
        )  # fmt: skip
    if not complete:
        return {}, 0
    fix = "delete it to start this run over, or pass --overwrite"
    try:
        header = json.loads(complete[0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("babelplug_partial") != VERSION or not isinstance(header.get("identity"), str):
        raise PartialFileError(path, 1, f"not a babelplug partial-file header (version {VERSION}); {fix}")
    if header["identity"] != fingerprint:
        raise PartialFileError(path, 1, f"written by another run (identity {header['identity'][:12]}, this run {fingerprint[:12]}); {fix}")
    done: dict[str, Any] = {}
    pending: dict[str, Any] = {}  # records of the chunk being read
    offset = end = len(complete[0]) + 1  # end: after the last finished chunk
    for number, raw in enumerate(complete[1:], start=2):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("key"), str) and "value" in record):
            raise PartialFileError(path, number, f"corrupt record; {fix}")
        pending[record["key"]] = record["value"]
        offset += len(raw) + 1
        if record.get("end"):
            done.update(pending)
            pending, end = {}, offset
    if pending:
        warnings.warn(
            f"{path}: dropped {len(pending)} record(s) of an unfinished chunk; they are redone together",
            ResumeWarning, stacklevel=3,
        )  # fmt: skip
    return done, end


def _open_partial(path: Path, fingerprint: str, good_end: int) -> int:
    """An O_APPEND descriptor on ``path`` cut to ``good_end``, with a header if it is new."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size != good_end:
            os.ftruncate(fd, good_end)
        if good_end == 0:
            _write_all(fd, _line({"babelplug_partial": VERSION, "identity": fingerprint}))
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def resumable(
    requests: Sequence[Any],
    compute: Callable[[list[Any]], list[Any]],
    partial: Path | None,
    fingerprint: str,
    *,
    encode: Callable[[Any], Any] = lambda x: x,
    decode: Callable[[Any], Any] = lambda x: x,
    progress: bool = False,
    desc: str = "",
    order: Callable[[Any], Any] | None = None,
    chunk: int | None = None,
) -> list[Any]:
    """``compute`` every request in chunks, reusing and appending ``partial``.

    Requests go in ``order`` (a sort key; default: longest first) so chunks pad
    little; chunks of ``chunk`` requests (default :func:`chunk_size`). Results
    already in ``partial`` (whose header must carry ``fingerprint``) are reused;
    each finished chunk is appended in one write and fsynced.
    """
    from tqdm.auto import tqdm

    size = chunk or chunk_size()
    done: dict[str, Any] = {}
    fd = None
    if partial is not None:
        raw, good_end = read_partial(partial, fingerprint) if partial.is_file() else ({}, 0)
        done = {k: decode(v) for k, v in raw.items()}
        fd = _open_partial(partial, fingerprint, good_end)
    keys = [_key(r) for r in requests]
    key = order or (lambda r: -len(json.dumps(r)))
    todo = sorted({k: i for i, k in enumerate(keys) if k not in done}.values(), key=lambda i: key(requests[i]))
    try:
        with tqdm(total=len(requests), initial=len(requests) - len(todo), disable=not progress, unit="req", desc=desc) as bar:
            for start in range(0, len(todo), size):
                part = todo[start : start + size]
                values = list(compute([requests[i] for i in part]))
                if len(values) != len(part):
                    raise PluginError(f"{desc or 'compute'}: the backend returned {len(values)} results for {len(part)} requests")
                lines = []
                for n, (i, value) in enumerate(zip(part, values), start=1):
                    done[keys[i]] = value
                    lines.append(_line({"key": keys[i], "value": encode(value), **({"end": True} if n == len(part) else {})}))
                if fd is not None:
                    _write_all(fd, b"".join(lines))
                    os.fsync(fd)
                bar.update(len(part))
    finally:
        if fd is not None:
            os.close(fd)
    return [done[k] for k in keys]
