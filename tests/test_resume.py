"""The durable partial file (babelplug.resume) and kill-and-resume of a real CLI run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import babelplug as bp
from babelplug.errors import ConfigError, PartialFileError, RunLockedError
from babelplug.resume import ResumeWarning, chunk_size, read_partial, resumable

FP = "f" * 64


def square(batch, calls=None):
    if calls is not None:
        calls.append(list(batch))
    return [x * x for x in batch]


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the partial file ---------------------------------------------------------


def test_each_chunk_is_appended_whole_and_durable(tmp_path):
    partial = tmp_path / "partial.jsonl"
    seen = []

    def compute(batch):
        # When a chunk is computed, the file holds the header and every earlier chunk, in complete lines.
        data = partial.read_bytes()
        seen.append(data.count(b"\n"))
        assert data.endswith(b"\n")
        return square(batch)

    assert resumable(list(range(10)), compute, partial, FP, chunk=4) == [x * x for x in range(10)]
    assert seen == [1, 5, 9]
    rows = lines_of(partial)
    assert rows[0] == {"babelplug_partial": 1, "identity": FP}
    assert [r.get("end", False) for r in rows[1:]] == [False, False, False, True] * 2 + [False, True]


def test_resume_reuses_finished_chunks(tmp_path):
    partial = tmp_path / "partial.jsonl"
    calls: list = []

    def interrupted(batch):
        if calls:
            raise KeyboardInterrupt
        return square(batch, calls)

    with pytest.raises(KeyboardInterrupt):
        resumable(list(range(10)), interrupted, partial, FP, chunk=4)
    assert len(lines_of(partial)) == 1 + 4
    again: list = []
    assert resumable(list(range(10)), lambda b: square(b, again), partial, FP, chunk=4) == [x * x for x in range(10)]
    assert again == [[4, 5, 6, 7], [8, 9]]
    assert len(lines_of(partial)) == 1 + 10


@pytest.mark.parametrize("cut", ["half a line", "garbled last line"])
def test_torn_last_line_is_dropped_and_its_chunk_redone(tmp_path, cut):
    partial = tmp_path / "partial.jsonl"
    resumable(list(range(8)), square, partial, FP, chunk=4)
    data = partial.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    partial.write_bytes(data[: last + 7] if cut == "half a line" else data[:last] + b'{"key": "x", "val\x00\x00\n')
    calls: list = []
    with pytest.warns(ResumeWarning) as caught:
        assert resumable(list(range(8)), lambda b: square(b, calls), partial, FP, chunk=4) == [x * x for x in range(8)]
    messages = " ".join(str(w.message) for w in caught)
    assert "torn last line" in messages and "unfinished chunk" in messages
    assert calls == [[4, 5, 6, 7]]  # the whole second chunk, as in the uninterrupted run
    assert partial.read_bytes() == data  # truncated to the last finished chunk, then appended


def test_records_after_the_last_chunk_end_are_redone(tmp_path):
    partial = tmp_path / "partial.jsonl"
    resumable(list(range(8)), square, partial, FP, chunk=4)
    data = partial.read_bytes()
    rows = data.splitlines(keepends=True)
    partial.write_bytes(b"".join(rows[:7]))  # header, chunk 1, and 2 of chunk 2's 4 lines (power loss at a line boundary)
    with pytest.warns(ResumeWarning, match=r"dropped 2 record\(s\) of an unfinished chunk"):
        resumable(list(range(8)), square, partial, FP, chunk=4)
    assert partial.read_bytes() == data


def test_empty_file_starts_over(tmp_path):
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(b"")
    assert resumable([1, 2], square, partial, FP) == [1, 4]
    assert lines_of(partial)[0]["identity"] == FP


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [
        (b'{"fingerprint": "old"}\n{"key": "a", "value": 1}\n', 1, "not a babelplug partial-file header"),
        (b'["a", "list"]\n{"key": "a", "value": 1}\n', 1, "not a babelplug partial-file header"),
        (b"not json\n", 1, "not a babelplug partial-file header"),
        (b'{"babelplug_partial": 1, "identity": "' + b"e" * 64 + b'"}\n', 1, "written by another run"),
        (b'{"babelplug_partial": 1, "identity": "' + FP.encode() + b'"}\n{"key": "a", "val\n{"key": "b", "value": 1, "end": true}\n', 2, "corrupt record"),
        (b'{"babelplug_partial": 1, "identity": "' + FP.encode() + b'"}\n{"value": 1}\n{"key": "b", "value": 1, "end": true}\n', 2, "corrupt record"),
        (b'{"babelplug_partial": 1, "identity": "' + FP.encode() + b'"}\n\xff\xfe\n{"key": "b", "value": 1, "end": true}\n', 2, "corrupt record"),
    ],
)
def test_corrupt_file_is_a_typed_error_that_says_what_to_do(tmp_path, content, line, what):
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(content)
    with pytest.raises(PartialFileError) as info:
        read_partial(partial, FP)
    assert info.value.line == line and info.value.file == str(partial)
    assert f"partial.jsonl:{line}: {what}" in str(info.value)
    assert "delete it to start this run over, or pass --overwrite" in str(info.value)
    assert partial.read_bytes() == content  # never deleted or rewritten


def test_chunk_size_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BABELPLUG_CHUNK", "3")
    calls: list = []
    resumable(list(range(7)), lambda b: square(b, calls), tmp_path / "p.jsonl", FP)
    assert [len(b) for b in calls] == [3, 3, 1]
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv("BABELPLUG_CHUNK", bad)
        with pytest.raises(ConfigError, match=f"env BABELPLUG_CHUNK: expected a positive integer, got '{bad}'"):
            chunk_size()


def test_no_partial_file_writes_nothing(tmp_path):
    assert resumable(["a", "bb"], lambda b: [len(x) for x in b], None, "") == [1, 2]
    assert list(tmp_path.iterdir()) == []


# --- kill -9 and resume, through the CLI --------------------------------------

#: The babelplug CLI with a gate before each model call: the n-th call waits until
#: the file $GATE holds a number >= n. The test lets a child finish k chunks, sees
#: them in partial.jsonl, and kills it with SIGKILL while it waits inside its next
#: model call. The calls themselves are the real ones.
GATED_CLI = """
import os, sys, time
from pathlib import Path
from babelplug.model import Model
from babelplug.cli import main
gate, real, calls = Path(os.environ["GATE"]), Model.score, [0]
def score(self, requests):
    calls[0] += 1
    while int(gate.read_text() or 0) < calls[0]:
        time.sleep(0.005)
    return real(self, requests)
Model.score = score
sys.exit(main(sys.argv[1:]))
"""

CHUNK = 4
ARGS = ["--threads", "1", "run", "xcopa", "--languages", "th", "zh", "--limit", "20", "--no-progress"]


def _wait_for_lines(path: Path, n: int, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        count = path.read_bytes().count(b"\n") if path.is_file() else 0
        if count == n:
            return
        assert count < n, f"{path} has {count} lines, expected the child to stop at {n}"
        if child.poll() is not None:
            raise AssertionError(f"the child exited ({child.returncode}) early: {child.stderr.read()}")
        time.sleep(0.005)
    raise AssertionError(f"{path} never reached {n} lines")


def test_kill_at_several_points_and_resume_gives_identical_results(xglm, xglm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BABELPLUG_CHUNK", str(CHUNK))
    base = bp.run("xcopa", xglm, languages=["th", "zh"], limit=20, output=tmp_path / "base")  # uninterrupted
    gate, out = tmp_path / "gate", tmp_path / "run"
    env = {**os.environ, "BABELPLUG_CONFIG": os.devnull, "HF_HUB_OFFLINE": "1", "BABELPLUG_CHUNK": str(CHUNK), "GATE": str(gate)}
    command = [sys.executable, "-c", GATED_CLI, *ARGS, "--model", str(xglm_dir), "--output", str(out)]
    partial, done = out / "partial.jsonl", 0
    for allowed in (2, 5):  # chunks each child finishes before it is killed
        gate.write_text(str(allowed))
        child = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_lines(partial, 1 + CHUNK * (done + allowed), child)
        if done == 0:  # meanwhile a second run into the same folder fails at once, naming the holder
            second = subprocess.run([sys.executable, "-m", "babelplug.cli", *ARGS, "--model", str(xglm_dir), "--output", str(out)],
                                    env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
            assert second.returncode == 2
            assert f"RunLockedError: {out}: process {child.pid} is running into this folder" in second.stderr
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
        assert not (out / "results.json").exists() and not (out / "samples.jsonl").exists()
        done += allowed
    # A torn write on top: half of the last line is lost.
    data = partial.read_bytes()
    partial.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1 + 9])
    gate.write_text("1000000")
    last = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stderr
    assert "torn last line" in last.stderr and "dropped 3 record(s) of an unfinished chunk" in last.stderr
    assert (out / "samples.jsonl").read_bytes() == (tmp_path / "base" / "samples.jsonl").read_bytes()
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == base.metrics and results["per_language"] == base.per_language
    assert results["n_samples"] == 40 and results["n_requests"] == 80
    assert sorted(p.name for p in out.iterdir()) == [".lock", "results.json", "run.json", "samples.jsonl"]


def test_locked_folder_refuses_a_run_after_loading_too(xglm, tmp_path):
    from babelplug import rundir

    out = tmp_path / "out"
    out.mkdir()
    fd = rundir.lock(out)
    try:
        with pytest.raises(RunLockedError, match=f"process {os.getpid()} is running into this folder") as info:
            bp.run("xcopa", xglm, languages=["th"], limit=2, output=out)
        assert info.value.pid == os.getpid() and info.value.folder == str(out)
    finally:
        rundir.unlock(fd)
    assert not (out / "run.json").exists()
    bp.run("xcopa", xglm, languages=["th"], limit=2, output=out)  # released: it runs
    assert (out / "results.json").is_file()
