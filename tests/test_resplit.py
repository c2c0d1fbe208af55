"""Continuations whose tokens do not spell them: BLOOM's byte-level BPE merges Thai across the
context/continuation boundary, so lm-eval's split scores the wrong characters; babelplug resplits."""

from __future__ import annotations

import pytest

import babelplug as bp
from babelplug import tiny


def xcopa_requests(language: str) -> list[tuple[str, str]]:
    """babelplug's XCOPA requests of one language (no spaces inserted in Thai)."""
    task = bp.load_task("xcopa")
    ((_, file),) = task.data_files([language])
    prompt = task.spec["prompt"]
    requests = []
    for rec in task.records(language, file):
        context = task.render(prompt["context"], rec)
        requests += [(context, task.render(choice, rec)) for choice in prompt["choices"]]
    return requests


@pytest.fixture(scope="module")
def thai():
    reqs = xcopa_requests("th")
    assert len(reqs) == 200
    return reqs


@pytest.fixture(scope="module")
def bloom_dir(tiny_root):
    return tiny.cached("bloomz", root=tiny_root)


def lm_eval_loglikelihoods(model_dir, requests):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(model_dir), backend="causal", batch_size=16, device="cpu")
    return lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=r, idx=0) for r in requests], disable_tqdm=True)


def test_bloom_thai_scored_tokens_spell_the_continuation_exactly(bloom_dir, thai):
    model = bp.load(bloom_dir)
    tok = model.backend.tokenizer
    pairs = model.backend.encode_pairs(thai)
    resplit = [p.resplit for p in pairs]
    assert 0 < sum(resplit) < len(thai)  # 116 of these 200 on the tiny BLOOM
    for (context, continuation), (ctx, cont), again in zip(thai, pairs, resplit):
        assert tok.decode(ctx) == context and tok.decode(cont) == continuation
        whole = tok(context + continuation)["input_ids"]
        if again:  # lm-eval's split: the tokens past encode(context) spell other characters
            assert tok.decode(whole[len(ctx) :]) != continuation
            assert cont == tok(continuation)["input_ids"]  # the continuation's own tokens
        else:
            assert cont == whole[len(ctx) :]
    scores = model.score(thai)
    assert [s.resplit for s in scores] == resplit
    # both choices of an item keep one context, so packing still applies, and stays exact
    for s, req in zip(scores[:40], thai[:40]):
        (alone,) = model.score([req])
        assert abs(s.logprob - alone.logprob) <= 1e-5 and (s.num_tokens, s.resplit) == (alone.num_tokens, alone.resplit)
    # where the boundary is clean, the scores are lm-eval's
    clean = [i for i, r in enumerate(resplit) if not r]
    reference = lm_eval_loglikelihoods(bloom_dir, [thai[i] for i in clean])
    assert [scores[i].logprob for i in clean] == pytest.approx([lp for lp, _ in reference], abs=1e-4)


def test_clean_boundaries_are_never_resplit(xglm, xglm_dir, thai):
    """XGLM's sentencepiece tokenizer splits these Thai requests cleanly: lm-eval's tokens and scores."""
    requests = thai[:40] + xcopa_requests("zh")[:20] + xcopa_requests("ht")[:20]
    scores = xglm.score(requests)
    assert not any(s.resplit for s in scores)
    reference = lm_eval_loglikelihoods(xglm_dir, requests)
    assert [s.logprob for s in scores] == pytest.approx([lp for lp, _ in reference], abs=1e-4)
    assert [s.is_greedy for s in scores] == [g for _, g in reference]
