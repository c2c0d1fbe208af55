"""The babelplug command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def babelplug(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "babelplug.cli", *args], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=300,
    )  # fmt: skip


def test_help_and_models_do_not_import_torch():
    code = (
        "import sys\nfrom babelplug.cli import main\n"
        "for argv in (['models'], ['plugins'], ['tasks']): main(argv)\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "xglm-564m" in out.stdout and "huggingface:facebook/xglm-564M@main" in out.stdout
    assert "xcopa" in out.stdout and "copa-xglm" in out.stdout
    for command in ("plugins", "models", "tasks", "run", "score", "generate", "chat", "demo"):
        assert command in out.stdout


def test_run_writes_results(xglm_dir, tmp_path):
    out = babelplug("run", "xcopa", "--model", str(xglm_dir), "--languages", "th", "zh", "--limit", "4",
                    "--output", str(tmp_path), "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["languages"] == ["th", "zh"] and results["n_samples"] == 8
    assert "th" in out.stdout and "acc_norm" in out.stdout


def test_run_task_file_by_path(xglm_dir, tmp_path):
    from babelplug import load_task

    out = babelplug("run", str(load_task("copa-xglm").path), "--model", str(xglm_dir), "--languages", "it",
                    "--limit", "2", "--output", str(tmp_path), "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "results.json").read_text())["task"] == "copa-xglm"


def test_score_and_generate(xglm_dir):
    out = babelplug("score", "--model", str(xglm_dir), "--context", "我想节约能源。", "--continuation", "我把灯关了。")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["num_tokens"] > 0 and row["logprob"] < 0
    out = babelplug("generate", "--model", str(xglm_dir), "--max-new-tokens", "5", "--json", "I wanted to", "Mwen te")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "xcopaa", "--model", "x"], "UnknownTaskError: unknown task 'xcopaa'; did you mean 'xcopa'"),
        (["run", "xcopa", "--model", "xglm-546m"], "UnknownModelError: unknown model 'xglm-546m'; did you mean"),
        (["generate", "--model", "xglm", "-p", "temperature=-1", "hi"], "OptionError: generation parameters: $.temperature"),
        (["score", "--model", "xglm", "--backend", "xgml", "--continuation", "x"], "UnknownBackendError: unknown backend 'xgml'"),
    ],
)
def test_errors_are_one_line_with_status_2(args, message):
    out = babelplug(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("babelplug: error: ") and message in lines[0]
    assert "Traceback" not in out.stderr


def test_debug_shows_traceback():
    out = babelplug("--debug", "run", "xcopaa", "--model", "x")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_demo(tiny_root):
    out = babelplug("demo", "--limit", "3", "--languages", "th", "et", env={"BABELPLUG_TINY_CACHE": str(tiny_root)})
    assert out.returncode == 0, out.stderr
    assert "zero-shot XCOPA accuracy" in out.stdout and "xglm" in out.stdout
    assert [line.split()[0] for line in out.stdout.splitlines()[-3:]] == ["th", "et", "all"]


def test_score_file_errors_name_file_line_field(tmp_path):
    bad = tmp_path / "reqs.jsonl"
    bad.write_text('{"context": "a", "continuation": "b"}\n{"context": "a"}\n')
    out = babelplug("score", "--model", "xglm", "--file", str(bad))
    assert out.returncode == 2 and "reqs.jsonl:2: field 'continuation'" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_generation_task_with_parameter_override(xglm_dir, tmp_path):
    out = babelplug("run", "mt0-prompts", "--model", str(xglm_dir), "--max-new-tokens", "3", "--output", str(tmp_path), "--no-progress")
    assert out.returncode == 0, out.stderr
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 9 and all(len(s["output"]) < 40 for s in samples)
