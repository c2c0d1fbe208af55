"""Local task data: JSONL, JSON, CSV and Parquet files read into rows, each checked against a record schema.

Every problem is a typed error naming the file and, where there is one, the line
and field: :class:`~babelplug.errors.DataError` for a bad row or column,
:class:`~babelplug.errors.DataSourceError` for a file that is missing or not of
its format. Rows are ``(line, fields)``: ``line`` is the 1-based line of the
record in JSONL, JSON and CSV files, and the 1-based row in Parquet files.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import DataError, DataSourceError, SpecError

#: File suffix -> format.
FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}

Row = tuple[int, dict[str, Any]]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def fill(template: str, values: Mapping[str, str | None], source: str, where: str) -> str:
    """Replace ``{name}`` placeholders; an unknown one is a SpecError naming ``source`` and ``where``."""

    def one(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in values:
            known = ", ".join("{" + k + "}" for k in values)
            raise SpecError(source, where, f"unknown placeholder {{{name}}} in {template!r} (known: {known})")
        value = values[name]
        if value is None:
            raise SpecError(source, where, f"{template!r} needs a {name}, and none is set")
        return value

    return _PLACEHOLDER.sub(one, template)


class Checker:
    """Checks rows against a task's ``record_schema``; errors name ``file:line`` and the field."""

    def __init__(self, record_schema: Mapping[str, Any]):
        from jsonschema import Draft202012Validator

        self.validator = Draft202012Validator(record_schema)
        self.required = [str(k) for k in record_schema.get("required", ())]
        props = record_schema.get("properties", {})
        self._props = {k: Draft202012Validator(v) for k, v in props.items() if isinstance(v, Mapping)}

    def check(self, fields: Any, file: str, line: int) -> dict[str, Any]:
        """``fields`` if it satisfies the schema, else the DataError for its first problem."""
        if not isinstance(fields, dict):
            raise DataError(file, line, "-", f"expected an object with named fields, got {type(fields).__name__}")
        for err in self.validator.iter_errors(fields):
            field = ".".join(map(str, err.absolute_path))
            if err.validator == "required":
                missing = [k for k in err.validator_value if k not in err.instance]
                field = ".".join([*map(str, err.absolute_path), missing[0]]) if missing else field
            raise DataError(file, line, field or "-", err.message)
        return fields

    def without_nulls(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A columnar row (Parquet, hub datasets) without the nulls its schema does not accept: missing values."""
        return {k: v for k, v in fields.items() if v is not None or (k in self._props and self._props[k].is_valid(None))}

    def check_columns(self, columns: Iterable[str], file: str, line: int | None = None) -> None:
        """Every required field is a column (CSV header, Parquet schema, hub dataset)."""
        have = list(columns)
        missing = [k for k in self.required if k not in have]
        if missing:
            raise DataError(file, line, missing[0], f"required column missing (columns: {', '.join(have) or 'none'})")

    def coerce(self, name: str, text: str) -> Any:
        """A CSV cell as the schema wants it: the text, or its JSON value (``1``, ``true``...) when only that fits."""
        validator = self._props.get(name)
        if validator is None or validator.is_valid(text):
            return text
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if validator.is_valid(value) else text


def read_rows(path: Path, checker: Checker, limit: int | None = None, what: str = "data file") -> Iterator[Row]:
    """Checked rows of a local data file, by its suffix; at most ``limit``."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataSourceError(f"{what} {path}: unsupported format {path.suffix or '(no suffix)'!r} (use {', '.join(FORMATS)})")
    if not path.is_file():
        raise DataSourceError(f"{what} not found: {path}" + (" (a folder)" if path.is_dir() else ""))
    reader = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}[fmt]
    count = 0
    for line, fields in reader(path, checker):
        if limit is not None and count >= limit:
            return
        count += 1
        yield line, checker.check(fields, str(path), line)


def _decode(raw: bytes, file: Path, first_line: int = 1) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start : exc.start + 1]
        raise DataError(str(file), line, "-", f"not valid UTF-8 (byte {bad!r} at byte {column} of the line)") from None
    return text[1:] if first_line == 1 and text.startswith("\ufeff") else text


def _jsonl(path: Path, checker: Checker) -> Iterator[Row]:
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            text = _decode(raw, path, lineno)
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(str(path), lineno, "-", f"invalid JSON: {exc.msg}") from None


def _json(path: Path, checker: Checker) -> Iterator[Row]:
    """A JSON array of records (each at its own line number), or JSON Lines in a ``.json`` file."""
    text = _decode(path.read_bytes(), path)
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if not text.strip():
        return
    if not text[start:].startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":
                raise DataError(str(path), exc.lineno, "-", f"invalid JSON: {exc.msg}") from None
            yield from _jsonl(path, checker)
            return
        if not isinstance(value, dict):
            raise DataError(str(path), 1, "-", "expected a JSON array of records, or one record per line")
        yield 1 + text.count("\n", 0, start), value
        return
    pos, seen, line = start + 1, 0, 1

    def line_at(where: int) -> int:
        nonlocal seen, line
        line, seen = line + text.count("\n", seen, where), where
        return line

    while True:
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text.startswith("]", pos):
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(str(path), exc.lineno, "-", f"invalid JSON: {exc.msg}") from None
        yield line_at(pos), value
        pos = _SPACE.match(text, end).end()  # type: ignore[union-attr]
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("]", pos):
            raise DataError(str(path), line_at(pos), "-", "invalid JSON: expected ',' or ']' after a record")


_SPACE = re.compile(r"\s*")


def _csv(path: Path, checker: Checker) -> Iterator[Row]:
    text = _decode(path.read_bytes(), path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        while not header:
            header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DataError(str(path), reader.line_num, "-", f"invalid CSV: {exc}") from None
    header_line = reader.line_num
    checker.check_columns(header, str(path), header_line)
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(str(path), start, "-", f"invalid CSV: {exc}") from None
        line, start = start, reader.line_num + 1
        if not cells:
            continue
        if len(cells) > len(header):
            raise DataError(str(path), line, "-", f"{len(cells)} cells, but the header (line {header_line}) has {len(header)} columns")
        yield line, {name: checker.coerce(name, cell) for name, cell in zip(header, cells)}


def _parquet(path: Path, checker: Checker) -> Iterator[Row]:
    from .hubs import require

    require("pyarrow", "data")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataSourceError(f"data file {path}: not a readable Parquet file: {exc}") from None
    checker.check_columns(parquet.schema_arrow.names, str(path))
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for fields in batch.to_pylist():
            row += 1
            yield row, checker.without_nulls(fields)
