"""Metrics: ties, multiple-choice normalisations (checked against lm-eval's own code),
standard errors, corpus sacreBLEU scores (checked against sacreBLEU's CLI), perplexity."""

from __future__ import annotations

import json
import math
import random
import statistics
import subprocess
import sys

import pytest

from babelplug import metrics, stats
from babelplug.errors import BabelplugError, MetricError

# ---------------------------------------------------------------- ties


def test_pick_best_and_tie_rule() -> None:
    assert metrics.pick([-3.0, -1.0, -2.0]) == (1, False)
    assert metrics.pick([-1.0, -3.0, -1.0]) == (0, True)  # tied: the lowest index wins
    assert metrics.pick([-2.0, -1.0, -1.0 - 0.5 * metrics.TIE_TOL]) == (1, True)
    assert metrics.pick([-2.0, -1.0, -1.0 - 2 * metrics.TIE_TOL]) == (1, False)
    assert metrics.pick([-1.0, -1.0 + 5e-3], tol=1e-2) == (0, True)
    assert metrics.pick([-math.inf, -7.0]) == (1, False)
    assert metrics.pick([-math.inf, -math.inf]) == (0, True)
    assert metrics.pick([4.0]) == (0, False)


def test_pick_is_independent_of_batch_noise() -> None:
    """Exactly tied choices perturbed by 1e-7 (fp32 batch noise) keep their prediction; plain argmax flips."""
    rng = random.Random(0)
    flips_argmax = 0
    for _ in range(500):
        tied = rng.uniform(-40, -1)
        values = [tied - rng.uniform(0.5, 5), tied, tied, tied - rng.uniform(0.5, 5)]
        rng.shuffle(values)
        expected = metrics.pick(values)
        assert expected[1]
        noisy = [v + rng.choice([-1e-7, 0.0, 1e-7]) for v in values]
        assert metrics.pick(noisy) == expected
        flips_argmax += max(range(4), key=noisy.__getitem__) != max(range(4), key=values.__getitem__)
    assert flips_argmax > 50  # the noise is real: a strict argmax changes its answer


@pytest.mark.parametrize("bad", [[], [1.0, math.nan]])
def test_pick_rejects(bad: list[float]) -> None:
    with pytest.raises(MetricError):
        metrics.pick(bad)


# ---------------------------------------------------------------- multiple choice


def test_choice_metrics_definitions() -> None:
    # " ab" → 2 characters, 2 bytes; " çççç" → 4 characters, 8 bytes; " x" → 1 character, 1 byte
    lps, choices, toks = [-4.0, -7.0, -2.5], [" ab", " çççç", " x"], [4, 2, 1]
    out = metrics.choice_metrics(lps, choices, 1, num_tokens=toks, unconditional=[-1.0, -6.5, -1.0])
    assert out["pred"] == 2 and out["acc"] == 0.0  # -2.5 is the largest sum
    assert out["pred_norm"] == 1 and out["acc_norm"] == 1.0  # per character: -2, -1.75, -2.5
    assert out["pred_bytes"] == 1 and out["acc_bytes"] == 1.0  # per byte: -2, -0.875, -2.5
    assert out["pred_token"] == 0 and out["acc_token"] == 0.0  # per token: -1, -3.5, -2.5
    assert out["pred_pmi"] == 1 and out["acc_pmi"] == 1.0  # PMI: -3, -0.5, -1.5
    assert not any(out[k] for k in ("tie", "tie_norm", "tie_bytes", "tie_token", "tie_pmi"))
    assert set(out) == {f"{p}{s}" for s in metrics.CHOICE_METRICS.values() for p in ("acc", "pred", "tie")}
    no_pmi = metrics.choice_metrics(lps, choices, 1, num_tokens=toks)
    assert "acc_pmi" not in no_pmi and "pred_pmi" not in no_pmi
    assert {k: v for k, v in out.items() if not k.endswith("_pmi")} == no_pmi


def test_choice_metrics_bytes_differ_from_characters() -> None:
    # "ไก่" is 3 characters and 9 UTF-8 bytes, "hen" 3 characters and 3 bytes
    out = metrics.choice_metrics([-6.0, -4.0], [" ไก่", " hen"], 0, num_tokens=[2, 2])
    # per character: -2 < -1.33, so "hen"; per byte: -0.67 > -1.33, so "ไก่"
    assert (out["pred"], out["pred_norm"], out["pred_bytes"]) == (1, 1, 0)
    assert (out["acc"], out["acc_norm"], out["acc_bytes"]) == (0.0, 0.0, 1.0)
    # only the leading delimiter is left out: inner and trailing spaces count
    out = metrics.choice_metrics([-3.0, -2.0], ["\na b ", " ab"], 0, num_tokens=[1, 1])
    assert out["pred_norm"] == 0  # -3/4 > -2/2


def test_choice_metrics_ties_and_counts() -> None:
    rows = [
        metrics.choice_metrics([-2.0, -2.0 + 1e-7], [" a", " b"], 1, num_tokens=[1, 1]),
        metrics.choice_metrics([-2.0, -4.0], [" a", " bb"], 0, num_tokens=[1, 1]),
    ]
    assert rows[0]["pred"] == 0 and rows[0]["tie"] and rows[0]["acc"] == 0.0
    assert rows[1]["tie_norm"] and not rows[1]["tie"] and not rows[1]["tie_token"]  # -2/1 == -4/2 per character
    assert metrics.tie_counts(rows) == {"ties": 1, "ties_norm": 2, "ties_bytes": 2, "ties_token": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(logprobs=[], choices=[], answer=0, num_tokens=[]), "at least one choice"),
        (dict(logprobs=[-1.0, -2.0], choices=[" a"], answer=0, num_tokens=[1, 1]), "1 choices for 2 log-probabilities"),
        (dict(logprobs=[-1.0, -2.0], choices=[" a", " b"], answer=0, num_tokens=[1]), "1 num_tokens for 2"),
        (dict(logprobs=[-1.0], choices=[" a"], answer=0, num_tokens=[1], unconditional=[]), "0 unconditional for 1"),
        (dict(logprobs=[-1.0, -2.0], choices=[" a", " b"], answer=2, num_tokens=[1, 1]), "answer 2 is not a choice index below 2"),
        (dict(logprobs=[-1.0, -2.0], choices=[" a", " b"], answer=True, num_tokens=[1, 1]), "answer True"),
        (dict(logprobs=[-1.0, -2.0], choices=[" a", "  "], answer=0, num_tokens=[1, 1]), r"choice 1 \('  '\) has no characters"),
        (dict(logprobs=[-1.0, -2.0], choices=[" a", " b"], answer=0, num_tokens=[1, 0]), "choice 1: num_tokens 0"),
    ],
)
def test_choice_metrics_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(MetricError, match=message) as info:
        metrics.choice_metrics(**kwargs)
    assert isinstance(info.value, BabelplugError)


def _lm_eval_task(docs: dict):
    """A real lm-eval ConfigurableTask over in-memory docs (custom_dataset: no hub, no network)."""
    import datasets
    from lm_eval.api.task import ConfigurableTask

    config = {
        "task": "babelplug_parity", "dataset_path": "in-memory", "test_split": "test",
        "custom_dataset": lambda **_: datasets.DatasetDict({"test": datasets.Dataset.from_dict(docs)}),
        "output_type": "multiple_choice", "doc_to_text": "{{premise}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "label", "target_delimiter": " ",
        "metric_list": [{"metric": m} for m in ("acc", "acc_norm", "acc_bytes", "acc_mutual_info")],
    }  # fmt: skip
    return ConfigurableTask(config=config)


def test_choice_metrics_match_lm_eval_process_results() -> None:
    """The same log-likelihoods through lm-eval 0.4.13's process_results and choice_metrics give the same accuracies."""
    rng = random.Random(7)
    words = ["Paris", "ไก่ทอด", "我把灯关了", "İstanbul'a gitti", "x", "a much longer choice text", "çöp", "தமிழ்"]
    docs: dict[str, list] = {"premise": [], "choices": [], "label": []}
    for i in range(40):
        k = rng.randint(2, 4)
        docs["premise"].append(f"p{i}")
        docs["choices"].append(rng.sample(words, k))
        docs["label"].append(rng.randrange(k))
    task = _lm_eval_task(docs)
    differs = 0
    for doc in task.test_docs():
        k = len(doc["choices"])
        lls = [rng.uniform(-30, -1) for _ in range(k)]
        unc = [rng.uniform(-30, -1) for _ in range(k)]
        theirs = task.process_results(doc, [(x, False) for x in lls + unc])  # conditional, then unconditional
        # babelplug scores what lm-eval scores: target_delimiter + choice
        ours = metrics.choice_metrics(lls, [" " + c for c in doc["choices"]], doc["label"],
                                      num_tokens=[1] * k, unconditional=unc)  # fmt: skip
        assert (ours["acc"], ours["acc_norm"], ours["acc_bytes"], ours["acc_pmi"]) == (
            theirs["acc"], theirs["acc_norm"], theirs["acc_bytes"], theirs["acc_mutual_info"])  # fmt: skip
        differs += ours["pred"] != ours["pred_norm"] or ours["pred_norm"] != ours["pred_bytes"]
    assert differs >= 5  # the normalisations were really exercised


def test_ties_are_stable_where_lm_eval_flips() -> None:
    task = _lm_eval_task({"premise": ["p"], "choices": [["alpha", "beta!"]], "label": [1]})
    doc = task.test_docs()[0]
    for noise in (1e-7, -1e-7):
        lls = [-5.0, -5.0 + noise]
        lm_eval_acc = task.process_results(doc, [(x, False) for x in lls + [0.0, 0.0]])["acc"]
        ours = metrics.choice_metrics(lls, [" alpha", " beta!"], 1, num_tokens=[2, 2])
        assert ours["pred"] == 0 and ours["tie"] and ours["acc"] == 0.0
        assert lm_eval_acc == (1.0 if noise > 0 else 0.0)  # lm-eval's argmax follows the noise


# ---------------------------------------------------------------- means and standard errors


def test_summarize_mean_and_stderr() -> None:
    from lm_eval.api.metrics import mean_stderr

    rng = random.Random(3)
    rows = [{"acc": float(rng.random() < 0.6), "chrf": rng.uniform(0, 100), "tie": rng.random() < 0.1} for _ in range(57)]
    rows[5]["chrf"] = None
    del rows[9]["chrf"]
    got = stats.summarize(rows, ["acc", "chrf", "tie", "missing"])
    acc = [r["acc"] for r in rows]
    chrf = [r["chrf"] for r in rows if r.get("chrf") is not None]
    assert len(chrf) == 55
    assert got["acc"] == pytest.approx(sum(acc) / 57)
    assert got["acc_stderr"] == pytest.approx(statistics.stdev(acc) / math.sqrt(57), rel=1e-12)
    assert got["acc_stderr"] == pytest.approx(mean_stderr(acc), rel=1e-12)
    assert got["chrf"] == pytest.approx(statistics.fmean(chrf))
    assert got["chrf_stderr"] == pytest.approx(statistics.stdev(chrf) / math.sqrt(55), rel=1e-12)
    assert got["tie"] == pytest.approx(sum(r["tie"] for r in rows) / 57)
    assert got["missing"] is None and got["missing_stderr"] is None
    one = stats.summarize([{"acc": 1.0}], ["acc"])
    assert one == {"acc": 1.0, "acc_stderr": None}
    with pytest.raises(MetricError, match="row 1: metric 'acc': expected a number, got 'yes'"):
        stats.summarize([{"acc": 1.0}, {"acc": "yes"}], ["acc"])


# ---------------------------------------------------------------- corpus sacreBLEU

# FLORES-200 devtest lines 1-4 (CC BY-SA 4.0, NLLB Team et al. 2022) as references; the
# hypotheses are hand-made imperfect translations.
FLORES = {
    "eng_Latn": (
        [
            '"We now have 4-month-old mice that are non-diabetic that used to be diabetic," he added.',
            "Dr. Ehud Ur, professor of medicine at Dalhousie University in Halifax, Nova Scotia and chair of the clinical and scientific division of the Canadian Diabetes Association cautioned that the research is still in its early days.",
            "Like some other experts, he is skeptical about whether diabetes can be cured, noting that these findings have no relevance to people who already have Type 1 diabetes.",
            "On Monday, Sara Danius, permanent secretary of the Nobel Committee for Literature at the Swedish Academy, publicly announced during a radio program on Sveriges Radio in Sweden the committee, unable to reach Bob Dylan directly about winning the 2016 Nobel Prize in Literature, had abandoned its efforts to reach him.",
        ],
        [
            '"Now we have mice of 4 months that are not diabetic but were diabetic before," he added.',
            "Dr. Ehud Ur, a medicine professor at Dalhousie University in Halifax, Nova Scotia, who chairs the clinical and scientific division of the Canadian Diabetes Association, warned that the research is still early.",
            "Like other experts, he doubts that diabetes can be cured, and notes the findings are not relevant to people who have Type 1 diabetes already.",
            "On Monday Sara Danius, the permanent secretary of the Nobel Committee for Literature of the Swedish Academy, announced on a Sveriges Radio program that the committee had given up trying to reach Bob Dylan about his 2016 Nobel Prize in Literature.",
        ],
    ),
    "zho_Hans": (
        [
            "他补充道：“我们现在有 4 个月大没有糖尿病的老鼠，但它们曾经得过该病。”",
            "埃胡德·乌尔博士（新斯科舍省哈利法克斯市达尔豪西大学医学教授，加拿大糖尿病协会临床与科学部门教授）提醒，这项研究仍处在早期阶段。",
            "和其他一些专家一样，他对糖尿病能否治愈持怀疑态度。他指出，这些发现与已患有 1 型糖尿病的人无关。",
        ],
        [
            "他补充说：“我们现在有 4 个月大的老鼠，它们以前有糖尿病，现在没有了。”",
            "埃胡德·乌尔博士是达尔豪西大学医学教授，他提醒说这项研究还处在早期阶段。",
            "像其他专家一样，他怀疑糖尿病能否治愈，并指出这些发现与 1 型糖尿病患者无关。",
        ],
    ),
    "tha_Thai": (
        [
            "“ขณะนี้เรามีหนูอายุ 4 เดือนที่ไม่เป็นโรคเบาหวานซึ่งแต่ก่อนเคยเป็น” เขากล่าวเพิ่มเติม",
            "เขาก็เหมือนกับผู้เชี่ยวชาญคนอื่น ๆ ที่สงสัยว่าโรคเบาหวานจะสามารถรักษาให้หายขาดได้หรือไม่ โดยที่ทราบว่าผลการวิจัยเหล่านี้ไม่ได้เกี่ยวข้องกับผู้ที่มีโรคเบาหวานชนิดที่ 1 อยู่แล้ว",
            "แดเนียสกล่าวว่า \"ตอนนี้เราไม่ได้ทำอะไรเลย ฉันโทรและส่งอีเมลไปยังเพื่อนร่วมงานที่ใกล้ชิดที่สุดของเขา และได้รับคำตอบที่เป็นมิตรมาก ๆ กลับมา สำหรับตอนนี้ แค่นั้นก็เพียงพอแล้ว\"",
        ],
        [
            "เขากล่าวเพิ่มว่า “ตอนนี้เรามีหนูอายุ 4 เดือนที่เคยเป็นโรคเบาหวานแต่ไม่เป็นแล้ว”",
            "เขาเหมือนผู้เชี่ยวชาญคนอื่น ๆ ที่สงสัยว่าโรคเบาหวานจะรักษาหายได้หรือไม่ และผลการวิจัยไม่เกี่ยวกับผู้ที่เป็นโรคเบาหวานชนิดที่ 1",
            "แดเนียสกล่าวว่า \"ตอนนี้เราไม่ทำอะไร ฉันโทรและส่งอีเมลถึงเพื่อนร่วมงานของเขา และได้คำตอบที่เป็นมิตรมาก ตอนนี้แค่นั้นก็พอแล้ว\"",
        ],
    ),
}


def _sacrebleu_cli(tmp_path, refs: list[str], hyps: list[str], *args: str) -> list[dict]:
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("\n".join(refs) + "\n", encoding="utf-8")
    hyp.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-f", "json", *args],
                          capture_output=True, text=True, check=True)  # fmt: skip
    parsed = json.loads(done.stdout)
    return parsed if isinstance(parsed, list) else [parsed]


@pytest.mark.parametrize(("language", "tok"), [("eng_Latn", "13a"), ("zho_Hans", "zh"), ("tha_Thai", "char")])
def test_corpus_metrics_match_sacrebleu_cli(tmp_path, language: str, tok: str) -> None:
    refs, hyps = FLORES[language]
    assert metrics.bleu_tokenizer(language) == tok
    got = metrics.corpus_metrics(hyps, refs, ["bleu", "chrf", "chrf_pp"], language=language, bootstrap=100)
    bleu, chrf = _sacrebleu_cli(tmp_path, refs, hyps, "-m", "bleu", "chrf", "-tok", tok)
    (chrf_pp,) = _sacrebleu_cli(tmp_path, refs, hyps, "-m", "chrf", "--chrf-word-order", "2")
    for name, cli in (("bleu", bleu), ("chrf", chrf), ("chrf_pp", chrf_pp)):
        assert round(got[name], 1) == pytest.approx(cli["score"])  # the CLI prints one decimal
        assert got[f"{name}_signature"] == cli["signature"]
        assert got[f"{name}_stderr"] > 0
    assert f"tok:{tok}" in got["bleu_signature"] and "nw:2" in got["chrf_pp_signature"]
    assert 0 < got["bleu"] < 100 and got["chrf_pp"] != got["chrf"]
    json.dumps(got)  # serialises into results.json as it is


def test_corpus_bootstrap_equals_direct_resampling() -> None:
    """The stderr equals rescoring each resample with sacreBLEU's corpus_score, then the sample stddev."""
    from sacrebleu.metrics import BLEU, CHRF

    refs, hyps = FLORES["eng_Latn"][0] + FLORES["zho_Hans"][0], FLORES["eng_Latn"][1] + FLORES["zho_Hans"][1]
    got = metrics.corpus_metrics(hyps, refs, ["bleu", "chrf_pp"], bootstrap=40, seed=11)
    draws = stats.resamples(len(hyps), 40, 11)
    assert draws == stats.resamples(len(hyps), 40, 11) and draws != stats.resamples(len(hyps), 40, 12)
    for name, metric in (("bleu", BLEU()), ("chrf_pp", CHRF(word_order=2))):
        direct = [metric.corpus_score([hyps[i] for i in idx], [[refs[i] for i in idx]]).score for idx in draws]
        assert got[name] == pytest.approx(metric.corpus_score(hyps, [refs]).score, abs=1e-12)
        assert got[f"{name}_stderr"] == pytest.approx(statistics.stdev(direct), rel=1e-9)


def test_corpus_metrics_options_and_errors() -> None:
    refs, hyps = FLORES["eng_Latn"]
    multi = metrics.corpus_metrics(hyps, [[r, h] for r, h in zip(refs, hyps)], ["bleu"], bootstrap=0)
    assert multi["bleu"] == pytest.approx(100.0) and multi["bleu_stderr"] is None
    assert multi["bleu_signature"].startswith("nrefs:2|")
    one = metrics.corpus_metrics(hyps[:1], refs[:1], ["chrf"])
    assert one["chrf_stderr"] is None
    assert metrics.corpus_metrics(hyps, refs, ["bleu"], tokenize="char")["bleu_signature"].count("tok:char") == 1
    for call, message in [
        (lambda: metrics.corpus_metrics(hyps, refs, ["blue"]), "unknown corpus metric 'blue'; did you mean 'bleu'"),
        (lambda: metrics.corpus_metrics(hyps, refs[:2], ["bleu"]), "4 hypotheses for 2 references"),
        (lambda: metrics.corpus_metrics([], [], ["bleu"]), "at least one hypothesis"),
        (lambda: metrics.corpus_metrics(hyps, refs, ["bleu"], tokenize="13b"), "unknown sacrebleu BLEU tokenizer '13b'"),
        (lambda: metrics.corpus_metrics(hyps, [[r] for r in refs[:3]] + [[refs[3], refs[3]]], ["bleu"]), "segment 3: 2 references"),
    ]:
        with pytest.raises(MetricError, match=message):
            call()


def test_bleu_tokenizer_per_language() -> None:
    assert [metrics.bleu_tokenizer(c) for c in ("zh", "zho_Hant", "ja", "jpn_Jpan", "th", "mya_Mymr", "km", "lo")] == [
        "zh", "zh", "char", "char", "char", "char", "char", "char"]  # fmt: skip
    assert {metrics.bleu_tokenizer(c) for c in ("en", "fra_Latn", "ko", "hin_Deva", None)} == {"13a"}


def test_sentence_chrf_is_sacrebleus() -> None:
    import sacrebleu

    for hyp, ref in [("I like you", "I love you."), ("你好世界", "你好"), ("เล่นหุ้น", "เล่นหุ้นยังไง"), ("x", "abc")]:
        expected = sacrebleu.sentence_chrf(hyp, [ref]).score
        assert metrics.sentence_chrf(hyp, ref) == pytest.approx(expected, abs=1e-12)
        assert metrics.chrf(hyp, ref) == metrics.sentence_chrf(hyp, ref)  # the runner's old name, an alias
    assert metrics.exact_match(" I love you. ", "I love you.") == 1.0 and metrics.exact_match("a", "b") == 0.0


# ---------------------------------------------------------------- perplexity


def test_perplexity_metrics_match_lm_eval() -> None:
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
    from lm_eval.api.task import Task

    texts = [FLORES["eng_Latn"][0][i] for i in range(4)] + FLORES["tha_Thai"][0] + [" leading and trailing "]
    rng = random.Random(5)
    docs = [(-rng.uniform(0.5, 1.5) * len(t), stats.count_bytes(t), stats.count_words(t)) for t in texts]
    for t, (_, b, w) in zip(texts, docs):
        assert (b, w) == (Task.count_bytes(t), Task.count_words(t))
    got = stats.perplexity_metrics(docs, bootstrap=60, seed=2)
    lp, nb, nw = (sum(d[i] for d in docs) for i in range(3))
    assert got["word_perplexity"] == pytest.approx(math.exp(-lp / nw), rel=1e-12)
    assert got["byte_perplexity"] == pytest.approx(math.exp(-lp / nb), rel=1e-12)
    assert got["bits_per_byte"] == pytest.approx(-lp / (nb * math.log(2)), rel=1e-12)
    assert got["word_perplexity"] == pytest.approx(weighted_perplexity([(d[0], d[2]) for d in docs]), rel=1e-12)
    assert got["byte_perplexity"] == pytest.approx(weighted_perplexity([(d[0], d[1]) for d in docs]), rel=1e-12)
    assert got["bits_per_byte"] == pytest.approx(bits_per_byte([(d[0], d[1]) for d in docs]), rel=1e-12)
    direct = [
        -sum(docs[i][0] for i in idx) / (sum(docs[i][1] for i in idx) * math.log(2)) for idx in stats.resamples(len(docs), 60, 2)
    ]
    assert got["bits_per_byte_stderr"] == pytest.approx(statistics.stdev(direct), rel=1e-9)
    assert got["word_perplexity_stderr"] > 0 and got["byte_perplexity_stderr"] > 0
    assert stats.count_words("a b ") == 3  # lm-eval's definition, kept: the trailing space adds an empty word


def test_perplexity_errors() -> None:
    for docs, message in [
        ([], "no documents"),
        ([(-1.0, 0, 0)], "0 bytes in total"),
        ([(math.nan, 3, 1)], "document 0: log-probability nan"),
        ([(-1.0, 3, 1), (-1.0, -3, 1)], "document 1: n_bytes -3"),
        ([(-1.0, 3)], "document 0: expected"),
    ]:
        with pytest.raises(MetricError, match=message):
            stats.perplexity_metrics(docs)
    assert stats.perplexity_metrics([(-10.0, 5, 1)])["bits_per_byte_stderr"] is None
    assert stats.perplexity_metrics([(-5000.0, 900, 1), (-10.0, 5, 1)], bootstrap=10)["word_perplexity"] == math.inf
