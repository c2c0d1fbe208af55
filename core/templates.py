"""Safe prompt templates: field substitution and a few filters, no code.

Syntax: ``{name}``, ``{name|filter|filter}``, ``{table[key]}`` (look ``table``
up, then index it with the value of ``key``), ``{{`` and ``}}`` for literal
braces. Names resolve to a record field first, then a task or language
variable. Filters: see :data:`FILTERS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Sentence-final marks ``strip_final_punct`` removes (Latin, CJK, Devanagari, Arabic script).
FINAL_PUNCT = ".。．!！?？।॥۔؟"


def strip_final_punct(text: str) -> str:
    """Drop one trailing sentence-final mark, if there is one (never another character)."""
    text = text.rstrip()
    return text[:-1].rstrip() if text and text[-1] in FINAL_PUNCT else text


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


FILTERS: dict[str, Callable[[str], str]] = {
    "strip_final_punct": strip_final_punct,
    "lower_first": lower_first,
    "upper_first": upper_first,
    "strip": str.strip,
    "lower": str.lower,
    "upper": str.upper,
}

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_EXPR = re.compile(r"^\s*([A-Za-z_]\w*)(?:\[([A-Za-z_]\w*)\])?((?:\s*\|\s*[A-Za-z_]\w*)*)\s*$")


class TemplateError(ValueError):
    """A malformed template or a name that cannot be resolved."""


@dataclass(frozen=True)
class _Slot:
    name: str
    key: str | None
    filters: tuple[str, ...]


def _parse(template: str) -> list[str | _Slot]:
    parts: list[str | _Slot] = []
    pos = 0
    for match in _FIELD.finditer(template):
        parts.append(template[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
            continue
        expr = _EXPR.match(match.group(1))
        if not expr:
            raise TemplateError(f"malformed placeholder {token!r}")
        filters = tuple(f.strip() for f in expr.group(3).split("|")[1:])
        for f in filters:
            if f not in FILTERS:
                raise TemplateError(f"unknown filter {f!r} in {token!r}; known: {', '.join(FILTERS)}")
        parts.append(_Slot(expr.group(1), expr.group(2), filters))
    rest = template[pos:]
    if "{" in rest or "}" in rest:
        raise TemplateError(f"unbalanced brace in {rest!r}")
    parts.append(rest)
    return parts


def names(template: str) -> set[str]:
    """Every name a template refers to (raises TemplateError if malformed)."""
    found: set[str] = set()
    for part in _parse(template):
        if isinstance(part, _Slot):
            found.add(part.name)
            if part.key:
                found.add(part.key)
    return found


def render(template: str, record: Mapping[str, Any], variables: Mapping[str, Any]) -> str:
    """Fill ``template`` from ``record`` fields, then ``variables``."""

    def lookup(name: str) -> Any:
        if name in record:
            return record[name]
        if name in variables:
            return variables[name]
        raise TemplateError(f"unknown name {name!r}")

    out = []
    for part in _parse(template):
        if isinstance(part, str):
            out.append(part)
            continue
        value = lookup(part.name)
        if part.key is not None:
            key = str(lookup(part.key))
            if not isinstance(value, Mapping) or key not in value:
                raise TemplateError(f"{part.name!r} has no entry {key!r}")
            value = value[key]
        text = str(value)
        for f in part.filters:
            text = FILTERS[f](text)
        out.append(text)
    return "".join(out)
