"""Metrics for generated text: exact match and chrF."""

from __future__ import annotations

from collections import Counter


def exact_match(output: str, target: str) -> float:
    """1.0 when output and target are equal after stripping surrounding whitespace."""
    return float(output.strip() == target.strip())


def chrf(output: str, target: str, *, order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popović 2015) on 0-100: character n-gram F-beta, n = 1..order, whitespace ignored.

    Precision and recall are averaged over the n-gram orders both strings are long
    enough to have, as sacreBLEU's ``CHRF(word_order=0)`` does for one sentence.
    """
    hyp, ref = "".join(output.split()), "".join(target.split())
    precisions, recalls = [], []
    for n in range(1, order + 1):
        h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        if not h or not r:
            continue
        overlap = sum((h & r).values())
        precisions.append(overlap / sum(h.values()))
        recalls.append(overlap / sum(r.values()))
    if not precisions:
        return 100.0 if hyp == ref else 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + r == 0:
        return 0.0
    return 100 * (1 + beta**2) * p * r / (beta**2 * p + r)
