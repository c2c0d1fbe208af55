"""Seed parity: the XGLM card's COPA code, unchanged but for the model path, agrees with babelplug.

The card's functions are copied verbatim from ``shared/seeds/003_4e106788b0b55e7e.txt``.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import babelplug as bp

CARD_SAMPLES = {
    "en": [
        {"premise": "I wanted to conserve energy.", "choice1": "I swept the floor in the unoccupied room.",
         "choice2": "I shut off the light in the unoccupied room.", "question": "effect", "label": "1"},
        {"premise": "The flame on the candle went out.", "choice1": "I blew on the wick.",
         "choice2": "I put a match to the wick.", "question": "cause", "label": "0"},
    ],
    "zh": [
        {"premise": "我想节约能源。", "choice1": "我在空着的房间里扫了地板。", "choice2": "我把空房间里的灯关了。",
         "question": "effect", "label": "1"},
        {"premise": "蜡烛上的火焰熄灭了。", "choice1": "我吹灭了灯芯。", "choice2": "我把一根火柴放在灯芯上。",
         "question": "cause", "label": "0"},
    ],
    "ht": [
        {"premise": "M te vle konsève enèji.", "choice1": "Mwen te fin baleye chanm lib la.",
         "choice2": "Mwen te femen limyè nan chanm lib la.", "question": "effect", "label": "1"},
        {"premise": "Flam bouji a te etenn.", "choice1": "Mwen te soufle bouji a.",
         "choice2": "Mwen te limen mèch bouji a.", "question": "cause", "label": "0"},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def card(xglm_dir):
    """The card's code, with the model path as the only change."""
    from transformers import XGLMForCausalLM, XGLMTokenizer

    tokenizer = XGLMTokenizer.from_pretrained(str(xglm_dir))
    model = XGLMForCausalLM.from_pretrained(str(xglm_dir))

    def get_logprobs(prompt):
        inputs = tokenizer(prompt, return_tensors="pt")
        input_ids, output_ids = inputs["input_ids"], inputs["input_ids"][:, 1:]
        outputs = model(**inputs, labels=input_ids)
        logits = outputs.logits
        logprobs = torch.gather(F.log_softmax(logits, dim=2), 2, output_ids.unsqueeze(2))
        return logprobs

    def COPA_eval(prompt, alternative1, alternative2):
        lprob1 = get_logprobs(prompt + "\n" + alternative1).sum()
        lprob2 = get_logprobs(prompt + "\n" + alternative2).sum()
        return 0 if lprob1 > lprob2 else 1

    return get_logprobs, COPA_eval


def _compare(card, samples_by_lang, report):
    get_logprobs, COPA_eval = card
    rows = iter(report.samples)
    for lang, samples in samples_by_lang.items():
        for example in samples:
            row = next(rows)
            with torch.no_grad():
                predict = COPA_eval(example["premise"], example["choice1"], example["choice2"])
                card_lps = [get_logprobs(example["premise"] + "\n" + example[c]).sum().item() for c in ("choice1", "choice2")]
            assert row["language"] == lang
            assert row["pred"] == predict
            assert row["logprobs"] == pytest.approx(card_lps, abs=1e-4)


def test_card_examples(card, xglm, tmp_path):
    data = tmp_path / "card.{language}.jsonl"
    for lang, samples in CARD_SAMPLES.items():
        (tmp_path / f"card.{lang}.jsonl").write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    task = bp.load_task("copa-xglm")
    spec = {**task.spec, "languages": {lang: {} for lang in CARD_SAMPLES}}
    custom = tmp_path / "copa-card.json"
    custom.write_text(json.dumps(spec))
    report = bp.run(custom, xglm, data=data, output=tmp_path / "out")
    _compare(card, CARD_SAMPLES, report)
    assert (tmp_path / "out" / "results.json").is_file()


def test_xcopa_records(card, xglm):
    languages = ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"]
    report = bp.run("copa-xglm", xglm, limit=12)
    task = bp.load_task("copa-xglm")
    by_lang = {}
    for lang, file in task.data_files(languages):
        lines = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()[:12]]
        by_lang[lang] = lines
    _compare(card, by_lang, report)
