"""mT0, BLOOMZ, WangChanGLM and PolyLM: seed parity with their cards, quantization, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

import babelplug as bp
from babelplug import tiny
from babelplug.errors import MissingDependencyError, ModelLoadError, OptionError


@pytest.fixture(scope="module")
def dirs(tiny_root):
    return {f: tiny.cached(f, root=tiny_root) for f in ("xglm", "mt0", "bloomz", "wangchanglm", "polylm", "polylm-remote")}


# -- seed parity -----------------------------------------------------------------------------
def test_mt0_card_generate(dirs):
    """The mT0 card's CPU snippet, unchanged but for the checkpoint path."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    checkpoint = str(dirs["mt0"])
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint)
    inputs = tokenizer.encode("Translate to English: Je t’aime.", return_tensors="pt")
    outputs = model.generate(inputs)
    card = tokenizer.decode(outputs[0])
    # transformers' default generation length (max_length 20) makes 20 decoder tokens here.
    ours = bp.load(dirs["mt0"], backend="mt0").generate(["Translate to English: Je t’aime."], max_new_tokens=20)
    # The card prints special tokens too (decode without skip_special_tokens); babelplug drops them.
    assert re.sub(r"<pad>|</s>|<extra_id_\d+>", "", card).strip() == ours[0].strip() != ""


CARD_KWARGS = {"do_sample": False, "num_beams": 4, "max_new_tokens": 128, "early_stopping": True, "eos_token_id": 2}
POLYLM_INPUT = "Beijing is the capital of China.\nTranslate this sentence from English to Chinese."


def _polylm_card(model_dir):
    """The PolyLM card's pipeline code; trust_remote_code=True is the one addition modelscope 1.40 needs."""
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    input_text = POLYLM_INPUT
    input_text = "<|user|>\n" + f"{input_text}\n" + "<|assistant|>\n"
    kwargs = CARD_KWARGS
    pipeline_ins = pipeline(Tasks.text_generation, model=str(model_dir), trust_remote_code=True)
    result = pipeline_ins(input_text, **kwargs)
    return input_text, result["text"]


@pytest.mark.parametrize("engine", ["transformers", "modelscope"])
def test_polylm_card_pipeline(dirs, engine):
    prompt, card_text = _polylm_card(dirs["polylm"])
    model = bp.load(dirs["polylm"], backend="polylm", engine=engine, trust_remote_code=engine == "modelscope")
    messages = [{"role": "user", "content": POLYLM_INPUT}]
    assert model.format_chat(messages) == prompt
    reply = model.chat(messages, **CARD_KWARGS)
    assert card_text == prompt + reply  # the pipeline echoes the prompt; babelplug strips it
    assert model.generate([prompt], **CARD_KWARGS) == [reply]


def test_polylm_engines_agree_and_score_alike(dirs):
    plain = bp.load(dirs["polylm"], backend="polylm")
    ms = bp.load(dirs["polylm"], backend="polylm", engine="modelscope", trust_remote_code=True)
    prompts = ["<|user|>\nเล่นหุ้นยังไงให้รวย\n<|assistant|>\n", "Mwen te"]
    assert plain.generate(prompts, max_new_tokens=12) == ms.generate(prompts, max_new_tokens=12)
    sampling = {"max_new_tokens": 12, "do_sample": True, "top_k": 20, "seed": 3}  # one prompt: one random stream
    assert plain.generate(prompts[:1], **sampling) == ms.generate(prompts[:1], **sampling)
    reqs = [("我想节约能源。", "我把空房间里的灯关了。"), ("", "Mwen te soufle bouji a.")]
    assert [s.logprob for s in plain.score(reqs)] == pytest.approx([s.logprob for s in ms.score(reqs)], abs=1e-5)


def _wangchanglm_exclude_ids(tokenizer):
    """exclude_ids as the WangChanGLM repo computes them: every vocab piece with a non-Thai character."""
    exclude_pattern = re.compile(r"[^ก-๙]+")
    return [idx for text, idx in tokenizer.get_vocab().items() if exclude_pattern.search(text)]


def test_wangchanglm_card_generate(dirs):
    """The WangChanGLM card's code: its sampling parameters, exclude_ids, a fixed seed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_name = str(dirs["wangchanglm"])
    model = AutoModelForCausalLM.from_pretrained(model_name, return_dict=True, device_map="auto", low_cpu_mem_usage=True)
    text = "เล่นหุ้นยังไงให้รวย"
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    exclude_ids = _wangchanglm_exclude_ids(tokenizer)
    max_gen_len, top_p, temperature = 24, 0.95, 0.9
    batch = tokenizer(text, return_tensors="pt")
    torch.manual_seed(42)
    output_tokens = model.generate(
        input_ids=batch["input_ids"], max_new_tokens=max_gen_len, begin_suppress_tokens=exclude_ids,
        no_repeat_ngram_size=2, top_k=50, top_p=top_p, typical_p=1.0, temperature=temperature, do_sample=True,
    )  # fmt: skip
    card = tokenizer.decode(output_tokens[0][batch["input_ids"].shape[1] :], skip_special_tokens=True)

    ours_model = bp.load(dirs["wangchanglm"], backend="wangchanglm")
    assert ours_model.backend.pieces_outside_script("thai") == frozenset(exclude_ids)
    ours = ours_model.generate([text], max_new_tokens=max_gen_len, first_token_script="thai", seed=42)[0]
    assert ours == card
    assert "\u0e00" <= ours[0] <= "\u0e7f"  # the first generated token is Thai


def test_wangchanglm_defaults_and_chat_format(dirs):
    model = bp.load("pythainlp/wangchanglm-7.5B-sft-en", hub="local") if False else bp.load(dirs["wangchanglm"], backend="wangchanglm")
    kwargs = model.backend.generation_kwargs({})
    assert kwargs == {"max_new_tokens": 512, "do_sample": True, "no_repeat_ngram_size": 2, "top_k": 50,
                      "top_p": 0.95, "typical_p": 1.0, "temperature": 0.9}  # fmt: skip
    assert model.format_chat([{"role": "system", "content": "บริบท"}, {"role": "user", "content": "สวัสดี"}]) == (
        "<context>: บริบท\n<human>: สวัสดี\n<bot>: "
    )


# -- remote code -----------------------------------------------------------------------------
def test_polylm_remote_code_needs_opt_in_and_the_compat_import(dirs):
    folder = dirs["polylm-remote"]
    with pytest.raises(ModelLoadError, match="runs its own modeling code .*trust_remote_code=True"):
        bp.load(folder, backend="polylm")
    # Without babelplug's compat path, transformers 4.57 cannot import the remote code at all.
    probe = (
        "from transformers import AutoModelForCausalLM\n"
        f"AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
    )
    raw = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert raw.returncode != 0 and "SequenceSummary" in raw.stderr
    model = bp.load(folder, backend="polylm", trust_remote_code=True)
    assert type(model.backend.model).__name__ == "PolyLMHeadModel"
    plain = bp.load(dirs["polylm"], backend="polylm")
    assert model.score([("a", "b c")]) == plain.score([("a", "b c")])  # same weights, same scores


# -- quantization ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["xglm", "bloomz"])
@pytest.mark.parametrize(("options", "tolerance"), [({"load_in_8bit": True}, 0.05), ({"quantization": "4bit"}, 0.15)])
def test_quantized_scores_stay_close_to_fp32(dirs, family, options, tolerance):
    """8-bit within 5% and 4-bit within 15% of the fp32 summed log-probs (tiny random models)."""
    reqs = [("I wanted to conserve energy.", " I shut off the light."), ("我想节约能源。", "我把空房间里的灯关了。")]
    reference = bp.load(dirs[family]).score(reqs)
    quantized = bp.load(dirs[family], **options)
    assert "Linear8bitLt" in repr(quantized.backend.model) or "Linear4bit" in repr(quantized.backend.model)
    for q, r in zip(quantized.score(reqs), reference):
        assert q.num_tokens == r.num_tokens
        assert abs(q.logprob - r.logprob) <= tolerance * abs(r.logprob)


# -- bad input -------------------------------------------------------------------------------
def test_unknown_engine(dirs):
    with pytest.raises(OptionError, match=r"\$\.engine: 'vllm' is not one of \['transformers', 'modelscope'\]"):
        bp.load(dirs["polylm"], backend="polylm", engine="vllm")
    with pytest.raises(OptionError, match=r"unknown key 'engine'"):
        bp.load(dirs["xglm"], engine="modelscope")


def test_modelscope_engine_needs_trust_remote_code(dirs):
    with pytest.raises(OptionError, match=r"\$\.engine: modelscope's PolyLM pipeline runs only with trust_remote_code=True"):
        bp.load(dirs["polylm"], backend="polylm", engine="modelscope")


@pytest.mark.parametrize(("blocked", "options", "extra"), [
    ("bitsandbytes", {"load_in_8bit": True}, "babelplug[quant]"),
    ("modelscope", {"engine": "modelscope", "trust_remote_code": True}, "babelplug[modelscope]"),
])  # fmt: skip
def test_missing_optional_dependency_names_the_extra(dirs, monkeypatch, blocked, options, extra):
    monkeypatch.setitem(sys.modules, blocked, None)  # not importable
    with pytest.raises(MissingDependencyError, match=re.escape(f"pip install '{extra}'")):
        bp.load(dirs["polylm"], backend="polylm", **options)


def test_configuration_json_must_select_the_polylm_pipeline(dirs, tmp_path):
    folder = tmp_path / "not-polylm"
    shutil.copytree(dirs["polylm"], folder)
    config = json.loads((folder / "configuration.json").read_text())
    config["pipeline"]["type"] = "text-generation"
    (folder / "configuration.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"configuration\.json: selects pipeline 'text-generation' .* 'polylm-text-generation'"):
        bp.load(folder, backend="polylm", engine="modelscope", trust_remote_code=True)


# -- any task on any backend -----------------------------------------------------------------
BACKENDS = [("xglm", "xglm"), ("mt0", "mt0"), ("bloomz", "bloomz"), ("wangchanglm", "wangchanglm"), ("polylm", "polylm")]


@pytest.mark.parametrize("task", ["xcopa", "copa-xglm", "mt0-prompts", "card-chat"])
@pytest.mark.parametrize(("family", "backend"), BACKENDS)
def test_every_task_on_every_backend(dirs, tmp_path, task, family, backend):
    model = bp.load(dirs[family], backend=backend)
    kind = bp.load_task(task).kind
    gen = {"max_new_tokens": 4, "do_sample": False} if kind != "multiple_choice" else None
    report = bp.run(task, model, limit=2, output=tmp_path, generation=gen)
    results = json.loads((tmp_path / "results.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert results["backend"] == backend and results["task"] == task and len(samples) == results["n_samples"] > 0
    for metric, value in report.metrics.items():
        assert value is None or 0 <= value <= (100 if metric == "chrf" else 1)
    if kind == "multiple_choice":
        assert all(len(s["logprobs"]) == 2 and all(lp < 0 for lp in s["logprobs"]) for s in samples)
    else:
        assert all(isinstance(s["output"], str) for s in samples)


# -- device_map ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["xglm", "bloomz"])
def test_device_map_auto_with_disk_offload(dirs, tmp_path, family):
    reqs = [("I wanted to conserve energy.", " I shut off the light."), ("我想节约能源。", "我把空房间里的灯关了。")]
    plain = bp.load(dirs[family])
    auto = bp.load(dirs[family], device_map="auto")
    assert auto.score(reqs) == plain.score(reqs)
    size = (dirs[family] / "model.safetensors").stat().st_size
    offloaded = bp.load(dirs[family], device_map="auto", max_memory={"cpu": int(size * 0.9)}, offload_folder=str(tmp_path))
    assert "disk" in offloaded.backend.model.hf_device_map.values()
    for a, b in zip(offloaded.score(reqs), plain.score(reqs)):
        assert abs(a.logprob - b.logprob) <= 1e-5
    assert offloaded.generate(["I wanted to"], max_new_tokens=4) == plain.generate(["I wanted to"], max_new_tokens=4)
    with pytest.raises(ModelLoadError, match="offload the whole model to disk"):
        bp.load(dirs[family], device_map="auto", max_memory={"cpu": 1000}, offload_folder=str(tmp_path / "all"))
