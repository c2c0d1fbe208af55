"""Task data sources: local JSONL/JSON/CSV/Parquet files, and datasets in the HuggingFace and
ModelScope hub caches read through the real ``datasets`` and ``MsDataset`` code, offline.

The data is a committed slice of XStoryCloze (tests/data/xstorycloze: zh and ru, train and eval).
At test time it is laid out as each hub's cache holds a dataset: parquet files and a README with
``configs:``, under ``datasets--{org}--{name}/{blobs,refs,snapshots}`` (HuggingFace, snapshot
files are symlinks to blobs) and ``datasets/{owner}--{name}/snapshots/master/`` (ModelScope).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

import babelplug as bp
from babelplug import hubs
from babelplug.cli import main
from babelplug.errors import DataError, DataSourceError, SpecError
from babelplug.runner import build_items
from babelplug.sources import download_data, load_records, resolve_source

DATA = Path(__file__).parent / "data" / "xstorycloze"
TASK = DATA / "task.json"
HF_ID, MS_ID = "juletxara/xstory_cloze", "babelplug-test/xstory_cloze"
LANGS, SPLITS = ("zh", "ru"), ("train", "eval")


def slice_rows(lang: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{split}.{lang}.jsonl").read_text(encoding="utf-8").splitlines()]


def dataset_files(dest: Path) -> None:
    """The dataset repository's files: per-language parquet files and a README declaring the configs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    configs = ""
    for lang in LANGS:
        configs += f"- config_name: {lang}\n  data_files:\n"
        for split in SPLITS:
            path = dest / lang / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(slice_rows(lang, split)), path)
            configs += f"  - split: {split}\n    path: {lang}/{split}-*.parquet\n"
    (dest / "README.md").write_text(f"---\nlicense: cc-by-sa-4.0\nconfigs:\n{configs}---\n# XStoryCloze (slice)\n", encoding="utf-8")


def hf_layout(files: Path, cache: Path, repo_id: str, revision: str = "main") -> Path:
    """``files`` as huggingface_hub caches a dataset repo: blobs by sha256, snapshot symlinks, refs/<revision>."""
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    digests = {p.relative_to(files).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files.rglob("*")) if p.is_file()}
    commit = hashlib.sha1(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, digest in digests.items():
        blob, link = repo / "blobs" / digest, snapshot / name
        shutil.copyfile(files / name, blob)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit, encoding="ascii")
    return snapshot


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data-caches")
    dataset_files(root / "repo")
    ms_snapshot = root / "ms" / "datasets" / MS_ID.replace("/", "--") / "snapshots" / "master"
    shutil.copytree(root / "repo", ms_snapshot)  # modelscope writes plain files
    return {"hf": root / "hf", "ms": root / "ms", "hf_snapshot": hf_layout(root / "repo", root / "hf", HF_ID),
            "ms_snapshot": ms_snapshot, "arrow": root / "arrow"}  # fmt: skip


@pytest.fixture
def env(monkeypatch, caches, tmp_path):
    """Hub caches at the test layouts, offline, no config file; ``datasets`` writes its Arrow cache under tmp."""
    import datasets

    monkeypatch.setenv("HF_HUB_CACHE", str(caches["hf"]))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(caches["ms"]))
    monkeypatch.setenv("BABELPLUG_OFFLINE", "1")
    monkeypatch.delenv("BABELPLUG_HUB", raising=False)
    monkeypatch.setenv("BABELPLUG_CONFIG", os.devnull)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", caches["arrow"])
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture(scope="module")
def task():
    return bp.load_task(TASK)


def hub_only(tmp_path: Path, ids: dict[str, str]) -> Path:
    spec = json.loads(TASK.read_text(encoding="utf-8"))
    del spec["data"]["path"], spec["$schema"]
    spec["data"]["hub"] = ids
    path = tmp_path / "hub-only.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def test_hf_and_modelscope_layouts_give_identical_records(env, task):
    for lang in LANGS:
        for split in SPLITS:
            hf = load_records(task, lang, split, hub="huggingface")
            ms = load_records(task, lang, split, hub="modelscope")
            local = load_records(task, lang, split)
            expected = slice_rows(lang, split)
            assert [dict(r.fields) for r in hf] == [dict(r.fields) for r in ms] == [dict(r.fields) for r in local] == expected
            assert [r.index for r in hf] == [r.index for r in ms] == list(range(len(expected)))
            assert [r.line for r in hf] == [r.line for r in local] == list(range(1, len(expected) + 1))
            assert {r.split for r in hf + ms + local} == {split}
            assert hf[0].file == f"huggingface:{HF_ID}/{lang}:{split}" and ms[0].file == f"modelscope:{MS_ID}/{lang}:{split}"
            assert local[0].file == str(DATA / f"{split}.{lang}.jsonl")
    # the same items for the runner, whichever hub
    items = {h: build_items(task, list(LANGS), None, 5, hub=h) for h in ("huggingface", "modelscope", "local")}
    assert [(i.context, i.choices, i.answer) for i in items["huggingface"]] == [(i.context, i.choices, i.answer) for i in items["modelscope"]]
    assert [(i.context, i.choices, i.answer) for i in items["huggingface"]] == [(i.context, i.choices, i.answer) for i in items["local"]]
    assert len(items["local"]) == 10


def test_sources_resolve_to_the_cached_snapshots(env, task, caches):
    hf = resolve_source(task, "zh", hub="huggingface")
    assert (hf.hub, hf.ref.dataset, hf.ref.subset, hf.ref.split, hf.ref.revision) == ("huggingface", HF_ID, "zh", "eval", "main")
    ms = resolve_source(task, "ru", "train", hub="modelscope")
    assert (ms.ref.dataset, ms.ref.revision, ms.split) == (MS_ID, "master", "train")
    assert ms.as_dict()["source"] == f"modelscope:{MS_ID}/ru:train"
    from babelplug.datahubs import cached_snapshot
    from babelplug.manager import registry

    assert cached_snapshot(registry().hubs["huggingface"], hf.ref) == caches["hf_snapshot"]
    assert cached_snapshot(registry().hubs["modelscope"], ms.ref) == caches["ms_snapshot"]


def test_local_jsonl_json_csv_parquet_give_the_same_records(env, task, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = slice_rows("ru", "eval")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n\n" for r in rows), encoding="utf-8")
    (tmp_path / "d.json").write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    with (tmp_path / "d.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for suffix in ("jsonl", "json", "csv", "parquet"):
        records = load_records(task, "ru", data=tmp_path / f"d.{suffix}")
        assert [dict(r.fields) for r in records] == rows, suffix  # CSV: answer_right_ending becomes 1/2 as the schema says
        assert [r.index for r in records] == list(range(len(rows)))
    jsonl = load_records(task, "ru", data=tmp_path / "d.jsonl")
    assert [r.line for r in jsonl] == [2 * i + 1 for i in range(len(rows))]  # blank lines skipped, real line numbers
    text = (tmp_path / "d.json").read_text(encoding="utf-8").splitlines()
    for r in load_records(task, "ru", data=tmp_path / "d.json"):
        assert text[r.line - 1].strip() == "{"  # each array element at its own line
    assert [r.line for r in load_records(task, "ru", data=tmp_path / "d.csv")] == list(range(2, len(rows) + 2))
    assert len(load_records(task, "ru", data=tmp_path / "d.parquet", limit=3)) == 3


def test_which_source_wins(env, task, tmp_path):
    assert resolve_source(task, "zh").hub is None  # the task's local copy by default
    env.setenv("BABELPLUG_HUB", "modelscope")  # a global hub switch is for weights: the local copy stays
    assert resolve_source(task, "zh").hub is None
    assert resolve_source(task, "zh", hub="huggingface").hub == "huggingface"  # argument
    config = tmp_path / "babelplug.toml"
    config.write_text('[tasks."xstorycloze-slice"]\nhub = "modelscope"\nrevision = "v1"\n', encoding="utf-8")
    env.setenv("BABELPLUG_CONFIG", str(config))
    src = resolve_source(task, "zh")
    assert (src.hub, src.ref.revision) == ("modelscope", "v1") and "[tasks." in src.sources["data"]
    assert resolve_source(task, "zh", hub="local").hub is None  # the argument beats the table; local = the file
    env.setenv("BABELPLUG_CONFIG", os.devnull)
    only = bp.load_task(hub_only(tmp_path, {"huggingface": HF_ID, "modelscope": MS_ID}))
    assert resolve_source(only, "zh").hub == "modelscope"  # hub-only task: the configured hub
    env.delenv("BABELPLUG_HUB")
    assert resolve_source(only, "zh").hub == "huggingface"  # default hub
    hf_only = bp.load_task(hub_only(tmp_path, {"huggingface": HF_ID}))
    env.setenv("BABELPLUG_HUB", "modelscope")
    src = resolve_source(hf_only, "zh")
    assert src.hub == "huggingface" and "first hub" in src.sources["data"]  # configured hub has no id: fall back
    with pytest.raises(DataSourceError, match=r"task 'xstorycloze-slice' has no dataset on hub 'modelscope' \(from argument\); it is on: huggingface"):
        resolve_source(hf_only, "zh", hub="modelscope")
    with pytest.raises(DataSourceError, match=r"no local data file \(data\.path\) for hub 'local'"):
        resolve_source(hf_only, "zh", hub="local")
    assert [dict(r.fields) for r in load_records(hf_only, "zh")] == slice_rows("zh", "eval")


@pytest.mark.parametrize("hub", ["huggingface", "modelscope"])
def test_uncached_dataset_offline_fails_at_once_naming_it(env, tmp_path, hub):
    missing = bp.load_task(hub_only(tmp_path, {hub: "someone/not-cached"}))
    started = time.perf_counter()
    with pytest.raises(DataSourceError) as err:
        load_records(missing, "zh", "eval")
    assert time.perf_counter() - started < 5  # an upper bound: no network wait, no retries
    cache = os.environ["HF_HUB_CACHE" if hub == "huggingface" else "MODELSCOPE_CACHE"]
    message = str(err.value)
    for part in (f"hub {hub!r}", "dataset 'someone/not-cached'", "subset 'zh'", "split 'eval'", "not cached", "offline: no network call made", f"cache searched: {cache}"):
        assert part in message, part
    assert "cached datasets:" in message or "did you mean" in message  # what the cache does hold


def test_unknown_subset_split_and_revision(env, task):
    with pytest.raises(DataSourceError, match=r"no split 'evl' \(splits: train, eval\); did you mean 'eval'\?"):
        load_records(task, "zh", "evl", hub="huggingface")
    with pytest.raises(DataSourceError, match=r"no subset 'zhx' in .* \(subsets: zh, ru\); did you mean 'zh'\?"):
        load_records(task, "zhx", hub="modelscope")
    _table(env, 'revision = "v9"')
    with pytest.raises(DataSourceError, match=rf"dataset '{HF_ID}', subset 'zh', split 'eval', revision 'v9': not cached .*cached revisions of '{HF_ID}': main"):
        load_records(task, "zh", hub="huggingface")


def _table(env, line: str) -> Path:
    path = Path.cwd() / "babelplug.toml"
    path.write_text(f'[tasks."xstorycloze-slice"]\n{line}\n', encoding="utf-8")
    env.setenv("BABELPLUG_CONFIG", str(path))
    return path


def test_modelscope_legacy_layout(env, caches, tmp_path, task):
    legacy = tmp_path / "ms-legacy"
    shutil.copytree(caches["ms_snapshot"], legacy / "datasets" / "babelplug-test" / "xstory_cloze")  # modelscope <= 1.37
    env.setenv("MODELSCOPE_CACHE", str(legacy))
    assert [dict(r.fields) for r in load_records(task, "ru", "train", hub="modelscope")] == slice_rows("ru", "train")


def test_bad_local_data(env, task, tmp_path):
    good = slice_rows("zh", "eval")[0]
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes((json.dumps(good, ensure_ascii=False) + "\n").encode() * 2 + json.dumps({**good, "sentence_quiz1": "café"}).replace("\\u00e9", "\xe9").encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=r"latin1\.jsonl:3: field '-': not valid UTF-8 \(byte b'\\xe9' at byte \d+ of the line\)"):
        load_records(task, "zh", data=bad)
    csv_bad = tmp_path / "latin1.csv"
    csv_bad.write_bytes(b"input_sentence_1,sentence_quiz1\na,b\nc,caf\xe9\n")
    with pytest.raises(DataError, match=r"latin1\.csv:3: field '-': not valid UTF-8"):
        load_records(task, "zh", data=csv_bad)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataSourceError) as err:
        load_records(task, "zh", data=missing)
    assert "not found" in str(err.value) and str(missing) in str(err.value) and ":0:" not in str(err.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"task 'xstorycloze-slice', language 'zh', split 'eval': no records in .*empty\.jsonl"):
        load_records(task, "zh", data=empty)
    short = tmp_path / "short.csv"
    short.write_text("story_id,input_sentence_1,input_sentence_2,input_sentence_3,input_sentence_4,sentence_quiz1,answer_right_ending\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"short\.csv:1: field 'sentence_quiz2': required column missing \(columns: story_id, "):
        load_records(task, "zh", data=short)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{k: v for k, v in good.items() if k != "input_sentence_3"}]), tmp_path / "short.parquet")
    with pytest.raises(DataError, match=r"short\.parquet: field 'input_sentence_3': required column missing"):
        load_records(task, "zh", data=tmp_path / "short.parquet")
    (tmp_path / "wide.csv").write_text(",".join(good) + "\n" + ",".join(["x"] * (len(good) + 1)) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"wide\.csv:2: field '-': {len(good) + 1} cells, but the header \(line 1\) has {len(good)} columns"):
        load_records(task, "zh", data=tmp_path / "wide.csv")
    (tmp_path / "label.csv").write_text(",".join(good) + "\n" + ",".join(str(v) for v in {**good, "answer_right_ending": 3}.values()) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"label\.csv:2: field 'answer_right_ending': '3' is not one of \[1, 2\]"):
        load_records(task, "zh", data=tmp_path / "label.csv")
    (tmp_path / "d.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"unsupported format '\.txt' \(use \.jsonl, \.json, \.csv, \.parquet\)"):
        load_records(task, "zh", data=tmp_path / "d.txt")
    (tmp_path / "broken.json").write_text("[\n  " + json.dumps(good) + ',\n  {"a": \n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json:4: field '-': invalid JSON"):
        load_records(task, "zh", data=tmp_path / "broken.json")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataSourceError, match=r"junk\.parquet: not a readable Parquet file"):
        load_records(task, "zh", data=tmp_path / "junk.parquet")
    with pytest.raises(DataSourceError, match="limit must be at least 1"):
        load_records(task, "zh", limit=0)


def test_bad_hub_dataset_rows_name_the_dataset_and_row(env, tmp_path, task):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = tmp_path / "repo"
    dataset_files(files)
    rows = slice_rows("zh", "eval")
    rows[2]["answer_right_ending"] = 0
    pq.write_table(pa.Table.from_pylist(rows), files / "zh" / "eval-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist([{"story_id": "x"}]), files / "ru" / "eval-00000-of-00001.parquet")
    hf_layout(files, tmp_path / "hf", HF_ID)
    env.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(DataError, match=rf"huggingface:{HF_ID}/zh:eval:3: field 'answer_right_ending': 0 is not one of \[1, 2\]"):
        load_records(task, "zh", hub="huggingface")
    # datasets gives the split the subset's columns; the values this file lacks are nulls, i.e. missing
    with pytest.raises(DataError, match=rf"huggingface:{HF_ID}/ru:eval:1: field 'input_sentence_1': 'input_sentence_1' is a required property"):
        load_records(task, "ru", hub="huggingface")
    pq.write_table(pa.Table.from_pylist([{"story_id": "y"}]), files / "ru" / "train-00000-of-00001.parquet")
    shutil.copytree(files, tmp_path / "ms" / "datasets" / MS_ID.replace("/", "--") / "snapshots" / "master")
    env.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    with pytest.raises(DataError, match=rf"modelscope:{MS_ID}/ru:eval: field 'input_sentence_1': required column missing \(columns: story_id\)"):
        load_records(task, "ru", hub="modelscope")


def test_no_records_is_an_error_before_any_model_loads(env, task, tmp_path):
    (tmp_path / "zh.jsonl").write_text("", encoding="utf-8")

    def never():
        raise AssertionError("the model was loaded")

    with pytest.raises(DataSourceError, match="no records in"):
        bp.run(task, never, data=tmp_path / "zh.jsonl", languages=["zh"])


def test_task_data_block_is_checked(tmp_path):
    spec = json.loads(TASK.read_text(encoding="utf-8"))
    del spec["$schema"]
    spec["data"] = {"hub": {"huggingface": HF_ID}}  # a hub dataset needs its split
    (tmp_path / "t.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(SpecError, match=r"\$\.data"):
        bp.load_task(tmp_path / "t.json")
    spec["data"] = {"path": "{lang}.jsonl"}
    (tmp_path / "t.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(SpecError, match=r"\$\.data\.path: unknown placeholder \{lang\}"):
        load_records(bp.load_task(tmp_path / "t.json"), "zh")


def test_xcopa_ships_validation_and_test_splits():
    for lang in ("th", "zh"):
        assert len(load_records("xcopa", lang)) == 100  # validation, the default
        test = load_records("xcopa", lang, "test")
        assert len(test) == 500 and test[0].split == "test" and test[0].file.endswith(f"test.{lang}.jsonl")


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_command(env, caches, closed_port, capsys):
    assert main(["download", str(TASK)]) == 2
    assert "cannot download the data of task 'xstorycloze-slice': offline mode is on (from env BABELPLUG_OFFLINE)" in capsys.readouterr().err
    assert main(["download", "mt0-prompts", "--no-offline"]) == 2
    assert "reads only its local file" in capsys.readouterr().err
    # "online" against a closed loopback port: a cached dataset is used, an uncached one fails at once
    env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    hubs._PROBES.clear()
    assert main(["download", str(TASK), "--no-offline", "--hub", "huggingface", "-l", "zh"]) == 0
    assert f"zh: huggingface:{HF_ID}/zh:eval @ main: 20 records" in capsys.readouterr().out
    out = download_data(bp.load_task(TASK), ["ru"], "train", hub="huggingface", offline=False)
    assert [(lang, n) for lang, _, n in out] == [("ru", 10)]
    env.setenv("HF_HUB_CACHE", str(Path.cwd() / "empty-cache"))
    started = time.perf_counter()
    assert main(["download", "--task", str(TASK), "--no-offline", "--hub", "huggingface"]) == 2
    assert time.perf_counter() - started < 5
    assert f"http://127.0.0.1:{closed_port} is unreachable" in capsys.readouterr().err
