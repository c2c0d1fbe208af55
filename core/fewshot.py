"""Few-shot demonstrations: which pool records each evaluated item sees, and how they read.

Choosing is seeded and depends only on the pool size, the item's position and
the seed, never on batching or the backend, so two runs with the same seed show
every item the same demonstrations. Samplers:

``first_n``
    The first ``n`` pool records (the item itself left out when the pool is the
    evaluated split), as lm-evaluation-harness's ``first_n`` sampler.
``random``
    One seeded draw shared by every item (the item left out, the next drawn record
    taking its place), so all items share one prefix.
``per_item``
    A fresh draw per item from one ``random.Random(seed)`` stream taken in item
    order, exactly as lm-evaluation-harness's default sampler does: ``n`` records
    from another split, or ``n + 1`` with the item removed when the pool is the
    evaluated split.
"""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

from .errors import SpecError

SAMPLERS = ("first_n", "random", "per_item")


def choose(pool_size: int, items: Sequence[int | None], n: int, sampler: str, seed: int, *, where: str = "task") -> list[list[int]]:
    """Pool indices of the demonstrations of each item.

    :param pool_size: records in the demonstration pool.
    :param items: per evaluated item, its own index in the pool (pool = evaluated
        split: it is never its own demonstration), or None.
    :param n: demonstrations per item.
    :param sampler: one of :data:`SAMPLERS`.
    :param seed: the sampler seed.
    :param where: the task file or name, for errors.
    """
    if sampler not in SAMPLERS:
        raise SpecError(where, "$.fewshot.sampler", f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if n < 0:
        raise SpecError(where, "$.fewshot.num_fewshot", f"the number of demonstrations must be >= 0, not {n}")
    if n == 0:
        return [[] for _ in items]
    excluded = any(i is not None for i in items)
    room = pool_size - (1 if excluded else 0)
    if n > room:
        raise SpecError(
            where, "$.fewshot", f"{n} demonstrations asked for, but the pool holds {pool_size} record(s)"
            + (" and an item is never its own demonstration" if excluded else "")
        )  # fmt: skip
    if sampler == "first_n":
        head = list(range(min(pool_size, n + 1)))
        return [[j for j in head if j != own][:n] for own in items]
    if sampler == "random":
        drawn = Random(seed).sample(range(pool_size), min(pool_size, n + 1))
        return [[j for j in drawn if j != own][:n] for own in items]
    rnd, out = Random(seed), []
    for own in items:
        if own is None:
            out.append(rnd.sample(range(pool_size), n))
        else:
            out.append([j for j in rnd.sample(range(pool_size), n + 1) if j != own][:n])
    return out


def join(description: str, shots: Sequence[str], separator: str, query: str) -> str:
    """The plain-text few-shot context: description, each shot followed by ``separator``, then the query."""
    return description + "".join(shot + separator for shot in shots) + query
