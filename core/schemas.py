"""Loading the shipped JSON Schemas and validating documents against them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import SpecError


def specs_dir() -> Path:
    """The folder of shipped specs (schemas, catalogs, tasks, data)."""
    return Path(str(resources.files("babelplug.specs")))


@cache
def schema(name: str) -> dict[str, Any]:
    """The shipped schema ``specs/<name>.schema.json``."""
    return json.loads((specs_dir() / f"{name}.schema.json").read_text(encoding="utf-8"))


def json_path(parts: Any) -> str:
    """Render a jsonschema error path as ``$.a.b[0]``."""
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate(doc: Any, schema_doc: dict[str, Any], source: str, error: type[SpecError] = SpecError) -> None:
    """Raise ``error`` naming ``source`` and the JSON path of the first problem."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema_doc)
    problems = sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if problems:
        first = problems[0]
        raise error(source, json_path(first.absolute_path), _message(first))


def _message(err: Any) -> str:
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        from .errors import close_matches

        allowed = list(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        if extra:
            return f"unknown key {extra[0]!r}{close_matches(extra[0], allowed)}"
    return err.message


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error becomes a SpecError with line and column."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecError(str(path), f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    except OSError as exc:
        raise SpecError(str(path), "$", f"cannot read file: {exc.strerror}") from None
