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
from .errors import DataError, DataSourceError, OptionError, SpecError, UnknownTaskError
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
    """The data file, or ``HUB:DATASET/SUBSET:SPLIT`` for a hub dataset."""
    line: int
    """1-based line of the record in its file (JSONL, JSON, CSV), or 1-based row (Parquet, hubs)."""
    fields: Mapping[str, Any]
    index: int = -1
    """0-based position of the record within its split, stable across runs."""
    split: str | None = None
    """The babelplug split the record belongs to (``validation``, ``test``...)."""


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

    def split_name(self, split: str | None, where: str = "path") -> str | None:
        """The name of babelplug split ``split`` at ``where`` (``"path"`` or a hub name), through ``data.splits``."""
        mapped = self.spec["data"].get("splits", {}).get(split or "")
        if isinstance(mapped, Mapping):
            mapped = mapped.get(where)
        return mapped if isinstance(mapped, str) else split

    def subset(self, language: str | None) -> str | None:
        """The hub subset (config name) of ``language``: ``data.subset`` with ``{language}`` filled, or its mapping."""
        from .datafiles import fill

        subset = self.spec["data"].get("subset")
        if isinstance(subset, Mapping):
            return subset.get(language or "", language)
        return None if subset is None else fill(subset, {"language": language}, str(self.path), "$.data.subset")

    def data_file(self, language: str | None, split: str | None, data: str | os.PathLike[str] | None = None) -> Path:
        """The local data file of one language and split: ``data`` (relative to the current folder), else ``data.path``."""
        from .datafiles import fill

        raw = os.fspath(data) if data is not None else self.spec["data"].get("path")
        if raw is None:
            ids = ", ".join(f"{h}: {i}" for h, i in self.spec["data"].get("hub", {}).items())
            raise DataSourceError(f"task {self.name!r} has no local data file (data.path); its data is on the hubs ({ids})")
        base = Path.cwd() if data is not None else self.path.parent
        values = {"language": language or "", "split": self.split_name(split, "path"), "subset": self.subset(language)}
        source, where = (raw, "data argument") if data is not None else (str(self.path), "$.data.path")
        return (base / fill(raw, values, source, where)).resolve()

    def check_data_override(self, languages: Sequence[str | None], data: str | os.PathLike[str] | None) -> None:
        """One ``data`` file given for several languages needs ``{language}`` in its path."""
        if data is not None and "{language}" not in os.fspath(data) and len(languages) > 1:
            raise SpecError(
                os.fspath(data), "$", f"one data file given for {len(languages)} languages of task {self.name!r}: "
                "select one language, or put '{language}' in the path"
            )  # fmt: skip

    def data_files(
        self, languages: Sequence[str | None], data: str | os.PathLike[str] | None = None, split: str | None = None
    ) -> list[tuple[str | None, Path]]:  # fmt: skip
        """The local data file of each language for ``split`` (default ``data.split``; ``data`` overrides the task's path)."""
        self.check_data_override(languages, data)
        split = split or self.spec["data"].get("split")
        return [(lang, self.data_file(lang, split, data)) for lang in languages]

    def records(self, language: str | None, file: Path, limit: int | None = None, split: str | None = None) -> Iterator[Record]:
        """Records of one local data file (JSONL, JSON, CSV, Parquet), each checked against the task's record schema.

        :func:`babelplug.sources.load_records` is the entry point that also reads hub datasets.
        """
        from .datafiles import Checker, read_rows

        rows = read_rows(Path(file), Checker(self.spec["record_schema"]), limit, f"data file of task {self.name!r}")
        for index, (line, fields) in enumerate(rows):
            yield Record(language, str(file), line, fields, index, split or self.spec["data"].get("split"))


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
