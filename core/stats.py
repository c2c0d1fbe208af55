"""Aggregation with standard errors: means, seeded bootstrap, perplexity.

- Means get the analytic standard error of lm-evaluation-harness
  (``mean_stderr``): the sample standard deviation (divisor n − 1) over √n.
- Corpus-level statistics (BLEU, chrF, perplexity) get a bootstrap standard
  error: ``iters`` resamples of the n items, drawn with replacement by
  ``random.Random(seed)`` (resample r is ``rng.choices(range(n), k=n)``, the r-th
  draw), the statistic recomputed on each, and the sample standard deviation
  (n − 1) of those values, as lm-eval's ``bootstrap_stderr`` does. The same seed
  gives the same resamples whatever the platform or numpy version.
- Every standard error is ``None`` when it cannot be estimated: fewer than two
  items, or ``iters`` below 2.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import MetricError

#: Default number of bootstrap resamples and their seed.
BOOTSTRAP = 1000
SEED = 1234

#: The per-document perplexity metrics :func:`perplexity_metrics` reports.
PERPLEXITY_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")


def sample_stddev(values: Sequence[float]) -> float | None:
    """Standard deviation with Bessel's correction (divisor n − 1); ``None`` for n < 2."""
    n = len(values)
    if n < 2:
        return None
    mu = math.fsum(values) / n
    return math.sqrt(math.fsum((x - mu) ** 2 for x in values) / (n - 1))


def mean_stderr(values: Sequence[float]) -> float | None:
    """Analytic standard error of the mean, ``sample_stddev / sqrt(n)``; ``None`` for n < 2."""
    sd = sample_stddev(values)
    return None if sd is None else sd / math.sqrt(len(values))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not math.isnan(value):
        return float(value)
    raise MetricError(f"{where}: expected a number, got {value!r}")


def summarize(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, float | None]:
    """Mean and analytic standard error of each per-row metric: ``{name: mean, name + "_stderr": se}``.

    A row without the metric, or with ``None`` for it, does not count (a
    generation sample without a target has no ``exact_match``). A metric no row
    has gets ``None`` for both; one with a single value gets a ``None`` stderr.
    Booleans count as 0/1. Anything else that is not a number is a
    :class:`MetricError` naming the row and the metric.
    """
    out: dict[str, float | None] = {}
    for name in names:
        values = [_number(row[name], f"row {i}: metric {name!r}") for i, row in enumerate(rows) if row.get(name) is not None]
        out[name] = math.fsum(values) / len(values) if values else None
        out[f"{name}_stderr"] = mean_stderr(values)
    return out


def resamples(n: int, iters: int = BOOTSTRAP, seed: int = SEED) -> list[list[int]]:
    """The ``iters`` bootstrap resamples of ``range(n)``, each ``n`` indices drawn with replacement.

    Empty when no standard error can be estimated (n < 2 or iters < 2).
    """
    if n < 2 or iters < 2:
        return []
    rng = random.Random(seed)
    population = range(n)
    return [rng.choices(population, k=n) for _ in range(iters)]


def bootstrap_stderr(statistic: Callable[[Sequence[int]], float], draws: Sequence[Sequence[int]]) -> float | None:
    """Sample standard deviation of ``statistic(indices)`` over the resamples ``draws``; ``None`` for fewer than 2."""
    return sample_stddev([statistic(idx) for idx in draws]) if len(draws) >= 2 else None


def count_words(text: str) -> int:
    """Words as lm-eval counts them: ``len(re.split(r"\\s+", text))``.

    Kept for comparability with lm-eval's ``word_perplexity``. A leading or
    trailing whitespace run adds an empty "word", and in languages written
    without spaces (zh, ja, th, my, km, lo) a whole sentence counts as one word,
    so word perplexities there are not comparable across languages: compare
    ``bits_per_byte`` instead.
    """
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (lm-eval's ``count_bytes``)."""
    return len(text.encode("utf-8"))


def perplexity_metrics(
    docs: Sequence[tuple[float, int, int]], *, bootstrap: int = BOOTSTRAP, seed: int = SEED
) -> dict[str, float | None]:
    """Corpus perplexities from per-document ``(logprob_sum, n_bytes, n_words)``, with bootstrap stderr.

    With natural-log sums over all documents (lm-eval's ``weighted_perplexity``
    and ``bits_per_byte`` aggregations):

    - ``word_perplexity`` = exp(−Σ logprob / Σ words)
    - ``byte_perplexity`` = exp(−Σ logprob / Σ bytes)
    - ``bits_per_byte``  = −Σ logprob / (Σ bytes · ln 2)

    Each also gets ``<name>_stderr``: the bootstrap over documents (see the
    module docstring). Words and bytes are counted by :func:`count_words` and
    :func:`count_bytes`. No documents, a non-finite log-probability, or zero
    total bytes or words is a :class:`MetricError`. A perplexity beyond the
    float range (exp of more than 709) is ``inf``.
    """
    if not docs:
        raise MetricError("perplexity: no documents to score")
    lps, nbytes, nwords = [], [], []
    for i, doc in enumerate(docs):
        try:
            lp, b, w = doc
        except (TypeError, ValueError):
            raise MetricError(f"perplexity: document {i}: expected (logprob_sum, n_bytes, n_words), got {doc!r}") from None
        if not (isinstance(lp, (int, float)) and math.isfinite(lp)):
            raise MetricError(f"perplexity: document {i}: log-probability {lp!r} is not a finite number")
        for what, count in (("n_bytes", b), ("n_words", w)):
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise MetricError(f"perplexity: document {i}: {what} {count!r} is not a non-negative integer")
        lps.append(float(lp))
        nbytes.append(b)
        nwords.append(w)

    def exp(x: float) -> float:
        return math.exp(x) if x < 709 else math.inf

    def values(idx: Sequence[int]) -> dict[str, float]:
        lp = math.fsum(lps[i] for i in idx)
        b, w = sum(nbytes[i] for i in idx), sum(nwords[i] for i in idx)
        return {
            "word_perplexity": exp(-lp / w) if w else math.inf,
            "byte_perplexity": exp(-lp / b) if b else math.inf,
            "bits_per_byte": -lp / (b * math.log(2)) if b else math.inf,
        }

    for what, counts in (("bytes", nbytes), ("words", nwords)):
        if not sum(counts):
            raise MetricError(f"perplexity: the {len(docs)} documents have 0 {what} in total")
    out: dict[str, float | None] = dict(values(range(len(docs))))
    draws = [values(idx) for idx in resamples(len(docs), bootstrap, seed)]
    for name in PERPLEXITY_METRICS:
        finite = [d[name] for d in draws if math.isfinite(d[name])]  # a resample of only empty documents has none
        out[f"{name}_stderr"] = sample_stddev(finite) if draws else None
    return out
