"""Safe prompt templates: field substitution, indexing and a few filters, no code.

Syntax:

- ``{name}``: a record field, else a task or language variable.
- ``{name|filter|filter}``: the value, then each filter from left to right
  (see :data:`FILTERS`).
- ``{name[0]}``, ``{name[1][0]}``: a literal integer index (``-1`` is the last
  item) into a list, chained as deep as needed.
- ``{name[key]}``: index with the value of the name ``key``: a list takes an
  integer or a string of ASCII digits (``1``, ``"1"``), a mapping takes the
  value's ``str()`` (so ``{label_map[answer]}`` maps labels to words).
  Literal and named indexes mix: ``{choices[label][0]}``.
- ``{{`` and ``}}``: literal braces.

Case filters follow the template variable ``language``: for Turkish and
Azerbaijani (``tr``, ``az``, ``tur``, ``azj``, ``tr-TR``, ``tur_Latn`` ...)
``I`` lowers to ``ı`` and ``İ`` to ``i``, ``i`` uppers to ``İ`` and ``ı`` to
``I``, with no combining dot (U+0307) left over.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import TemplateError

__all__ = ["FILTERS", "FINAL_PUNCT", "TemplateError", "base_language", "lower", "lower_first", "names", "render",
           "strip_final_punct", "upper", "upper_first"]  # fmt: skip

#: Sentence-final marks ``strip_final_punct`` removes (Latin, CJK, Devanagari, Arabic script).
FINAL_PUNCT = ".。．!！?？।॥۔؟"

#: Languages whose case mapping pairs dotted/dotless i (Unicode SpecialCasing: tr, az).
DOTTED_I_LANGUAGES = frozenset({"tr", "az"})

_ISO3 = {"tur": "tr", "aze": "az", "azj": "az", "azb": "az", "zho": "zh", "cmn": "zh", "yue": "zh",
         "jpn": "ja", "tha": "th", "mya": "my", "khm": "km", "lao": "lo", "kor": "ko"}  # fmt: skip
_DOT = "\u0307"


def base_language(code: str | None) -> str:
    """The lower-case base code of a language tag: ``tr``, ``tr-TR``, ``tur_Latn`` and ``TUR`` give ``tr``.

    Three-letter codes map to two letters for the languages babelplug treats
    specially (casing, tokenisation); others are returned as they are.
    """
    head = re.split(r"[-_]", (code or "").strip().lower(), maxsplit=1)[0]
    return _ISO3.get(head, head)


def strip_final_punct(text: str, language: str = "") -> str:
    """Drop one trailing sentence-final mark, if there is one (never another character)."""
    text = text.rstrip()
    return text[:-1].rstrip() if text and text[-1] in FINAL_PUNCT else text


def lower(text: str, language: str = "") -> str:
    """Lower-case ``text``; Turkish/Azerbaijani map ``I``→``ı``, ``İ``→``i`` (also a decomposed ``I`` + U+0307)."""
    if base_language(language) in DOTTED_I_LANGUAGES:
        text = text.replace("I" + _DOT, "i").replace("İ", "i").replace("I", "ı")
    return text.lower()


def upper(text: str, language: str = "") -> str:
    """Upper-case ``text``; Turkish/Azerbaijani map ``i``→``İ`` and ``ı``→``I``."""
    if base_language(language) in DOTTED_I_LANGUAGES:
        text = text.replace("i" + _DOT, "İ").replace("i", "İ")
    return text.upper()


def _head(text: str) -> int:
    """Length of the first character together with a combining dot above that follows it."""
    return 2 if text[1:2] == _DOT else min(len(text), 1)


def lower_first(text: str, language: str = "") -> str:
    """Lower-case the first character only (with the language's rules)."""
    n = _head(text)
    return lower(text[:n], language) + text[n:]


def upper_first(text: str, language: str = "") -> str:
    """Upper-case the first character only (with the language's rules)."""
    n = _head(text)
    return upper(text[:n], language) + text[n:]


def _strip(text: str, language: str = "") -> str:
    return text.strip()


#: Filters by name; each takes the text and the ``language`` variable.
FILTERS: dict[str, Callable[[str, str], str]] = {
    "strip_final_punct": strip_final_punct,
    "lower_first": lower_first,
    "upper_first": upper_first,
    "strip": _strip,
    "lower": lower,
    "upper": upper,
}

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_EXPR = re.compile(r"^\s*([A-Za-z_]\w*)((?:\[(?:[A-Za-z_]\w*|-?[0-9]+)\])*)((?:\s*\|\s*[A-Za-z_]\w*)*)\s*$")
_INDEX = re.compile(r"\[([^\]]*)\]")


@dataclass(frozen=True)
class _Slot:
    name: str
    keys: tuple[str | int, ...]  # a str is a name to look up, an int a literal index
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
        keys = tuple(int(k) if k[:1] in "-0123456789" else k for k in _INDEX.findall(expr.group(2)))
        filters = tuple(f.strip() for f in expr.group(3).split("|")[1:])
        for f in filters:
            if f not in FILTERS:
                raise TemplateError(f"unknown filter {f!r} in {token!r}; known: {', '.join(FILTERS)}")
        parts.append(_Slot(expr.group(1), keys, filters))
    rest = template[pos:]
    if "{" in rest or "}" in rest:
        raise TemplateError(f"unbalanced brace in {rest!r}")
    parts.append(rest)
    return parts


def names(template: str) -> set[str]:
    """Every name a template refers to, named indexes included, literal ones not (raises TemplateError if malformed)."""
    found: set[str] = set()
    for part in _parse(template):
        if isinstance(part, _Slot):
            found.add(part.name)
            found.update(k for k in part.keys if isinstance(k, str))
    return found


def _index(value: Any, key: Any, where: str, shown: str) -> Any:
    """``value[key]`` with template rules; ``where`` names the value, ``shown`` the index as written."""
    if isinstance(value, Mapping):
        for candidate in (key, str(key)):
            try:
                if candidate in value:
                    return value[candidate]
            except TypeError:  # an unhashable key
                continue
        raise TemplateError(f"{where!r} has no entry {str(key)!r} (index {shown})")
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if isinstance(key, str) and re.fullmatch(r"[0-9]+", key.strip()):
            key = int(key)
        if not isinstance(key, int) or isinstance(key, bool):
            raise TemplateError(f"{where!r} is a list: index {shown} must be an integer or digit string, got {key!r}")
        if not -len(value) <= key < len(value):
            raise TemplateError(f"{where!r} has {len(value)} items: index {shown} = {key} is out of range")
        return value[key]
    raise TemplateError(f"{where!r} is a {type(value).__name__}, not a list or mapping: cannot index it with {shown}")


def render(template: str, record: Mapping[str, Any], variables: Mapping[str, Any]) -> str:
    """Fill ``template`` from ``record`` fields, then ``variables`` (whose ``language`` drives case filters)."""

    def lookup(name: str) -> Any:
        if name in record:
            return record[name]
        if name in variables:
            return variables[name]
        raise TemplateError(f"unknown name {name!r}")

    language = str(variables.get("language") or "")
    out = []
    for part in _parse(template):
        if isinstance(part, str):
            out.append(part)
            continue
        value, where = lookup(part.name), part.name
        for key in part.keys:
            shown = f"[{key}]"
            value = _index(value, lookup(key) if isinstance(key, str) else key, where, shown)
            where += shown
        text = str(value)
        for f in part.filters:
            text = FILTERS[f](text, language)
        out.append(text)
    return "".join(out)
