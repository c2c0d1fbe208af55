"""Running a task on a model: requests, batching, metrics, results files.

Model outputs are appended to ``<output>/partial.jsonl`` as each chunk of
requests finishes, so an interrupted run resumes where it stopped (same task,
data and model); the file is removed once ``results.json`` is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import metrics as metric_fns
from . import templates
from .backend import Backend, Message, Score
from .errors import CapabilityError, DataError, SpecError, close_matches
from .fewshot import choose
from .fewshot import join as fewshot_join
from .model import Model
from .resume import resumable
from .stats import summarize
from .tasks import Record, Task, load_task


@dataclass
class Report:
    """What a run produced."""

    metrics: dict[str, float | None]
    per_language: dict[str, dict[str, float | None]]
    results: dict[str, Any]
    samples: list[dict[str, Any]] = field(repr=False)
    output: Path | None = None


@dataclass(frozen=True)
class Item:
    """One rendered record: a multiple-choice item, or a prompt (text or chat) with its target."""

    language: str | None
    file: str
    line: int
    context: str = ""
    choices: tuple[str, ...] = ()
    answer: int = -1
    prompt: str = ""
    messages: tuple[Message, ...] = ()
    target: str | None = None
    prefix: str = ""
    """Few-shot demonstrations before the context (multiple choice)."""
    fewshot_ids: tuple[int, ...] = ()
    """Positions, in the language's split, of the records shown as demonstrations."""


def _shot(task: Task, rec: Record) -> str:
    """A demonstration as plain text: the record's prompt followed by its answer (gold choice or target)."""
    prompt = task.spec["prompt"]
    if task.kind == "multiple_choice":
        gold = _gold(task, rec, len(prompt["choices"]))
        return task.render(prompt["context"], rec) + task.render(prompt["choices"][gold], rec)
    if "target" not in prompt:
        raise SpecError(str(task.path), "$.prompt.target", "few-shot demonstrations show their target: the task needs a target template")
    return task.render(prompt["text"], rec) + task.render(prompt["target"], rec)


def _gold(task: Task, rec: Record, n_choices: int) -> int:
    raw = task.render(task.spec["prompt"]["answer"], rec)
    if not (raw.strip().isdigit() and int(raw) < n_choices):
        raise DataError(rec.file, rec.line, "answer", f"{raw!r} is not a choice index below {n_choices}")
    return int(raw)


def _item(task: Task, rec: Record, language: str | None, shots: Sequence[Record] = ()) -> Item:
    prompt = task.spec["prompt"]
    where = dict(language=language, file=rec.file, line=rec.line)
    fewshot = task.spec.get("fewshot", {})
    target = None
    if "target" in prompt and templates.names(prompt["target"]) <= set(rec.fields) | set(task.variables(language)):
        target = task.render(prompt["target"], rec)  # records without the optional fields have none
    if task.kind == "chat":
        turns: list[Message] = []
        for demo in shots:
            if "target" not in prompt:
                raise SpecError(str(task.path), "$.prompt.target", "few-shot chat turns show their target: the task needs a target template")
            turns += [{"role": m["role"], "content": task.render(m["content"], demo)} for m in prompt["messages"] if m["role"] != "system"]
            turns.append({"role": "assistant", "content": task.render(prompt["target"], demo)})
        own = [{"role": m["role"], "content": task.render(m["content"], rec)} for m in prompt["messages"]]
        system = [m for m in own if m["role"] == "system"]
        messages = tuple(system + turns + [m for m in own if m["role"] != "system"])
        return Item(**where, messages=messages, target=target)
    description = task.render(fewshot.get("description", ""), rec) if shots else ""
    prefix = fewshot_join(description, [_shot(task, d) for d in shots], fewshot.get("separator", "\n\n"), "") if shots else ""
    if task.kind == "generation":
        return Item(**where, prompt=prefix + task.render(prompt["text"], rec), target=target)
    choices = tuple(task.render(t, rec) for t in prompt["choices"])
    answer = _gold(task, rec, len(choices))
    return Item(**where, context=task.render(prompt["context"], rec), choices=choices, answer=answer, prefix=prefix)


def build_items(task: Task, languages: Sequence[str | None], data: str | os.PathLike[str] | None, limit: int | None, seed: int = 1234,
                *, split: str | None = None, hub: str | None = None, offline: bool | None = None) -> list[Item]:  # fmt: skip
    """Render every record of every selected language (all checked before any model call).

    ``split`` (default: the task's), ``hub`` (a hub picked for the data) and ``offline``
    choose where records come from: see :func:`babelplug.sources.load_records`.

    With ``fewshot.num_fewshot`` > 0, each item gets demonstrations from the rest of
    its language's split (see :mod:`babelplug.fewshot`).
    """
    from .sources import load_records

    field_name = task.spec.get("language_field")
    fewshot = task.spec.get("fewshot", {})
    n = int(fewshot.get("num_fewshot", 0))
    items = []
    task.check_data_override(languages, data)
    for lang in languages:
        records = load_records(task, lang, split, data=data, hub=hub, offline=offline, limit=None if n else limit)
        evaluated = records[:limit] if limit is not None else records
        picks = choose(len(records), list(range(len(evaluated))), n, fewshot.get("sampler", "per_item"), seed, where=str(task.path))
        for rec, shots in zip(evaluated, picks):
            own = rec.fields.get(field_name) if field_name and not lang else None
            item = _item(task, rec, lang if lang else (str(own) if own is not None else None), [records[j] for j in shots])
            items.append(replace(item, fewshot_ids=tuple(shots)) if n else item)
    return items


def requests_of(task: Task, items: Sequence[Item]) -> list[tuple[str, str]]:
    """The (context, continuation) score requests of multiple-choice items, choice by choice."""
    sequence = task.spec.get("scoring", "continuation") == "sequence"
    return [(it.prefix, it.context + c) if sequence else (it.prefix + it.context, c) for it in items for c in it.choices]


def select_languages(task: Task, languages: Sequence[str] | None) -> list[str | None]:
    known = task.languages
    if not known:
        if languages:
            raise SpecError(str(task.path), "$.languages", f"task {task.name!r} has no language variants")
        return [None]
    chosen = list(languages) if languages else known
    for lang in chosen:
        if lang not in known:
            raise SpecError(str(task.path), "$.languages", f"no language {lang!r}{close_matches(lang, known)}")
    return chosen


def _choice_samples(task: Task, model: Model, items: list[Item], partial: Path | None, fingerprint: str, progress: bool) -> list[dict[str, Any]]:
    scores = resumable(
        requests_of(task, items), model.score, partial, fingerprint, progress=progress, desc="score",
        encode=lambda s: [s.logprob, s.num_tokens, s.is_greedy, s.truncated, s.resplit], decode=lambda v: Score(*v),
        order=lambda r: (-len(r[0]), r[0], -len(r[1])),  # choices of one context stay in one chunk
    )  # fmt: skip
    sequence = task.spec.get("scoring", "continuation") == "sequence"
    samples, cursor = [], 0
    for it in items:
        got = scores[cursor : cursor + len(it.choices)]
        cursor += len(it.choices)
        lps = [s.logprob for s in got]
        # Normalise by the length of what was scored: the choice, or context + choice.
        scored = [it.context + c if sequence else c for c in it.choices]
        row = metric_fns.choice_metrics(lps, scored, it.answer, num_tokens=[s.num_tokens for s in got])
        samples.append({
            "language": it.language, "file": it.file, "line": it.line, "context": it.prefix + it.context,
            "choices": list(it.choices), "answer": it.answer, "logprobs": lps,
            "num_tokens": [s.num_tokens for s in got], "is_greedy": [s.is_greedy for s in got],
            "truncated": [s.truncated for s in got], "resplit": [s.resplit for s in got], **row,
        })  # fmt: skip
    return samples


def _generation_samples(task: Task, model: Model, items: list[Item], partial: Path | None, fingerprint: str, progress: bool) -> list[dict[str, Any]]:
    params = dict(task.spec.get("generation", {}))
    prompts = [model.format_chat(list(it.messages)) if task.kind == "chat" else it.prompt for it in items]
    outputs = resumable(prompts, lambda batch: model.generate(batch, **params), partial, fingerprint, progress=progress, desc="generate")
    samples = []
    for it, prompt, out in zip(items, prompts, outputs):
        row: dict[str, Any] = {"language": it.language, "file": it.file, "line": it.line, "prompt": prompt, "output": out, "target": it.target}
        if it.messages:
            row["messages"] = list(it.messages)
        if it.target is not None:
            row["exact_match"] = metric_fns.exact_match(out, it.target)
            row["chrf"] = metric_fns.chrf(out, it.target)
        samples.append(row)
    return samples


def versions() -> dict[str, str]:
    """Versions of babelplug and the libraries that shape results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("babelplug", "torch", "transformers", "tokenizers", "accelerate", "modelscope"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


#: Backend operations each task kind needs.
NEEDS = {"multiple_choice": ("score",), "generation": ("generate",), "chat": ("chat_format", "generate")}


def check_capabilities(task: Task, backend: type[Backend]) -> None:
    """Fail before any model work if the backend lacks an operation the task needs."""
    missing = [op for op in NEEDS[task.kind] if op not in backend.capabilities]
    if missing:
        raise CapabilityError(
            f"task {task.name!r} ({task.kind}) needs {', '.join(missing)}, which backend {backend.name!r} does not support"
        )


def run(
    task: str | os.PathLike[str] | Task,
    model: Model | str | os.PathLike[str] | Callable[[], Model],
    *,
    data: str | os.PathLike[str] | None = None,
    languages: Sequence[str] | None = None,
    limit: int | None = None,
    output: str | os.PathLike[str] | None = None,
    runs: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: bool | None = None,
    seed: int = 1234,
    generation: Mapping[str, Any] | None = None,
    num_fewshot: int | None = None,
    progress: bool = False,
) -> Report:
    """Run a task on a model and return its :class:`Report`.

    :param task: a registered task name, a task JSON path, or a loaded Task.
    :param model: a loaded :class:`Model`, a reference :func:`babelplug.load`
        takes, or a function returning a Model (called once the data is checked).
    :param data: a JSONL file replacing the task's data ('{language}' allowed).
    :param languages: language variants to run (default: all).
    :param limit: at most this many records per language.
    :param output: the run folder for ``results.json`` and ``samples.jsonl`` (None: write nothing).
        An unfinished run of the same identity there is resumed; a folder holding another
        run or a finished one is refused unless ``overwrite`` (see :mod:`babelplug.rundir`).
    :param runs: instead of ``output``, a parent folder: the run gets its own folder
        ``runs/<task>/<model>/<run-id>``, or resumes the one unfinished run of the same identity there.
    :param overwrite: replace the run files in ``output`` whatever run they belong to.
    :param resume: True: resume or fail; False: never resume; None: resume when unambiguous.
    :param seed: seeds torch before the run (recorded in the results).
    :param generation: generation parameters overriding the task's (generation and chat tasks).
    :param num_fewshot: demonstrations per item, overriding the task's ``fewshot.num_fewshot``;
        they are drawn with ``seed`` (see :mod:`babelplug.fewshot`).
    """
    task = task if isinstance(task, Task) else load_task(task)
    if generation:
        from .model import check_generation_params

        if task.kind == "multiple_choice":
            raise SpecError(str(task.path), "$.kind", f"generation parameters apply to generation and chat tasks; {task.name!r} is multiple_choice")
        task = Task({**task.spec, "generation": {**task.spec.get("generation", {}), **check_generation_params(generation)}}, task.path)
    if num_fewshot is not None and num_fewshot != task.spec.get("fewshot", {}).get("num_fewshot", 0):
        task = Task({**task.spec, "fewshot": {**task.spec.get("fewshot", {}), "num_fewshot": int(num_fewshot)}}, task.path)
    langs = select_languages(task, languages)
    if isinstance(model, Model):
        check_capabilities(task, type(model.backend))
    elif not callable(model):
        from .loading import resolve

        target = resolve(model)
        if target.backend is not None:
            check_capabilities(task, target.backend)
    items = build_items(task, langs, data, limit, seed)  # every record checked before any model work
    if not isinstance(model, Model):
        from .loading import load

        model = model() if callable(model) else load(model)
        check_capabilities(task, type(model.backend))
    run_dir = None
    if output is not None or runs is not None:
        from . import rundir

        identity = {  # what must match for a folder to be resumed (run.json)
            "task": task.name, "task_hash": task.hash, "model": model.info.as_dict(), "weights": rundir.weights_digest(model.info.path),
            "options": model.backend.options, "seed": seed, "languages": [str(lang or "default") for lang in langs],
            "limit": limit, "data": str(data) if data else None, "records": hashlib.sha256(repr(items).encode()).hexdigest(),
        }  # fmt: skip
        run_dir = rundir.open_run(identity, output=output, runs=runs, group=(task.name, model.info.name), overwrite=overwrite, resume=resume)
    out = run_dir.path if run_dir else None
    if "torch" in sys.modules:  # backends that use torch have imported it by now
        sys.modules["torch"].manual_seed(seed)
    partial, fingerprint = (run_dir.partial, run_dir.fingerprint) if run_dir else (None, "")
    started = time.perf_counter()
    make = _choice_samples if task.kind == "multiple_choice" else _generation_samples
    try:
        samples = make(task, model, items, partial, fingerprint, progress)
    except BaseException:
        if run_dir:
            run_dir.release()  # the folder stays, for a resume
        raise
    elapsed = time.perf_counter() - started
    for n, (s, it) in enumerate(zip(samples, items)):
        s["doc_id"] = n
        if it.fewshot_ids:
            s["fewshot_ids"] = list(it.fewshot_ids)
    names = task.spec["metrics"]
    groups = list(dict.fromkeys(str(s["language"] or "default") for s in samples))
    per_language = {}
    for g in groups:
        rows = [s for s in samples if str(s["language"] or "default") == g]
        per_language[g] = {**summarize(rows, names), "n": len(rows)}
    metrics = summarize(samples, names)
    results = {
        "task": task.name, "task_hash": task.hash, "task_file": str(task.path), "kind": task.kind,
        "model": model.info.as_dict(), "backend": model.info.backend, "hub": model.info.hub,
        "revision": model.info.revision, "options": model.backend.options,
        "metrics": metrics, "per_language": per_language, "n_samples": len(samples),
        "languages": [str(lang or "default") for lang in langs], "limit": limit, "data": str(data) if data else None,
        "seed": seed, "split": task.spec["data"].get("split"), "num_fewshot": int(task.spec.get("fewshot", {}).get("num_fewshot", 0)),
        "fewshot_sampler": task.spec.get("fewshot", {}).get("sampler", "per_item"), "versions": versions(), "model_seconds": round(elapsed, 3),
    }  # fmt: skip
    if task.kind == "multiple_choice":
        results["n_truncated"] = sum(t for s in samples for t in s["truncated"])  # context left-truncated to the model's length
        results["n_resplit"] = sum(r for s in samples for r in s["resplit"])  # continuation re-split to spell it exactly
        results["ties"] = metric_fns.tie_counts(samples)  # choices within metrics.TIE_TOL of the best: the lowest index wins
        results["n_requests"] = sum(len(s["choices"]) for s in samples)
    if run_dir:  # samples, then results, each atomically; then partial.jsonl goes and the lock is released
        run_dir.finish(
            json.dumps(results, ensure_ascii=False, indent=2, default=str) + "\n",
            "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples),
        )
    return Report(metrics, per_language, results, samples, out)
