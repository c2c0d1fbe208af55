"""Task specs: JSON files checked against ``specs/task.schema.json``, and their data."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import templates
from .errors import DataError, OptionError, SpecError, UnknownTaskError
from .schemas import read_json, schema, validate


def task_name(path: Path) -> str:
    """The registry name of a task file: its ``name`` field, else the file stem."""
    try:
        name = json.loads(path.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return name if isinstance(name, str) and name else path.stem


@dataclass(frozen=True)
class Record:
    """One data record and where it came from."""

    language: str | None
    file: str
    line: int
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class Task:
    """A checked task spec."""

    spec: Mapping[str, Any]
    path: Path

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    @property
    def languages(self) -> list[str]:
        return list(self.spec.get("languages", {}))

    @property
    def hash(self) -> str:
        """sha256 of the canonical spec JSON."""
        canonical = json.dumps(self.spec, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def variables(self, language: str | None) -> dict[str, Any]:
        """Task variables overlaid with the language's, plus ``language``."""
        lang = self.spec.get("languages", {}).get(language or "", {})
        return {**self.spec.get("vars", {}), **lang.get("vars", {}), "language": language or ""}

    def render(self, template: str, record: Record) -> str:
        try:
            return templates.render(template, record.fields, self.variables(record.language))
        except templates.TemplateError as exc:
            raise DataError(record.file, record.line, "-", f"cannot render {template!r}: {exc}") from None

    def data_files(self, languages: Sequence[str | None], data: str | os.PathLike[str] | None = None) -> list[tuple[str | None, Path]]:
        """The data file of each language (``data`` overrides the task's path)."""
        raw = os.fspath(data) if data is not None else self.spec["data"]["path"]
        base = Path.cwd() if data is not None else self.path.parent
        if data is not None and "{language}" not in raw and len(languages) > 1:
            raise SpecError(
                str(raw), "$", f"one data file given for {len(languages)} languages of task {self.name!r}: "
                "select one language, or put '{language}' in the path"
            )
        return [(lang, (base / raw.replace("{language}", lang or "")).resolve()) for lang in languages]

    def records(self, language: str | None, file: Path, limit: int | None = None) -> Iterator[Record]:
        """Records of one data file, each checked against the task's record schema."""
        from jsonschema import Draft202012Validator

        if not file.is_file():
            raise DataError(str(file), 0, "-", f"data file of task {self.name!r} not found")
        validator = Draft202012Validator(self.spec["record_schema"])
        count = 0
        with file.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                if limit is not None and count >= limit:
                    return
                try:
                    fields = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(str(file), lineno, "-", f"invalid JSON: {exc.msg}") from None
                for err in validator.iter_errors(fields):
                    field = ".".join(map(str, err.absolute_path))
                    if err.validator == "required":
                        missing = [k for k in err.validator_value if k not in err.instance]
                        field = ".".join([*map(str, err.absolute_path), missing[0]]) if missing else field
                    raise DataError(str(file), lineno, field or "-", err.message)
                count += 1
                yield Record(language, str(file), lineno, fields)


def prompt_templates(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(json_path, template)`` for every template of the task's prompt."""
    prompt = spec["prompt"]
    slots: list[tuple[str, str]] = []
    for key in ("context", "answer", "text", "target"):
        if key in prompt:
            slots.append((f"$.prompt.{key}", prompt[key]))
    slots += [(f"$.prompt.choices[{i}]", t) for i, t in enumerate(prompt.get("choices", ()))]
    slots += [(f"$.prompt.messages[{i}].content", m["content"]) for i, m in enumerate(prompt.get("messages", ()))]
    return slots


def _check_templates(spec: Mapping[str, Any], source: str) -> None:
    """Every template parses and names a record field or a variable."""
    known = set(spec["record_schema"].get("properties", {})) | set(spec.get("vars", {})) | {"language"}
    variants = spec.get("languages") or {None: {}}
    for lang, variant in variants.items():
        names = known | set(variant.get("vars", {}))
        where = f"{source} (language {lang!r})" if lang else source
        for path, template in prompt_templates(spec):
            try:
                unknown = templates.names(template) - names
            except templates.TemplateError as exc:
                raise SpecError(where, path, str(exc)) from None
            if unknown:
                raise SpecError(where, path, f"unknown name(s) {sorted(unknown)}: not a record field or variable")


def load_task(task: str | os.PathLike[str]) -> Task:
    """A registered task by name, or a task JSON file by path, checked."""
    ref = os.fspath(task)
    path = Path(ref)
    if not (path.suffix == ".json" or path.is_file()):
        from .manager import registry

        tasks = registry().tasks
        if ref not in tasks:
            raise UnknownTaskError(ref, tasks)
        path = tasks[ref]
    spec = read_json(path)
    validate(spec, schema("task"), str(path))
    if "generation" in spec:
        try:
            validate(spec["generation"], schema("generation"), str(path), OptionError)
        except OptionError as exc:
            raise OptionError(str(path), "$.generation" + exc.path[1:], exc.message) from None
    _check_templates(spec, str(path))
    return Task(spec, path)
