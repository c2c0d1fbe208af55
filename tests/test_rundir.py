"""Run folders (babelplug.rundir): one per run, identity and weights digest, refusal, no run touching another's files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

import babelplug as bp
from babelplug import rundir
from babelplug.errors import RunFolderError

RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}(-\d+)?$")
KW = dict(languages=["th"], limit=5)  # 10 requests: chunks of 4, 4, 2


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setenv("BABELPLUG_CHUNK", "4")


def interrupted(model, monkeypatch, **kwargs):
    """A run stopped (KeyboardInterrupt) in its second chunk: one chunk is in partial.jsonl."""
    real, calls = model.score, []

    def score(requests):
        calls.append(len(requests))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(requests)

    monkeypatch.setattr(model, "score", score)
    with pytest.raises(KeyboardInterrupt):
        bp.run("xcopa", model, **{**KW, **kwargs})
    monkeypatch.setattr(model, "score", real)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.name != ".lock"}


def only_run(parent: Path) -> Path:
    (folder,) = [p for p in parent.iterdir() if p.is_dir()]
    return folder


@pytest.fixture
def other_model(xglm_dir, tmp_path):
    """A second model: the tiny XGLM copied under another name."""
    return bp.load(shutil.copytree(xglm_dir, tmp_path / "other-model"))


# --- default layout -----------------------------------------------------------


def test_default_runs_get_their_own_folders_and_finished_runs_are_never_touched(xglm, tmp_path):
    runs = tmp_path / "runs"
    first = bp.run("xcopa", xglm, runs=runs, **KW)
    assert first.output.parent == runs / "xcopa" / xglm.info.name and RUN_ID.match(first.output.name)
    assert sorted(p.name for p in first.output.iterdir()) == [".lock", "results.json", "run.json", "samples.jsonl"]
    before = snapshot(first.output)
    second = bp.run("xcopa", xglm, runs=runs, **KW)
    assert second.output != first.output and second.output.parent == first.output.parent
    assert snapshot(first.output) == before
    assert first.output.name.split("-")[1] == second.output.name.split("-")[1]  # same identity, same hash


def test_second_model_in_the_same_runs_folder_keeps_the_first_models_partial(xglm, other_model, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    interrupted(xglm, monkeypatch, runs=runs)
    mine = only_run(runs / "xcopa" / xglm.info.name)
    before = snapshot(mine)
    assert len((mine / "partial.jsonl").read_text().splitlines()) == 1 + 4
    theirs = bp.run("xcopa", other_model, runs=runs, **KW)
    assert theirs.output.parent == runs / "xcopa" / "other-model"
    assert snapshot(mine) == before
    seen: list = []
    real = xglm.score
    monkeypatch.setattr(xglm, "score", lambda reqs: seen.extend(reqs) or real(reqs))
    resumed = bp.run("xcopa", xglm, runs=runs, **KW)  # the one unfinished run of this identity
    assert resumed.output == mine and len(seen) == 10 - 4
    assert (mine / "results.json").is_file() and not (mine / "partial.jsonl").exists()


def test_several_matching_unfinished_runs_need_an_explicit_choice(xglm, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    interrupted(xglm, monkeypatch, runs=runs)
    one = only_run(runs / "xcopa" / xglm.info.name)
    two = shutil.copytree(one, one.with_name(one.name + "-copy"))
    with pytest.raises(RunFolderError, match="2 unfinished runs match this run: .*pass --resume DIR") as info:
        bp.run("xcopa", xglm, runs=runs, **KW)
    assert str(one) in str(info.value) and str(two) in str(info.value)
    fresh = bp.run("xcopa", xglm, runs=runs, resume=False, **KW)
    assert fresh.output not in (one, two)
    assert bp.run("xcopa", xglm, output=two, resume=True, **KW).output == two
    with pytest.raises(RunFolderError, match="overwrite applies to an explicit output folder"):
        bp.run("xcopa", xglm, runs=runs, overwrite=True, **KW)


def test_api_without_output_writes_nothing(xglm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bp.run("xcopa", xglm, **KW).output is None
    assert list(tmp_path.iterdir()) == []


# --- explicit output ----------------------------------------------------------


def test_explicit_output_with_another_run_is_refused_unless_overwrite(xglm, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupted(xglm, monkeypatch, output=out)
    before = snapshot(out)
    with pytest.raises(RunFolderError, match=r"holds a different run \(differs in: limit, records\); pass --overwrite"):
        bp.run("xcopa", xglm, output=out, languages=["th"], limit=4)
    with pytest.raises(RunFolderError, match=r"cannot resume: this folder holds a different run \(differs in: limit, records\)"):
        bp.run("xcopa", xglm, output=out, languages=["th"], limit=4, resume=True)
    assert snapshot(out) == before
    report = bp.run("xcopa", xglm, output=out, languages=["th"], limit=4, overwrite=True)
    assert report.results["n_samples"] == 4 and not (out / "partial.jsonl").exists()
    assert json.loads((out / "run.json").read_text())["limit"] == 4


def test_explicit_output_same_identity_resumes_and_a_finished_run_is_refused(xglm, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupted(xglm, monkeypatch, output=out)
    with pytest.raises(RunFolderError, match="holds this run, unfinished; resume it, or pass --overwrite"):
        bp.run("xcopa", xglm, output=out, resume=False, **KW)
    bp.run("xcopa", xglm, output=out, **KW)  # resumes
    finished = snapshot(out)
    with pytest.raises(RunFolderError, match=r"holds a finished run \(results.json\); pass --overwrite"):
        bp.run("xcopa", xglm, output=out, **KW)
    with pytest.raises(RunFolderError, match=r"nothing to resume: its run is finished"):
        bp.run("xcopa", xglm, output=out, resume=True, **KW)
    assert snapshot(out) == finished
    again = bp.run("xcopa", xglm, output=out, overwrite=True, **KW)
    assert (out / "samples.jsonl").read_bytes() == finished["samples.jsonl"][0] and again.output == out


def test_replaced_weights_are_a_different_run(xglm_dir, tmp_path, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(xglm_dir, tmp_path / "model")
    out, runs = tmp_path / "out", tmp_path / "runs"
    old = bp.load(folder)
    interrupted(old, monkeypatch, output=out)
    interrupted(old, monkeypatch, runs=runs)
    first = only_run(runs / "xcopa" / "model")
    kept = snapshot(out), snapshot(first)
    weights = folder / "model.safetensors"
    header = weights.read_bytes()[: 8 + int.from_bytes(weights.read_bytes()[:8], "little")]
    with safe_open(weights, "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.5  # a retrained checkpoint: same names, shapes and header
    save_file(tensors, weights, metadata=metadata)
    assert weights.read_bytes()[: len(header)] == header
    new = bp.load(folder)
    with pytest.raises(RunFolderError, match=r"holds a different run \(differs in: weights\)"):
        bp.run("xcopa", new, output=out, **KW)
    report = bp.run("xcopa", new, runs=runs, **KW)
    assert report.output != first and report.output.parent == first.parent
    assert (snapshot(out), snapshot(first)) == kept


def test_run_json_records_the_identity(xglm, xglm_dir, tmp_path):
    report = bp.run("xcopa", xglm, output=tmp_path, **KW)
    identity = json.loads((tmp_path / "run.json").read_text())
    assert identity["task"] == "xcopa" and identity["task_hash"] == report.results["task_hash"]
    assert identity["model"] == json.loads(json.dumps(xglm.info.as_dict()))
    assert identity["weights"] == rundir.weights_digest(xglm_dir) and identity["languages"] == ["th"]
    assert identity["limit"] == 5 and identity["seed"] == 1234


# --- pieces -------------------------------------------------------------------


def test_weights_digest(tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, folder / "model.safetensors")
    (folder / "config.json").write_text('{"d_model": 8}')
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02" + b"x" * 3000)
    (folder / "README.md").write_text("about")
    digest = rundir.weights_digest(folder)
    assert len(digest) == 64 and digest == rundir.weights_digest(folder)
    (folder / "README.md").write_text("about, edited")
    assert rundir.weights_digest(folder) == digest  # documentation is not identity
    changes = [
        lambda: (folder / "config.json").write_text('{"d_model": 16}'),
        lambda: (folder / "model.safetensors.index.json").write_text('{"weight_map": {"w": "x"}}'),
        lambda: save_file({"w": torch.ones(2, 3)}, folder / "model.safetensors"),
        lambda: os.utime(folder / "pytorch_model.bin", ns=(1, 1)),
        lambda: (folder / "tokenizer.json").write_text("{}"),
    ]
    seen = {digest}
    for change in changes:
        change()
        seen.add(rundir.weights_digest(folder))
    assert len(seen) == 1 + len(changes)
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:20])  # truncated
    assert len(rundir.weights_digest(folder)) == 64
    assert rundir.weights_digest(tmp_path / "missing") == "absent"
    manifest = rundir.weights_manifest(folder)
    assert set(manifest["pytorch_model.bin"]) == {"size", "mtime_ns", "ends"} and "README.md" not in manifest


def test_identity_helpers():
    assert rundir.differences({"a": 1, "m": {"x": 1, "y": 2}}, {"a": 1, "m": {"x": 2, "y": 2}, "b": 3}) == ["b", "m.x"]
    assert rundir.differences([1], [2]) == ["(whole identity)"]
    assert rundir.canonical({"p": Path("/x"), "t": (1, 2)}) == {"p": "/x", "t": [1, 2]}
    assert rundir.identity_hash({"a": 1, "b": 2}) == rundir.identity_hash({"b": 2, "a": 1})
    assert rundir.run_id("3fa9c2d1" + "0" * 56, datetime(2026, 12, 2, 19, 15, tzinfo=timezone.utc)) == "20261202T191500Z-3fa9c2d1"
    assert rundir.slug("bigscience/mt0-small") == "bigscience--mt0-small" and rundir.slug("../x y") == "--x_y" and rundir.slug("..") == "_"


def test_lock_names_the_holder(tmp_path):
    fd = rundir.lock(tmp_path)
    assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(bp.BabelplugError, match=f"{tmp_path}: process {os.getpid()} is running into this folder"):
        rundir.lock(tmp_path)
    rundir.unlock(fd)
    rundir.unlock(rundir.lock(tmp_path))  # free again


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (lambda d: d.write_text("x"), {}, "not a folder"),
        (lambda d: (d.mkdir(), (d / "results.json").write_text("{}")), {}, "holds run files but no run.json"),
        (lambda d: (d.mkdir(), (d / "partial.jsonl").write_text('{"fingerprint": "x"}\n')), {}, "holds run files but no run.json"),
        (lambda d: (d.mkdir(), (d / "run.json").write_text("{not json")), {}, "run.json is corrupt"),
        (lambda d: (d.mkdir(), (d / "run.json").write_text("[]")), {}, "run.json is not a JSON object"),
        (lambda d: None, {"resume": True}, "nothing to resume: it holds no run"),
        (lambda d: d.mkdir(), {"resume": True, "overwrite": True}, "resume and overwrite exclude each other"),
    ],
)
def test_check_output_refusals(tmp_path, setup, kwargs, message):
    folder = tmp_path / "out"
    setup(folder)
    with pytest.raises(RunFolderError, match=re.escape(message)):
        rundir.check_output(folder, **kwargs)


# --- the CLI ------------------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BABELPLUG_CONFIG": os.devnull, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "babelplug.cli", "--threads", "1", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_cli_default_folder_and_refusals_before_loading(xglm_dir, tmp_path):
    out = cli("run", "xcopa", "--model", str(xglm_dir), "--languages", "th", "--limit", "2", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    folder = only_run(tmp_path / "babelplug-runs" / "xcopa" / xglm_dir.name)
    assert RUN_ID.match(folder.name) and f"results: {Path('babelplug-runs') / 'xcopa' / xglm_dir.name / folder.name / 'results.json'}" in out.stdout
    # A finished folder is refused before the model is even resolved (this model does not exist).
    out = cli("run", "xcopa", "--model", "no-such-model", "--output", str(folder), cwd=tmp_path)
    assert out.returncode == 2 and "RunFolderError" in out.stderr and "holds a finished run" in out.stderr
    out = cli("run", "xcopa", "--model", "no-such-model", "--overwrite", cwd=tmp_path)
    assert out.returncode == 2 and "--overwrite applies to --output DIR" in out.stderr
    out = cli("run", "xcopa", "--model", "no-such-model", "--resume", str(tmp_path / "nothing"), cwd=tmp_path)
    assert out.returncode == 2 and "nothing to resume: it holds no run" in out.stderr
