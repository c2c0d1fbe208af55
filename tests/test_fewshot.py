"""Few-shot demonstration choice: seeded, order-independent of batching, and lm-eval's own draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from babelplug.errors import SpecError
from babelplug.fewshot import choose, join

XCOPA = Path(__file__).resolve().parent.parent / "specs" / "data" / "xcopa"


def _docs(lang: str) -> list[dict]:
    return [json.loads(line) for line in (XCOPA / f"val.{lang}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("same_split", [True, False])
def test_per_item_draws_are_lm_evals(same_split):
    """The same positions as lm-evaluation-harness's default sampler, item by item, on real XCOPA records."""
    from lm_eval.api.samplers import ContextSampler

    pool = _docs("th")
    evaluated = pool if same_split else _docs("zh")[:30]
    sampler = ContextSampler(pool, rnd=1234)
    theirs = [sampler.sample(5, eval_doc=doc if same_split else None) for doc in evaluated]
    ours = choose(len(pool), [i if same_split else None for i in range(len(evaluated))], 5, "per_item", 1234)
    assert [[pool[j] for j in shots] for shots in ours] == [list(t) for t in theirs]
    if same_split:
        assert all(i not in shots for i, shots in enumerate(ours))


def test_first_n_is_lm_evals():
    from lm_eval.api.samplers import FirstNSampler

    pool = _docs("zh")
    sampler = FirstNSampler(pool, rnd=1234)
    ours = choose(len(pool), list(range(10)), 3, "first_n", 1234)
    assert [[pool[j] for j in s] for s in ours] == [list(sampler.sample(3, eval_doc=doc)) for doc in pool[:10]]


def test_random_shares_one_draw_and_never_shows_an_item_itself():
    shots = choose(100, list(range(100)), 5, "random", 7)
    assert all(i not in s and len(s) == 5 for i, s in enumerate(shots))
    assert len({tuple(s) for s in shots}) <= 6  # one shared set, plus the items that were drawn into it
    assert choose(100, list(range(100)), 5, "random", 7) == shots
    assert choose(100, list(range(100)), 5, "random", 8) != shots


def test_choice_does_not_depend_on_which_items_are_asked_together():
    """A per-item draw depends on the item's position in the stream only, so the first k items agree."""
    full = choose(50, list(range(50)), 3, "per_item", 1234)
    assert choose(50, list(range(20)), 3, "per_item", 1234) == full[:20]


def test_too_many_demonstrations_is_a_clear_error():
    with pytest.raises(SpecError, match=r"5 demonstrations asked for, but the pool holds 5 record\(s\) and an item is never"):
        choose(5, [0, 1], 5, "random", 1, where="xcopa.json")
    with pytest.raises(SpecError, match="unknown sampler 'balanced'"):
        choose(5, [None], 1, "balanced", 1)
    assert choose(5, [None, None], 0, "per_item", 1) == [[], []]


def test_join_puts_the_separator_after_each_shot():
    assert join("Q&A\n\n", ["a 1", "b 2"], "\n\n", "c") == "Q&A\n\na 1\n\nb 2\n\nc"


def _lm_eval_context(lang: str, pool: list[dict], doc: dict, shots: list[dict]) -> str:
    """lm-eval's plain-text few-shot context for XCOPA, from its own xcopa doc_to_text/doc_to_choice."""
    from lm_eval.tasks.xcopa import utils

    text = getattr(utils, f"doc_to_text_{lang}")
    return "".join(text(d) + " " + utils.doc_to_choice(d)[int(d["label"])] + "\n\n" for d in shots) + text(doc)


def test_fewshot_run_records_demonstrations_and_matches_lm_eval_prompts(xglm, tmp_path):
    import babelplug as bp

    report = bp.run("xcopa", xglm, languages=["it", "th"], limit=6, num_fewshot=3, seed=1234)
    assert report.results["num_fewshot"] == 3 and report.results["fewshot_sampler"] == "per_item"
    for lang in ("it", "th"):
        pool = _docs(lang)
        rows = [s for s in report.samples if s["language"] == lang]
        from lm_eval.api.samplers import ContextSampler

        sampler = ContextSampler(pool, rnd=1234)
        for i, row in enumerate(rows):
            shots = list(sampler.sample(3, eval_doc=pool[i]))
            assert [pool[j] for j in row["fewshot_ids"]] == shots  # the same demonstrations as lm-eval
            theirs = _lm_eval_context(lang, pool, pool[i], shots)
            if lang == "it":  # every Italian premise ends with a period: lm-eval's formulation, character for character
                assert row["context"] == theirs
            else:  # Thai premises have no final period: lm-eval's [:-1] deletes a real letter in each demonstration
                assert row["context"] != theirs
                for d in shots:
                    assert d["premise"] in row["context"] and d["premise"] not in theirs
    again = bp.run("xcopa", xglm, languages=["it", "th"], limit=6, num_fewshot=3, seed=1234)
    assert [s["fewshot_ids"] for s in again.samples] == [s["fewshot_ids"] for s in report.samples]
    flat = lambda rep: [lp for s in rep.samples for lp in s["logprobs"]]  # noqa: E731
    assert flat(again) == pytest.approx(flat(report), abs=1e-4)
    other = bp.run("xcopa", xglm, languages=["it"], limit=6, num_fewshot=3, seed=99)
    assert [s["fewshot_ids"] for s in other.samples] != [s["fewshot_ids"] for s in report.samples[:6]]


def test_too_many_demonstrations_fails_before_the_model_loads():
    import babelplug as bp

    def never():
        raise AssertionError("the model must not load")

    with pytest.raises(SpecError, match="100 demonstrations asked for, but the pool holds 100"):
        bp.run("xcopa", never, languages=["zh"], num_fewshot=100)

