"""The XGLM backend through the unified API, on a tiny real XGLMForCausalLM."""

from __future__ import annotations

import math

import babelplug as bp

REQUESTS = [
    ("I wanted to conserve energy.", " I shut off the light in the unoccupied room."),
    ("我想节约能源。", "我把空房间里的灯关了。"),
    ("ผู้ชายเปิดก๊อกนํ้า", "นํ้าไหลออกมาจากพวย"),
    ("", "M te vle konsève enèji."),
    ("Flam bouji a te etenn.", " Mwen te soufle bouji a."),
    ("A longer context that needs more padding than the others in the batch, surely.", " yes"),
]


def test_tokenize_puts_eos_first(xglm):
    ids = xglm.tokenize(["I wanted to conserve energy.", "蜡烛上的火焰熄灭了。"])
    assert all(row[0] == 2 for row in ids)
    assert all(3 not in row for row in ids)  # no <unk>: the tokenizer covers the text
    assert xglm.backend.tokenizer.decode(ids[0], skip_special_tokens=True) == "I wanted to conserve energy."


def test_score_sums_continuation_logprobs(xglm):
    import torch

    ctx, cont = REQUESTS[0]
    backend = xglm.backend
    whole = backend.tokenizer(ctx + cont)["input_ids"]
    n_ctx = len(backend.tokenizer(ctx)["input_ids"])
    with torch.no_grad():
        logits = backend.model(torch.tensor([whole])).logits[0]
    lp = logits.log_softmax(-1)
    expected = sum(lp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))
    (score,) = xglm.score([(ctx, cont)])
    assert score.num_tokens == len(whole) - n_ctx
    assert math.isclose(score.logprob, expected, abs_tol=1e-5)


def test_batched_scores_equal_unbatched(xglm):
    batched = xglm.score(REQUESTS)
    single = [xglm.score([r])[0] for r in REQUESTS]
    for b, s in zip(batched, single):
        assert abs(b.logprob - s.logprob) <= 1e-5
        assert (b.num_tokens, b.is_greedy) == (s.num_tokens, s.is_greedy)


def test_empty_context_is_scored_given_eos(xglm):
    (score,) = xglm.score([("", "hello")])
    ids = xglm.tokenize(["hello"])[0]
    assert score.num_tokens == len(ids) - 1  # everything after the leading </s>


def test_is_greedy_flags_the_greedy_decode(xglm):
    import torch

    prompt = xglm.tokenize(["I wanted to conserve energy."])[0]
    out = xglm.backend.model.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False)[0].tolist()
    new = out[len(prompt) :]
    (greedy,) = xglm.backend.score_batch([(prompt, new)])
    (other,) = xglm.backend.score_batch([(prompt, new[:-1] + [(new[-1] + 1) % 1990 + 4])])
    assert greedy.is_greedy and greedy.num_tokens == 5
    assert not other.is_greedy


def test_greedy_generation_batched_equals_unbatched(xglm):
    prompts = ["I wanted to", "蜡烛上的火焰熄灭了。 A much longer prompt to force left padding", "ผู้ชาย"]
    batched = xglm.generate(prompts, max_new_tokens=12)
    single = [xglm.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(t, str) and t for t in batched)


def test_max_new_tokens_and_stop(xglm):
    prompt = ["I wanted to conserve energy."]
    full = xglm.generate(prompt, max_new_tokens=12)[0]
    tokens = xglm.backend.tokenizer(full, add_special_tokens=False)["input_ids"]
    assert len(tokens) <= 12 + 1  # decoding may re-split one piece
    stop = full[3:5]
    cut = xglm.generate(prompt, max_new_tokens=12, stop=[stop])[0]
    assert cut == full[: full.index(stop)]


def test_seeded_sampling_is_reproducible(xglm):
    params = dict(do_sample=True, top_k=50, top_p=0.95, temperature=0.9, typical_p=1.0, max_new_tokens=10, seed=7)
    first = xglm.generate(["Mwen te"], **params)
    assert first == xglm.generate(["Mwen te"], **params)
    assert xglm.generate(["Mwen te"], **{**params, "seed": 8}) != first


def test_every_generation_parameter_is_accepted(xglm):
    out = xglm.generate(
        ["I wanted to"], max_new_tokens=4, do_sample=False, num_beams=2, early_stopping=True,
        no_repeat_ngram_size=2, repetition_penalty=1.2, begin_suppress_tokens=[4], stop=["\n"], seed=1,
        eos_token_id=2,
    )  # fmt: skip
    assert isinstance(out[0], str)


def test_begin_suppress_tokens_changes_first_token(xglm):
    prompt = "I wanted to"
    ids = xglm.tokenize([prompt])[0]
    first = xglm.backend.model.generate(__import__("torch").tensor([ids]), max_new_tokens=1, do_sample=False)[0, -1].item()
    out = xglm.generate([prompt], max_new_tokens=1, begin_suppress_tokens=[first])[0]
    assert out != xglm.backend.tokenizer.decode([first], skip_special_tokens=True)


def test_chat_plain_format(xglm):
    one = [{"role": "user", "content": "Translate to English: Je t'aime."}]
    assert xglm.format_chat(one) == "Translate to English: Je t'aime."
    multi = one + [{"role": "assistant", "content": "I love you."}, {"role": "user", "content": "Again?"}]
    assert xglm.format_chat(multi).endswith("User: Again?\nAssistant:")
    assert isinstance(xglm.chat(one, max_new_tokens=3), str)


def test_load_by_catalog_name_from_hf_cache(xglm_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from babelplug import tiny

    snapshot = tiny.hf_cache_layout(xglm_dir, tmp_path, "facebook/xglm-564M")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    for ref in ("xglm-564m", "facebook/xglm-564M", "XGLM"):
        model = bp.load(ref)
        assert model.info.name == "xglm-564m" and model.info.hub == "huggingface"
        assert model.info.revision == "main" and model.info.path == snapshot
    direct = bp.load(xglm_dir)
    assert model.score(REQUESTS[:2]) == direct.score(REQUESTS[:2])


def test_dtype_bfloat16_loads_and_scores(xglm_dir):
    import torch

    model = bp.load(xglm_dir, dtype="bfloat16", batch_size=2)
    assert model.backend.model.dtype == torch.bfloat16
    scores = model.score(REQUESTS[:3])
    reference = bp.load(xglm_dir).score(REQUESTS[:3])
    for s, r in zip(scores, reference):
        assert abs(s.logprob - r.logprob) < 0.05 * abs(r.logprob)


def test_float16_is_never_the_cpu_default(xglm_dir, tmp_path):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    assert bp.load(xglm_dir).backend.model.dtype == torch.float32
    half = tmp_path / "half"
    shutil.copytree(xglm_dir, half)
    AutoModelForCausalLM.from_pretrained(xglm_dir, dtype=torch.float16).save_pretrained(half)
    assert bp.load(half, dtype="auto").backend.model.dtype == torch.float32
    assert bp.load(half, dtype="float16").backend.model.dtype == torch.float16  # asked for explicitly
