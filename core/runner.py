"""Running a task on a model: requests, batching, metrics, results files.

Scores are appended to ``<output>/partial.jsonl`` as each chunk of requests
finishes, so an interrupted run resumes where it stopped (same task, data and
model); the file is removed once ``results.json`` is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import Score
from .errors import DataError, SpecError
from .model import Model
from .tasks import Task, load_task

#: Requests per call into the model: the unit of progress and of resumption.
CHUNK = 256


@dataclass
class Report:
    """What a run produced."""

    metrics: dict[str, float]
    per_language: dict[str, dict[str, float]]
    results: dict[str, Any]
    samples: list[dict[str, Any]] = field(repr=False)
    output: Path | None = None


@dataclass(frozen=True)
class Item:
    """One multiple-choice item, rendered."""

    language: str | None
    file: str
    line: int
    context: str
    choices: tuple[str, ...]
    answer: int


def build_items(task: Task, languages: Sequence[str | None], data: str | os.PathLike[str] | None, limit: int | None) -> list[Item]:
    """Render every record of every selected language into an :class:`Item`."""
    items = []
    prompt = task.spec["prompt"]
    for lang, file in task.data_files(languages, data):
        for rec in task.records(lang, file, limit):
            choices = tuple(task.render(t, rec) for t in prompt["choices"])
            raw = task.render(prompt["answer"], rec)
            if not (raw.strip().isdigit() and int(raw) < len(choices)):
                raise DataError(rec.file, rec.line, "answer", f"{raw!r} is not a choice index below {len(choices)}")
            items.append(Item(lang, rec.file, rec.line, task.render(prompt["context"], rec), choices, int(raw)))
    return items


def requests_of(task: Task, items: Sequence[Item]) -> list[tuple[str, str]]:
    """The (context, continuation) score requests, choice by choice."""
    sequence = task.spec.get("scoring", "continuation") == "sequence"
    return [("", it.context + c) if sequence else (it.context, c) for it in items for c in it.choices]


def select_languages(task: Task, languages: Sequence[str] | None) -> list[str | None]:
    known = task.languages
    if not known:
        if languages:
            raise SpecError(str(task.path), "$.languages", f"task {task.name!r} has no language variants")
        return [None]
    chosen = list(languages) if languages else known
    for lang in chosen:
        if lang not in known:
            from .errors import close_matches

            raise SpecError(str(task.path), "$.languages", f"no language {lang!r}{close_matches(lang, known)}")
    return chosen


def _key(request: tuple[str, str]) -> str:
    return hashlib.sha256(json.dumps(request, ensure_ascii=False).encode()).hexdigest()[:32]


def score_all(model: Model, requests: Sequence[tuple[str, str]], partial: Path | None, fingerprint: str, progress: bool) -> list[Score]:
    """Score requests longest first, in chunks, reusing and appending ``partial``."""
    from tqdm.auto import tqdm

    done: dict[str, Score] = {}
    if partial is not None and partial.is_file():
        with partial.open(encoding="utf-8") as handle:
            lines = [json.loads(line) for line in handle if line.strip()]
        if lines and lines[0].get("fingerprint") == fingerprint:
            done = {d["key"]: Score(d["logprob"], d["num_tokens"], d["is_greedy"]) for d in lines[1:] if "key" in d}
        else:
            partial.unlink()
    keys = [_key(r) for r in requests]
    todo = sorted({k: i for i, k in enumerate(keys) if k not in done}.values(), key=lambda i: -len(requests[i][0] + requests[i][1]))
    handle = None
    if partial is not None:
        fresh = not partial.is_file()
        handle = partial.open("a", encoding="utf-8")
        if fresh:
            handle.write(json.dumps({"fingerprint": fingerprint}) + "\n")
    try:
        with tqdm(total=len(requests), initial=len(requests) - len(todo), disable=not progress, unit="req", desc="score") as bar:
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start : start + CHUNK]
                for i, s in zip(chunk, model.score([requests[i] for i in chunk])):
                    done[keys[i]] = s
                    if handle:
                        handle.write(json.dumps({"key": keys[i], "logprob": s.logprob, "num_tokens": s.num_tokens, "is_greedy": s.is_greedy}) + "\n")
                if handle:
                    handle.flush()
                bar.update(len(chunk))
    finally:
        if handle:
            handle.close()
    return [done[k] for k in keys]


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


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


def run(
    task: str | os.PathLike[str] | Task,
    model: Model | str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    languages: Sequence[str] | None = None,
    limit: int | None = None,
    output: str | os.PathLike[str] | None = None,
    seed: int = 1234,
    progress: bool = False,
) -> Report:
    """Run a task on a loaded model and return its :class:`Report`.

    :param task: a registered task name, a task JSON path, or a loaded Task.
    :param model: a loaded :class:`Model`, or a reference :func:`babelplug.load` takes.
    :param data: a JSONL file replacing the task's data ('{language}' allowed).
    :param languages: language variants to run (default: all).
    :param limit: at most this many records per language.
    :param output: folder for ``results.json`` and ``samples.jsonl``.
    :param seed: seeds torch before the run (recorded in the results).
    """
    if not isinstance(model, Model):
        from .loading import load

        model = load(model)
    task = task if isinstance(task, Task) else load_task(task)
    langs = select_languages(task, languages)
    items = build_items(task, langs, data, limit)  # every record checked before any scoring
    requests = requests_of(task, items)
    out = Path(output) if output is not None else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.manual_seed(seed)
    fingerprint = json.dumps([task.hash, model.info.as_dict(), model.backend.options], sort_keys=True, default=str)
    started = time.perf_counter()
    scores = score_all(model, requests, out / "partial.jsonl" if out else None, fingerprint, progress)
    elapsed = time.perf_counter() - started

    samples, cursor = [], 0
    for n, it in enumerate(items):
        got = scores[cursor : cursor + len(it.choices)]
        cursor += len(it.choices)
        lps = [s.logprob for s in got]
        norm = [lp / max(len(c), 1) for lp, c in zip(lps, it.choices)]
        pred, pred_norm = _argmax(lps), _argmax(norm)
        samples.append({
            "doc_id": n, "language": it.language, "file": it.file, "line": it.line,
            "context": it.context, "choices": list(it.choices), "answer": it.answer,
            "logprobs": lps, "num_tokens": [s.num_tokens for s in got], "is_greedy": [s.is_greedy for s in got],
            "pred": pred, "pred_norm": pred_norm, "acc": float(pred == it.answer), "acc_norm": float(pred_norm == it.answer),
        })  # fmt: skip
    names = task.spec["metrics"]

    def mean(rows: list[dict[str, Any]]) -> dict[str, float]:
        return {m: sum(r[m] for r in rows) / len(rows) for m in names} if rows else {m: float("nan") for m in names}

    per_language = {
        str(lang): {**mean([s for s in samples if s["language"] == lang]), "n": sum(s["language"] == lang for s in samples)}
        for lang in langs
    }
    metrics = mean(samples)
    results = {
        "task": task.name, "task_hash": task.hash, "task_file": str(task.path), "kind": task.kind,
        "model": model.info.as_dict(), "backend": model.info.backend, "hub": model.info.hub,
        "revision": model.info.revision, "options": model.backend.options,
        "metrics": metrics, "per_language": per_language, "n_samples": len(samples), "n_requests": len(requests),
        "languages": [str(lang) for lang in langs], "limit": limit, "data": str(data) if data else None,
        "seed": seed, "versions": versions(), "scoring_seconds": round(elapsed, 3),
    }  # fmt: skip
    if out:
        _write_atomic(out / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
        _write_atomic(out / "results.json", json.dumps(results, ensure_ascii=False, indent=2, default=str) + "\n")
        (out / "partial.jsonl").unlink(missing_ok=True)
    return Report(metrics, per_language, results, samples, out)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
