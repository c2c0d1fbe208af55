"""Per-item and corpus metrics: multiple-choice accuracies with ties, exact match, sacreBLEU BLEU/chrF/chrF++.

Multiple choice (:func:`choice_metrics`): one prediction per normalisation of
the choices' log-probabilities, each picked by :func:`pick`, which treats
values within :data:`TIE_TOL` of the best as tied and then takes the lowest
index. Generation: :func:`exact_match` and :func:`sentence_chrf` per item;
:func:`corpus_metrics` for corpus BLEU, chrF and chrF++ with bootstrap
standard errors and sacreBLEU signatures. Aggregation of per-item metrics:
:func:`babelplug.stats.summarize`.

sacreBLEU is imported only inside the functions that use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from . import stats
from .errors import MetricError, close_matches
from .templates import base_language

#: Absolute tolerance, in the units of the compared values (nats, or nats per
#: character/byte/token), within which two choices are tied. It is the
#: conformance suite's bound on batched-vs-unbatched fp32 log-probabilities
#: (1e-4; measured: 1e-6 causal, 8e-5 mT5), so batch-size noise cannot flip a
#: tied prediction. A real preference that small (a probability ratio of
#: 1.0001) is no preference.
TIE_TOL = 1e-4

#: The multiple-choice metrics and the suffix of their ``pred``/``tie`` keys.
CHOICE_METRICS = {"acc": "", "acc_norm": "_norm", "acc_bytes": "_bytes", "acc_token": "_token", "acc_pmi": "_pmi"}

#: Per-item generation metrics, and the corpus-level ones of :func:`corpus_metrics`.
ITEM_METRICS = ("exact_match", "sentence_chrf")
CORPUS_METRICS = ("bleu", "chrf", "chrf_pp")

#: BLEU tokenizer per base language code (:func:`bleu_tokenizer`); every other language gets ``13a``.
BLEU_TOKENIZERS = {"zh": "zh", "ja": "char", "th": "char", "my": "char", "km": "char", "lo": "char"}


def exact_match(output: str, target: str) -> float:
    """1.0 when output and target are equal after stripping surrounding whitespace."""
    return float(output.strip() == target.strip())


@lru_cache(maxsize=1)
def _sentence_chrf_metric() -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF()


def sentence_chrf(output: str, target: str) -> float:
    """sacreBLEU's sentence-level chrF (0–100) of one output against one target: ``CHRF().sentence_score``.

    Character 6-grams, no word n-grams, β = 2, whitespace ignored. A per-item
    score, averaged over items it is *not* corpus chrF: see :func:`corpus_metrics`.
    """
    return float(_sentence_chrf_metric().sentence_score(output, [target]).score)


def chrf(output: str, target: str) -> float:
    """Deprecated alias of :func:`sentence_chrf`, kept while the runner still calls it."""
    return sentence_chrf(output, target)


def pick(values: Sequence[float], tol: float = TIE_TOL) -> tuple[int, bool]:
    """The best (largest) value's index, and whether it was a tie.

    Every value ``v >= max(values) - tol`` is tied with the best; the rule for a
    tie is the lowest index among the tied values. So values that differ only
    by noise smaller than ``tol`` (fp32 sums computed in different batches)
    give the same prediction. ``-inf`` is allowed; an empty list or NaN is a
    :class:`MetricError`.
    """
    if not values:
        raise MetricError("pick: no values to choose from")
    for i, v in enumerate(values):
        if math.isnan(v):
            raise MetricError(f"pick: value {i} is NaN")
    best = max(values)
    tied = [i for i, v in enumerate(values) if v >= best - tol]
    return tied[0], len(tied) > 1


def _lengths(choices: Sequence[str], unit: str) -> list[int]:
    out = []
    for i, choice in enumerate(choices):
        if not isinstance(choice, str):
            raise MetricError(f"choice {i}: expected a string, got {type(choice).__name__}")
        text = choice.lstrip()
        n = len(text) if unit == "characters" else len(text.encode("utf-8"))
        if n == 0:
            raise MetricError(f"choice {i} ({choice!r}) has no {unit} to normalise by")
        out.append(n)
    return out


def choice_metrics(
    logprobs: Sequence[float],
    choices: Sequence[str],
    answer: int,
    *,
    num_tokens: Sequence[int],
    unconditional: Sequence[float] | None = None,
    tol: float = TIE_TOL,
) -> dict[str, Any]:
    """Accuracies of one multiple-choice item under each normalisation.

    ``logprobs[i]`` is the summed natural-log probability of the text scored for
    choice *i*, ``choices[i]`` that text (the rendered choice, or context +
    choice for ``sequence`` scoring) and ``num_tokens[i]`` its scored token
    count. The normalised score of choice *i* is, per metric:

    - ``acc``: ``logprobs[i]``.
    - ``acc_norm``: ``logprobs[i] / len(t)``, characters of ``t = choices[i].lstrip()``:
      lm-evaluation-harness's ``acc_norm``, which scores ``" " + choice`` and
      divides by ``len(choice)``, the choice without its leading delimiter.
    - ``acc_bytes``: ``logprobs[i] / len(t.encode("utf-8"))``: lm-eval's ``acc_bytes``.
    - ``acc_token``: ``logprobs[i] / num_tokens[i]``: per scored token (lighteval's token normalisation).
    - ``acc_pmi``, only when ``unconditional`` is given: ``logprobs[i] - unconditional[i]``,
      where ``unconditional[i]`` is the log-probability of the same choice after an
      unconditional context (lighteval's PMI normalisation; lm-eval's ``acc_mutual_info``).

    For each metric ``m`` with key suffix ``s`` (``""``, ``_norm``, ``_bytes``,
    ``_token``, ``_pmi``) the result holds ``pred{s}`` (:func:`pick` over the
    scores with ``tol``), ``m`` (1.0 if ``pred{s} == answer`` else 0.0) and
    ``tie{s}`` (whether the pick was a tie). Mismatched lengths, an answer out of
    range, an empty choice or zero tokens are a :class:`MetricError`.
    """
    n = len(logprobs)
    if n == 0:
        raise MetricError("an item needs at least one choice")
    given = {"choices": choices, "num_tokens": num_tokens, **({"unconditional": unconditional} if unconditional is not None else {})}
    for what, seq in given.items():
        if len(seq) != n:
            raise MetricError(f"{len(seq)} {what} for {n} log-probabilities")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < n:
        raise MetricError(f"answer {answer!r} is not a choice index below {n}")
    for i, t in enumerate(num_tokens):
        if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
            raise MetricError(f"choice {i}: num_tokens {t!r} is not a positive integer")
    chars, nbytes = _lengths(choices, "characters"), _lengths(choices, "bytes")
    scores = {
        "acc": list(logprobs),
        "acc_norm": [lp / c for lp, c in zip(logprobs, chars)],
        "acc_bytes": [lp / b for lp, b in zip(logprobs, nbytes)],
        "acc_token": [lp / t for lp, t in zip(logprobs, num_tokens)],
    }
    if unconditional is not None:
        scores["acc_pmi"] = [lp - u for lp, u in zip(logprobs, unconditional)]
    out: dict[str, Any] = {}
    for name, values in scores.items():
        suffix = CHOICE_METRICS[name]
        pred, tie = pick(values, tol)
        out[f"pred{suffix}"], out[name], out[f"tie{suffix}"] = pred, float(pred == answer), tie
    return out


def tie_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many rows were ties, per normalisation present: ``{"ties": n, "ties_norm": n, ...}``."""
    out: dict[str, int] = {}
    for suffix in CHOICE_METRICS.values():
        flags = [row[f"tie{suffix}"] for row in rows if f"tie{suffix}" in row]
        if flags:
            out[f"ties{suffix}"] = sum(bool(f) for f in flags)
    return out


def bleu_tokenizer(language: str | None) -> str:
    """sacreBLEU's BLEU tokenizer for a language: ``zh`` for Chinese, ``char`` for ja/th/my/km/lo, else ``13a``.

    ``ja-mecab`` and ``ko-mecab`` need extras that are not installed, and
    ``flores200``/``spm`` download a sentencepiece model on first use, so none is
    a default; pass ``tokenize=`` to :func:`corpus_metrics` to choose one.
    """
    return BLEU_TOKENIZERS.get(base_language(language), "13a")


def _metric(name: str, tokenize: str) -> Any:
    from sacrebleu.metrics import BLEU, CHRF

    if name == "chrf":
        return CHRF()
    if name == "chrf_pp":
        return CHRF(word_order=2)
    if tokenize not in BLEU.TOKENIZERS:
        raise MetricError(f"unknown sacrebleu BLEU tokenizer {tokenize!r}{close_matches(tokenize, BLEU.TOKENIZERS)}")
    try:
        return BLEU(tokenize=tokenize)
    except (OSError, RuntimeError, ImportError) as exc:  # a download that cannot happen offline, a missing extra
        raise MetricError(f"sacrebleu BLEU tokenizer {tokenize!r} is unavailable here: {exc}".strip()) from None


def _streams(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> list[list[str]]:
    if len(hyps) != len(refs):
        raise MetricError(f"{len(hyps)} hypotheses for {len(refs)} references")
    if not hyps:
        raise MetricError("corpus metrics need at least one hypothesis")
    per = [[r] if isinstance(r, str) else list(r) for r in refs]
    for i, (h, rs) in enumerate(zip(hyps, per)):
        if not isinstance(h, str) or not rs or not all(isinstance(r, str) for r in rs):
            raise MetricError(f"segment {i}: expected a hypothesis string and one or more reference strings")
        if len(rs) != len(per[0]):
            raise MetricError(f"segment {i}: {len(rs)} references, segment 0 has {len(per[0])}")
    return [list(col) for col in zip(*per)]


def _score(metric: Any, hyps: list[str], streams: list[list[str]], draws: list[list[int]]) -> tuple[float, float | None]:
    """A sacreBLEU corpus score and its bootstrap stderr over the resamples ``draws``.

    sacreBLEU's corpus scores are functions of segment statistics summed over the
    corpus (``corpus_score`` is ``_compute_score_from_stats`` of the summed
    ``_extract_corpus_statistics``, the pair sacreBLEU's own bootstrap uses), so
    the statistics are extracted once and each resample sums its segments' rows.
    If that private API is missing, ``corpus_score`` rescores every resample.
    """
    if hasattr(metric, "_extract_corpus_statistics") and hasattr(metric, "_compute_score_from_stats"):
        import numpy as np

        seg = np.asarray(metric._extract_corpus_statistics(hyps, streams), dtype=np.int64)

        def score(idx: Sequence[int]) -> float:
            return float(metric._compute_score_from_stats(seg[np.asarray(idx)].sum(axis=0).tolist()).score)

        return score(range(len(hyps))), stats.bootstrap_stderr(score, draws)

    def rescore(idx: Sequence[int]) -> float:
        return float(metric.corpus_score([hyps[i] for i in idx], [[s[i] for i in idx] for s in streams]).score)

    return rescore(range(len(hyps))), stats.bootstrap_stderr(rescore, draws)


def corpus_metrics(
    hyps: Sequence[str],
    refs: Sequence[str | Sequence[str]],
    names: Sequence[str],
    *,
    language: str | None = None,
    tokenize: str | None = None,
    bootstrap: int = stats.BOOTSTRAP,
    seed: int = stats.SEED,
) -> dict[str, float | str | None]:
    """Corpus-level sacreBLEU scores (0–100) with bootstrap standard errors and signatures.

    ``refs[i]`` is the reference of ``hyps[i]``, or a list of references (the same
    number for every segment). ``names`` are among :data:`CORPUS_METRICS`:

    - ``bleu``: ``BLEU(tokenize=tokenize or bleu_tokenizer(language))``.corpus_score.
    - ``chrf``: ``CHRF()`` (character 6-grams, β = 2).
    - ``chrf_pp``: chrF++, ``CHRF(word_order=2)`` (adds word uni- and bigrams).

    For each name the result holds ``name`` (the score), ``name_stderr`` (the
    bootstrap over segments: ``bootstrap`` resamples from ``seed``, see
    :mod:`babelplug.stats`; ``None`` for fewer than two segments or ``bootstrap``
    below 2) and ``name_signature`` (sacreBLEU's signature, e.g.
    ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``).
    """
    unknown = [n for n in names if n not in CORPUS_METRICS]
    if unknown:
        raise MetricError(f"unknown corpus metric {unknown[0]!r}{close_matches(unknown[0], CORPUS_METRICS)}")
    streams = _streams(hyps, refs)
    tok = tokenize or bleu_tokenizer(language)
    out: dict[str, float | str | None] = {}
    draws = stats.resamples(len(hyps), bootstrap, seed)  # the same resamples for every metric
    for name in names:
        metric = _metric(name, tok)
        out[name], out[f"{name}_stderr"] = _score(metric, list(hyps), streams, draws)
        out[f"{name}_signature"] = str(metric.get_signature().format())
    return out
