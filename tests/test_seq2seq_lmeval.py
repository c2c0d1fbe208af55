"""mT0 scores: the default matches lm-evaluation-harness 0.4.13's seq2seq loglikelihoods;
``score_eos=True`` matches the model card's ``-loss * target_length``.

lm-eval's real ``HFLM(backend="seq2seq")`` runs offline on the tiny mT0 folder,
on XCOPA requests built with lm-eval's own XCOPA prompt functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import babelplug as bp
from babelplug import tiny

DATA = Path(bp.load_task("xcopa").path).parent.parent / "data" / "xcopa"
LANGUAGES = ("et", "ht", "id", "it", "sw", "th", "tr", "vi", "zh", "qu")


def xcopa_requests(per_language: int = 2) -> list[tuple[str, str]]:
    """lm-eval's XCOPA requests: ``doc_to_text`` as context, ``" " + choice`` as continuation."""
    import lm_eval.tasks.xcopa.utils as xcopa

    requests = []
    for lang in LANGUAGES:
        doc_to_text = getattr(xcopa, f"doc_to_text_{lang}")
        lines = (DATA / f"val.{lang}.jsonl").read_text(encoding="utf-8").splitlines()[:per_language]
        for doc in map(json.loads, lines):
            requests += [(doc_to_text(doc), " " + choice) for choice in xcopa.doc_to_choice(doc)]
    return requests


#: Beyond the XCOPA prompt: a context's trailing space (lm-eval moves it), no space at all, an empty context.
EDGE_REQUESTS = [
    ("Flam bouji a te etenn poukisa ", "mwen te soufle bouji a."),
    ("我想节约能源。所以", "我把空房间里的灯关了。"),
    ("ผู้ชายเปิดก๊อกนํ้าดังนั้น", "นํ้าไหลออกมาจากพวย"),
    ("", "Mwen te soufle bouji a."),
    ("Translate to English: Je t’aime.  ", " I love you."),
]


@pytest.fixture(scope="module")
def mt0_dir(tiny_root):
    return tiny.cached("mt0", root=tiny_root)


@pytest.fixture(scope="module")
def requests():
    reqs = xcopa_requests() + EDGE_REQUESTS
    assert len(reqs) >= 40
    return reqs


@pytest.fixture(scope="module")
def lm_eval_scores(mt0_dir, requests):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(mt0_dir), backend="seq2seq", batch_size=8, device="cpu")
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=req, idx=0) for req in requests]
    return lm.loglikelihood(instances, disable_tqdm=True)


def test_default_matches_lm_eval_seq2seq(mt0_dir, requests, lm_eval_scores):
    ours = bp.load(mt0_dir, backend="mt0", batch_size=8).score(requests)
    deltas = [abs(s.logprob - ref) for s, (ref, _) in zip(ours, lm_eval_scores)]
    assert max(deltas) <= 1e-4, max(deltas)
    assert [s.is_greedy for s in ours] == [greedy for _, greedy in lm_eval_scores]
    assert not any(s.truncated or s.resplit for s in ours)


def test_default_scores_no_end_token_and_moves_the_trailing_space(mt0_dir):
    model = bp.load(mt0_dir, backend="mt0")
    tok = model.backend.tokenizer
    context, continuation = EDGE_REQUESTS[0]
    (s,) = model.score([(context, continuation)])
    assert s.num_tokens == len(tok(" " + continuation, add_special_tokens=False)["input_ids"])
    (moved,) = model.score([(context.rstrip(), " " + continuation)])
    assert s == moved


def test_score_eos_is_the_cards_loss_times_length(mt0_dir, requests):
    """The card's scoring: ``-model(**tokenizer(context), labels=tokenizer(continuation).input_ids).loss * len``."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(mt0_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(mt0_dir))
    card = []
    with torch.no_grad():
        for context, continuation in requests:
            inputs = tokenizer(context, return_tensors="pt")
            labels = tokenizer(continuation, return_tensors="pt").input_ids
            card.append(-model(**inputs, labels=labels).loss.item() * labels.shape[1])
    eos = bp.load(mt0_dir, backend="mt0", batch_size=8, score_eos=True).score(requests)
    assert [s.logprob for s in eos] == pytest.approx(card, abs=1e-4)
    default = bp.load(mt0_dir, backend="mt0", batch_size=8).score(requests)
    # the two conventions differ: the end token (and a moved space) is what separates them
    assert all(e.num_tokens >= d.num_tokens + 1 for e, d in zip(eos[:-len(EDGE_REQUESTS)], default))
    assert max(abs(e.logprob - d.logprob) for e, d in zip(eos, default)) > 1e-2
