"""Input limits: maximum length (left truncation as lm-eval does, or an error), the character and
memory budgets, generation capped at the maximum length, empty continuations."""

from __future__ import annotations

import pytest

import babelplug as bp
from babelplug import tiny
from babelplug.backend import Score
from babelplug.errors import InputTooLargeError, OptionError, RequestError
from babelplug.limits import Limits, TruncationWarning, parse_bytes

LONG = " ".join(["I wanted to conserve energy."] * 120)  # about 2,000 tokens on the tiny XGLM (512 positions)
REQUESTS = [
    ("I wanted to conserve energy.", " I shut off the light in the unoccupied room."),
    ("我想节约能源。", "我把空房间里的灯关了。"),
    ("ผู้ชายเปิดก๊อกนํ้า", "นํ้าไหลออกมาจากพวย"),
    ("Flam bouji a te etenn.", " Mwen te soufle bouji a."),
    ("Flam bouji a te etenn.", " Mwen te limen mèch bouji a."),
    ("A longer context that needs more padding than the others in the batch, surely.", " yes"),
]


@pytest.fixture(scope="module")
def dirs(tiny_root):
    return {f: tiny.cached(f, root=tiny_root) for f in ("bloomz", "mt0")}


def lm_eval_loglikelihoods(model_dir, requests, backend="causal"):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(model_dir), backend=backend, batch_size=4, device="cpu")
    return lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=r, idx=0) for r in requests], disable_tqdm=True)


# -- where the maximum length comes from ------------------------------------------------------
def test_max_length_comes_from_the_model(xglm, dirs):
    assert (xglm.backend.limits.max_length, xglm.backend.limits.source) == (512, "config.json max_position_embeddings")
    for family in ("bloomz", "mt0"):  # ALiBi / relative positions: no limit in config.json
        limits = bp.load(dirs[family]).backend.limits
        assert (limits.max_length, limits.source) == (512, "tokenizer model_max_length")
    raised = bp.load(dirs["bloomz"], max_length=4096).backend.limits
    assert (raised.max_length, raised.source) == (4096, "load option max_length")


def test_without_any_limit_the_default_is_lm_evals(dirs):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(dirs["bloomz"])
    unset = AutoTokenizer.from_pretrained(dirs["bloomz"], model_max_length=int(1e30))  # transformers' "no limit"
    limits = Limits.of(config, unset, {})
    assert limits.max_length == 2048 and "set the load option max_length" in limits.source


def test_bad_limit_options(xglm_dir):
    with pytest.raises(OptionError, match=r"max_length.*1024 exceeds the model's 512 positions \(config.json max_position_embeddings\)"):
        bp.load(xglm_dir, max_length=1024)
    with pytest.raises(OptionError, match="truncation"):
        bp.load(xglm_dir, truncation="right")
    with pytest.raises(OptionError, match="memory_budget"):
        bp.load(xglm_dir, memory_budget="lots")
    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("500 MB") == 500 * 10**6 and parse_bytes(123) == 123


# -- over-long score requests --------------------------------------------------------------------
def test_over_long_requests_are_left_truncated_as_lm_eval_does(xglm, xglm_dir):
    reqs = [(LONG, " I shut off the light."), REQUESTS[3], (LONG + " so", " it went out.")]
    with pytest.warns(TruncationWarning, match=r"2 of 3 score requests left-truncated to fit the model's max_length 512"):
        ours = xglm.score(reqs)
    assert [s.truncated for s in ours] == [True, False, True]
    reference = lm_eval_loglikelihoods(xglm_dir, reqs)
    assert [s.logprob for s in ours] == pytest.approx([lp for lp, _ in reference], abs=1e-4)
    assert [s.is_greedy for s in ours] == [g for _, g in reference]
    # the window: the continuation whole, and the context's last tokens, 513 in all (512 read)
    backend = xglm.backend
    ctx, cont = backend.encode_pairs(reqs[:1])[0]
    (window,) = backend.score_batch([(ctx[-(513 - len(cont)) :], cont)])
    assert ours[0].logprob == pytest.approx(window.logprob, abs=1e-6)


def test_truncation_error_names_the_request(xglm_dir):
    strict = bp.load(xglm_dir, truncation="error")
    with pytest.raises(InputTooLargeError, match=r"score requests: \$\[1\]\.context: \d+ tokens, more than the model's max_length 512") as caught:
        strict.score([REQUESTS[0], (LONG, " c")])
    assert (caught.value.index, caught.value.part) == (1, "context")
    assert strict.score(REQUESTS[:1]) == bp.load(xglm_dir).score(REQUESTS[:1])


def test_an_over_long_continuation_is_refused_either_way(xglm):
    with pytest.raises(InputTooLargeError, match=r"\$\[0\]\.continuation: \d+ tokens, more than the model's max_length 512"):
        xglm.score([("a", " " + LONG)])


def test_seq2seq_context_is_cut_to_the_encoders_length(dirs):
    model = bp.load(dirs["mt0"])
    with pytest.warns(TruncationWarning, match="1 of 2 score requests left-truncated"):
        long, short = model.score([(LONG, " yes"), ("Flam bouji a te etenn.", " yes")])
    assert long.truncated and not short.truncated
    (ctx, cont), = model.backend.encode_pairs([(LONG, " yes")])
    (window,) = model.backend.score_batch([(ctx[-512:], cont)])
    assert long.logprob == pytest.approx(window.logprob, abs=1e-5)


# -- characters and memory -----------------------------------------------------------------------
def test_character_budget_is_checked_before_tokenizing(xglm, xglm_dir, monkeypatch):
    huge = "x" * 50_000_000  # a 50 MB record
    calls = []
    monkeypatch.setattr(xglm.backend, "tokenize", lambda texts: calls.append(texts) or [])
    with pytest.raises(InputTooLargeError, match=r"\$\[1\]\.context: 50000002 characters, more than max_chars=1000000") as caught:
        xglm.score([REQUESTS[0], (huge, " b")])
    assert caught.value.index == 1
    with pytest.raises(InputTooLargeError, match=r"prompts: \$\[0\]\.prompt: 50000000 characters"):
        xglm.generate([huge])
    assert calls == []  # refused before the tokenizer saw it
    with pytest.raises(InputTooLargeError, match=r"\$\[0\]\.continuation: 301 characters, more than max_chars=300"):
        bp.load(xglm_dir, max_chars=300).score([("a", " " + "b" * 299)])


def test_a_60k_character_context_is_cut_or_refused_before_any_forward(dirs):
    text = ("ผู้ชายเปิดก๊อกนํ้า ดังนั้นนํ้าไหลออกมาจากพวย " * 1500)[:60_000]
    with pytest.warns(TruncationWarning):
        (cut,) = bp.load(dirs["bloomz"]).score([(text, " yes")])  # BLOOM's default length: truncated
    assert cut.truncated and cut.num_tokens >= 1
    # BLOOM has no position limit: with max_length raised, the memory estimate refuses it, naming it
    unbounded = bp.load(dirs["bloomz"], max_length=1_000_000)
    with pytest.raises(InputTooLargeError, match=r"\$\[1\]\.context: needs about [0-9.]+ GiB of activations, more than memory_budget=8.0 GiB"):
        unbounded.score([REQUESTS[0], (text, " yes")])
    with pytest.raises(InputTooLargeError, match=r"prompts: \$\[0\]\.prompt: needs about"):
        unbounded.generate([text], max_new_tokens=2)


def test_batches_are_split_to_fit_the_memory_budget(xglm, xglm_dir, monkeypatch):
    reference = xglm.score(REQUESTS)
    backend = xglm.backend
    pairs, _ = backend.fit_pairs(backend.encode_pairs(REQUESTS))
    budget = max(backend.batch_memory([p]) for p in pairs)
    assert backend.batch_memory(pairs) > budget
    small = bp.load(xglm_dir, memory_budget=budget)
    sizes = []
    score_batch = small.backend.score_batch
    monkeypatch.setattr(small.backend, "score_batch", lambda batch: sizes.append(len(batch)) or score_batch(batch))
    got = small.score(REQUESTS)
    assert len(sizes) > 1 and sum(sizes) == len(REQUESTS)
    assert [g.logprob for g in got] == pytest.approx([r.logprob for r in reference], abs=1e-5)
    with pytest.raises(InputTooLargeError, match=r"\$\[0\]\.context: needs about .* memory_budget"):
        bp.load(xglm_dir, memory_budget="1KiB").score(REQUESTS[:1])


# -- generation ----------------------------------------------------------------------------------
def _prompt_of(xglm, tokens: int) -> tuple[str, list[int]]:
    """A prompt of exactly ``tokens`` tokens (a prefix of LONG's)."""
    ids = xglm.tokenize([LONG])[0][:tokens]
    text = xglm.detokenize([ids])[0]
    assert xglm.tokenize([text])[0] == ids
    return text, ids


def test_generation_is_capped_at_the_maximum_length(xglm):
    prompt, ids = _prompt_of(xglm, 500)
    with pytest.warns(TruncationWarning, match=r"max_new_tokens capped for 1 of 2 prompts to fit the model's max_length 512"):
        capped, short = xglm.generate([prompt, "I wanted to"], max_new_tokens=40)
    assert capped == xglm.generate([prompt], max_new_tokens=512 - len(ids))[0]  # no cap needed: no warning
    assert short == xglm.generate(["I wanted to"], max_new_tokens=40)[0]  # batch-mates keep their length


def test_an_over_long_prompt_keeps_its_last_tokens(xglm, xglm_dir):
    backend = xglm.backend
    ids = xglm.tokenize([LONG])[0]
    with pytest.warns(TruncationWarning, match=r"1 of 1 prompts left-truncated"):
        (out,) = xglm.generate([LONG], max_new_tokens=20)
    assert out == backend.generate_batch([ids[-(512 - 20) :]], backend.generation_kwargs({"max_new_tokens": 20}))[0]
    with pytest.raises(InputTooLargeError, match=r"prompts: \$\[1\]\.prompt: \d+ tokens leave no room"):
        bp.load(xglm_dir, truncation="error").generate(["I wanted to", LONG], max_new_tokens=5)


def test_seq2seq_prompts_are_cut_to_the_encoders_length(dirs):
    model = bp.load(dirs["mt0"])
    backend = model.backend
    ids = model.tokenize([LONG])[0]
    with pytest.warns(TruncationWarning, match=r"1 of 1 prompts left-truncated"):
        (out,) = model.generate([LONG], max_new_tokens=3)
    assert out == backend.generate_batch([ids[-512:]], backend.generation_kwargs({"max_new_tokens": 3}))[0]


# -- empty continuations, result flags -----------------------------------------------------------
def test_a_continuation_without_tokens_is_refused_by_the_backend_too(xglm, dirs):
    for backend in (xglm.backend, bp.load(dirs["mt0"]).backend):
        with pytest.raises(RequestError, match=r"\$\[1\]\.continuation: tokenizes to no tokens"):
            backend.score([REQUESTS[0], ("a", "")])


def test_score_keeps_its_positional_fields():
    assert Score(-1.5, 2, True) == Score(logprob=-1.5, num_tokens=2, is_greedy=True, truncated=False, resplit=False)
    with pytest.raises(AttributeError):
        Score(-1.5, 2, True).truncated = True  # type: ignore[misc]
