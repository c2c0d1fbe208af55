"""The demo: zero-shot XCOPA on every built-in backend, on embedded tiny models.

Tiny real-architecture models with locally trained tokenizers are built once
(see :mod:`babelplug.tiny`) and loaded through the real loading code, offline.
Their weights are random, so accuracies hover around chance: the demo shows the
whole path working, not model quality.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

#: Built-in backend -> tiny model family that stands in for it.
DEMO_BACKENDS: dict[str, str] = {"xglm": "xglm", "mt0": "mt0", "bloomz": "bloomz", "wangchanglm": "wangchanglm", "polylm": "polylm"}


def demo(limit: int | None = None, languages: Sequence[str] | None = None, threads: int = 1) -> dict[str, dict[str, float]]:
    """Run XCOPA on each demo backend and print a language x backend accuracy table."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from . import tiny
    from .loading import load
    from .runner import run

    torch.set_num_threads(threads)
    table: dict[str, dict[str, float]] = {}
    for backend, family in DEMO_BACKENDS.items():
        started = time.perf_counter()
        folder = tiny.cached(family)
        model = load(folder, backend=backend)
        report = run("xcopa", model, languages=languages, limit=limit)
        model.close()
        table[backend] = {lang: row["acc"] for lang, row in report.per_language.items()}
        table[backend]["all"] = report.metrics["acc"]
        print(f"{backend}: {folder} ({report.results['n_requests']} requests, {time.perf_counter() - started:.1f} s)")
    langs = list(next(iter(table.values())))
    print("\nzero-shot XCOPA accuracy (tiny random-weight models: chance is 0.5)")
    width = max(len(b) for b in table) + 2
    print(f"{'language':<10}" + "".join(f"{b:>{width}}" for b in table))
    for lang in langs:
        print(f"{lang:<10}" + "".join(f"{table[b][lang]:>{width}.3f}" for b in table))
    return table
