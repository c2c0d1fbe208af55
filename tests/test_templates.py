"""Templates: indexing, label maps, language-aware case filters, errors."""

from __future__ import annotations

import pytest

from babelplug import templates
from babelplug.errors import BabelplugError, TemplateError

REC = {
    "candidates": ["Paris", "Lyon"],
    "nested": [["a", "b"], ["c", "d"]],
    "label": 1,
    "label_str": "1",
    "answer": "entailment",
    "word": "İstanbul",
}
VARS = {"label_map": {"entailment": "yes", "contradiction": "no", "1": "one"}, "language": "en"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{candidates[0]}", "Paris"),
        ("{candidates[-1]}", "Lyon"),
        ("{nested[1][0]}", "c"),
        ("{candidates[label]}", "Lyon"),
        ("{candidates[label_str]}", "Lyon"),  # a digit string indexes a list
        ("{nested[label][0]|upper}", "C"),
        ("{label_map[answer]}", "yes"),
        ("{label_map[label]}", "one"),  # a mapping takes str() of the key
        ("{ candidates[1] | lower }", "lyon"),
        ("{{candidates[0]}}", "{candidates[0]}"),
    ],
)
def test_indexing_renders(template: str, expected: str) -> None:
    assert templates.render(template, REC, VARS) == expected


def test_names_skip_literal_indexes() -> None:
    assert templates.names("{candidates[0]} {nested[1][0]}") == {"candidates", "nested"}
    assert templates.names("{choices[label][0]|lower} {label_map[answer]}") == {"choices", "label", "label_map", "answer"}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{candidates[2]}", r"'candidates' has 2 items: index \[2\] = 2 is out of range"),
        ("{candidates[-3]}", "out of range"),
        ("{nested[0][5]}", r"'nested\[0\]' has 2 items: index \[5\]"),
        ("{word[0]}", r"'word' is a str, not a list or mapping: cannot index it with \[0\]"),
        ("{label[0]}", "'label' is a int, not a list or mapping"),
        ("{candidates[answer]}", "'candidates' is a list: index \\[answer\\] must be an integer or digit string, got 'entailment'"),
        ("{label_map[word]}", "'label_map' has no entry 'İstanbul'"),
        ("{candidates[missing]}", "unknown name 'missing'"),
    ],
)
def test_indexing_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message) as info:
        templates.render(template, REC, VARS)
    assert isinstance(info.value, BabelplugError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", ["{a[}", "{a[0}", "{a[b c]}", "{a[1.5]}", "{a[]}", "{a[0]x}", "{a|nope}"])
def test_malformed_indexes(bad: str) -> None:
    with pytest.raises(TemplateError):
        templates.names(bad)


def test_bool_is_not_a_list_index() -> None:
    with pytest.raises(TemplateError, match="must be an integer"):
        templates.render("{candidates[flag]}", {**REC, "flag": True}, VARS)


@pytest.mark.parametrize("language", ["tr", "az", "tur_Latn", "azj_Latn", "tr-TR", "TR"])
def test_turkish_casing(language: str) -> None:
    v = {"language": language}
    assert templates.render("{w|lower}", {"w": "İSTANBUL IĞDIR"}, v) == "istanbul ığdır"
    assert templates.render("{w|upper}", {"w": "istanbul ığdır"}, v) == "İSTANBUL IĞDIR"
    assert templates.render("{w|lower_first}", {"w": "İstanbul"}, v) == "istanbul"
    assert templates.render("{w|lower_first}", {"w": "Işık"}, v) == "ışık"
    assert templates.render("{w|upper_first}", {"w": "ilk"}, v) == "İlk"
    assert templates.render("{w|upper_first}", {"w": "ışık"}, v) == "Işık"
    # a decomposed capital İ (I + U+0307) lowers to a plain i, no dot left over
    assert templates.render("{w|lower}", {"w": "I\u0307zmir"}, v) == "izmir"
    assert templates.render("{w|lower_first}", {"w": "I\u0307zmir"}, v) == "izmir"
    for out in (templates.lower("İİİ", language), templates.lower_first("İ", language)):
        assert "\u0307" not in out


def test_other_languages_keep_default_casing() -> None:
    v = {"language": "en"}
    assert templates.render("{w|lower}", {"w": "ISTANBUL"}, v) == "istanbul"
    assert templates.render("{w|upper}", {"w": "istanbul"}, v) == "ISTANBUL"
    assert templates.render("{w|lower_first}", {"w": "Işık"}, {"language": "de"}) == "işık"
    # without a language variable, Python's default mapping applies
    assert templates.render("{w|upper_first}", {"w": "ilk"}, {}) == "Ilk"


def test_language_from_task_variables(tmp_path) -> None:
    """core/tasks.py passes the language variant's code as ``language``: Turkish casing follows it."""
    import json

    import babelplug as bp
    from babelplug.tasks import Record

    spec = {
        "name": "tr-case", "kind": "generation", "version": 1, "description": "d",
        "data": {"path": "d.{language}.jsonl"},
        "record_schema": {"type": "object", "required": ["w"], "properties": {"w": {"type": "string"}}},
        "languages": {"tr": {}, "en": {}},
        "prompt": {"text": "{w|lower_first}"}, "metrics": ["exact_match"],
    }  # fmt: skip
    path = tmp_path / "t.json"
    path.write_text(json.dumps(spec))
    task = bp.load_task(path)
    rec = {"w": "Irmak"}
    assert task.render("{w|lower_first}", Record("tr", "f", 1, rec)) == "ırmak"
    assert task.render("{w|lower_first}", Record("en", "f", 1, rec)) == "irmak"


def test_base_language() -> None:
    assert [templates.base_language(c) for c in ("tr", "tr-TR", "tur_Latn", "AZJ_Latn", "zho_Hans", "th", None)] == [
        "tr", "tr", "tr", "az", "zh", "th", ""]  # fmt: skip
