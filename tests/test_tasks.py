"""Task specs, templates and the multiple-choice runner."""

from __future__ import annotations

import json

import pytest

import babelplug as bp
from babelplug import templates
from babelplug.runner import build_items, requests_of, select_languages

LANGS = ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"]


def test_template_syntax():
    rec = {"premise": "Il pleut.", "question": "effect", "label": 1}
    variables = {"connector": {"cause": "perché", "effect": "quindi"}, "sep": " "}
    assert templates.render("{premise|strip_final_punct}{sep}{connector[question]}", rec, variables) == "Il pleut quindi"
    assert templates.render("{{literal}} {label}", rec, variables) == "{literal} 1"
    assert templates.names("{a|lower_first} {b[c]}") == {"a", "b", "c"}
    for bad in ("{a", "{a|nope}", "{1abc}", "}"):
        with pytest.raises(templates.TemplateError):
            templates.names(bad)


def test_strip_final_punct_never_deletes_a_real_character():
    assert templates.strip_final_punct("ผู้ชายเปิดก๊อกนํ้า") == "ผู้ชายเปิดก๊อกนํ้า"
    assert templates.strip_final_punct("我想节约能源。") == "我想节约能源"
    assert templates.strip_final_punct("It rained.") == "It rained"
    assert templates.strip_final_punct("Why?") == "Why"


def test_xcopa_prompts_are_faithful_in_every_language():
    task = bp.load_task("xcopa")
    assert task.languages == LANGS
    items = build_items(task, LANGS, None, None)
    assert len(items) == 1100
    for it in items:
        record = json.loads(open(it.file, encoding="utf-8").read().splitlines()[it.line - 1])
        premise = record["premise"]
        kept = premise[:-1] if premise[-1] in templates.FINAL_PUNCT else premise
        assert it.context.startswith(kept)  # only a real final mark is ever dropped
        if it.language in ("zh", "th"):
            assert " " not in it.context[len(kept) :] and not it.choices[0].startswith(" ")
        else:
            assert it.context[len(kept)] == " " and it.choices[0].startswith(" ")
    thai = [it for it in items if it.language == "th"]
    assert thai[0].context == "ผู้ชายเปิดก๊อกนํ้าดังนั้น"  # effect connector, nothing deleted, no space
    assert len(requests_of(task, items)) == 2200


def test_copa_xglm_scores_whole_sequences():
    task = bp.load_task("copa-xglm")
    items = build_items(task, ["it"], None, 1)
    (ctx1, cont1), _ = requests_of(task, items)
    assert ctx1 == "" and cont1 == items[0].context + "\n" + items[0].choices[0].lstrip("\n")


def test_unknown_language():
    with pytest.raises(bp.BabelplugError, match="no language 'xx'"):
        select_languages(bp.load_task("xcopa"), ["xx"])


def test_run_writes_results_and_samples(xglm, tmp_path):
    report = bp.run("xcopa", xglm, languages=["th", "zh"], limit=10, output=tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("metrics", "per_language", "model", "backend", "hub", "revision", "versions", "seed", "task_hash"):
        assert key in results
    assert results["per_language"]["th"]["n"] == 10 and set(results["metrics"]) == {"acc", "acc_norm", "acc_stderr", "acc_norm_stderr"}
    accs = [json.loads(line)["acc"] for line in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    mean = sum(accs) / len(accs)
    assert results["metrics"]["acc_stderr"] == pytest.approx((sum((a - mean) ** 2 for a in accs) / (len(accs) - 1) / len(accs)) ** 0.5)
    assert set(results["ties"]) >= {"ties", "ties_norm"}
    assert results["n_truncated"] == 0 and results["n_resplit"] == 0  # short XCOPA contexts; XGLM splits cleanly
    assert results["task_hash"] == bp.load_task("xcopa").hash
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 20 and samples[0]["language"] == "th"
    acc = sum(s["acc"] for s in samples) / 20
    assert report.metrics["acc"] == pytest.approx(acc)
    assert not (tmp_path / "partial.jsonl").exists()


def test_metrics_follow_scores(xglm, tmp_path):
    report = bp.run("xcopa", xglm, languages=["it"], limit=5)
    for s in report.samples:
        assert s["pred"] == max(range(2), key=lambda i: s["logprobs"][i])
        norm = [lp / len(c) for lp, c in zip(s["logprobs"], s["choices"])]
        assert s["pred_norm"] == max(range(2), key=lambda i: norm[i])


def test_interrupted_run_resumes_without_losing_work(xglm, tmp_path, monkeypatch):
    from babelplug import runner

    monkeypatch.setenv("BABELPLUG_CHUNK", "8")
    calls = {"n": 0}
    real_score = xglm.score

    def flaky(requests):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_score(requests)

    monkeypatch.setattr(xglm, "score", flaky)
    with pytest.raises(KeyboardInterrupt):
        bp.run("xcopa", xglm, languages=["vi"], limit=10, output=tmp_path)
    partial = (tmp_path / "partial.jsonl").read_text().splitlines()
    assert len(partial) == 1 + 16  # fingerprint + two finished chunks

    seen = []
    monkeypatch.setattr(xglm, "score", lambda reqs: seen.extend(reqs) or real_score(reqs))
    resumed = bp.run("xcopa", xglm, languages=["vi"], limit=10, output=tmp_path)
    assert len(seen) == 20 - 16
    monkeypatch.setattr(xglm, "score", real_score)
    clean = bp.run("xcopa", xglm, languages=["vi"], limit=10)
    flat = [lp for s in resumed.samples for lp in s["logprobs"]]
    assert flat == pytest.approx([lp for s in clean.samples for lp in s["logprobs"]], abs=1e-5)


def test_generation_task_runs_card_prompts(xglm, tmp_path):
    report = bp.run("mt0-prompts", xglm, output=tmp_path)
    assert len(report.samples) == 9
    first = report.samples[0]
    assert first["prompt"] == "Translate to English: Je t’aime." and first["target"] == "I love you."
    assert first["output"] == xglm.generate([first["prompt"]], max_new_tokens=32)[0]
    scored = [s["chrf"] for s in report.samples if "chrf" in s]
    assert len(scored) == 1 and report.metrics["chrf"] == pytest.approx(scored[0])
    assert report.per_language["vi"] == {"exact_match": None, "chrf": None, "exact_match_stderr": None, "chrf_stderr": None, "n": 1}
    assert json.loads((tmp_path / "results.json").read_text())["kind"] == "generation"


def test_chat_task_uses_the_models_chat_format(xglm):
    report = bp.run("card-chat", xglm)
    assert [s["language"] for s in report.samples] == ["zh", "th"]
    assert report.samples[1]["prompt"] == xglm.format_chat([{"role": "user", "content": "เล่นหุ้นยังไงให้รวย"}])


def test_generation_parameters_in_a_task_are_checked(tmp_path):
    spec = json.loads(bp.load_task("mt0-prompts").path.read_text())
    spec["generation"]["top_p"] = 2
    bad = tmp_path / "gen.json"
    bad.write_text(json.dumps(spec))
    with pytest.raises(bp.BabelplugError, match=r"gen\.json: \$\.generation\.top_p: 2 is greater than the maximum of 1"):
        bp.load_task(bad)
    spec["generation"]["top_p"] = 0.9
    spec["metrics"] = ["acc"]
    bad.write_text(json.dumps(spec))
    with pytest.raises(bp.BabelplugError, match=r"\$\.metrics\[0\]: 'acc' is not one of \['exact_match', 'chrf'\]"):
        bp.load_task(bad)


def test_chrf_matches_sacrebleu():
    import sacrebleu
    from babelplug.metrics import chrf, exact_match

    scorer = sacrebleu.metrics.CHRF()
    pairs = [("I love you.", "I love you."), ("I like you", "I love you."), ("你好世界", "你好"),
             ("the cat sat on the mat", "a cat is on the mat"), ("x", "abc"), ("เล่นหุ้น", "เล่นหุ้นยังไง")]  # fmt: skip
    for hyp, ref in pairs:
        assert chrf(hyp, ref) == pytest.approx(scorer.sentence_score(hyp, [ref]).score, abs=1e-9)
    assert exact_match(" I love you. ", "I love you.") == 1.0
