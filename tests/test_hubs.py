"""Hubs: one tiny model in the HuggingFace cache, the ModelScope cache (current and legacy
layouts) and a plain folder, loaded through the real huggingface_hub and modelscope code.

Everything runs with outbound sockets blocked (conftest ``no_network``); "online" cases use a
closed port on the loopback address, so they never leave the machine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import babelplug as bp
from babelplug import hubs, tiny
from babelplug.cli import main
from babelplug.errors import ModelLoadError

REPO = "org/tiny-xglm"
REQUESTS = [
    ("I wanted to conserve energy.\n", "I shut off the light in the unoccupied room."),
    ("我想节约能源。\n", "我把空房间里的灯关了。"),
    ("M te vle konsève enèji.\n", "Mwen te femen limyè nan chanm lib la."),
]
POLYLM_HF, POLYLM_MS = "DAMO-NLP-MT/polylm-1.7b", "damo/nlp_polylm_1b7_text_generation"


@pytest.fixture(scope="module")
def caches(xglm_dir, tmp_path_factory) -> dict[str, Path]:
    """The tiny XGLM laid out four ways, as ``REPO`` and as the PolyLM 1.7B catalog ids."""
    root = tmp_path_factory.mktemp("caches")
    out = {"hf": root / "hf", "ms": root / "ms", "ms_legacy": root / "ms-legacy", "local": root / "local"}
    out["hf_snapshot"] = tiny.hf_cache_layout(xglm_dir, out["hf"], REPO)
    tiny.hf_cache_layout(xglm_dir, out["hf"], POLYLM_HF)
    out["ms_snapshot"] = tiny.ms_cache_layout(xglm_dir, out["ms"], REPO)
    tiny.ms_cache_layout(xglm_dir, out["ms"], POLYLM_MS)
    out["ms_legacy_folder"] = tiny.ms_cache_layout(xglm_dir, out["ms_legacy"], "org/tiny-xglm-1.0", legacy=True)
    import shutil

    out["local_folder"] = Path(shutil.copytree(xglm_dir, out["local"] / REPO))
    return out


@pytest.fixture
def env(monkeypatch, tmp_path, caches):
    """Point every hub at the test caches; offline unless a test says otherwise."""
    monkeypatch.setenv("HF_HUB_CACHE", str(caches["hf"]))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(caches["ms"]))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("BABELPLUG_LOCAL_ROOT", str(caches["local"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BABELPLUG_HUB", raising=False)
    monkeypatch.delenv("BABELPLUG_OFFLINE", raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def reference(xglm_dir):
    return bp.load(xglm_dir).score(REQUESTS)


@pytest.mark.parametrize(
    ("hub", "where"), [("huggingface", "hf_snapshot"), ("modelscope", "ms_snapshot"), ("local", "local_folder")]
)
def test_same_model_from_each_hub_by_one_env_var(env, caches, reference, hub, where):
    env.setenv("BABELPLUG_HUB", hub)
    model = bp.load(REPO, backend="xglm")
    assert model.info.hub == hub and model.info.path == caches[where]
    assert model.info.revision == {"huggingface": "main", "modelscope": "master", "local": None}[hub]
    assert model.score(REQUESTS) == reference


def test_huggingface_revision_by_commit(env, caches):
    commit = caches["hf_snapshot"].name
    model = bp.load(REPO, backend="xglm", revision=commit)
    assert model.info.revision == commit and model.info.path == caches["hf_snapshot"]


def test_modelscope_legacy_layout(env, caches, reference):
    """modelscope <= 1.37 kept ``models/{owner}/{name}`` with dots as ``___``; it is still read."""
    env.setenv("MODELSCOPE_CACHE", str(caches["ms_legacy"]))
    model = bp.load("org/tiny-xglm-1.0", backend="xglm", hub="modelscope")
    assert model.info.path == caches["ms_legacy_folder"] and model.info.path.name == "tiny-xglm-1___0"
    assert model.score(REQUESTS) == reference


def test_switch_by_one_config_key(env, caches, reference, tmp_path):
    config = tmp_path / "babelplug.toml"
    env.setenv("BABELPLUG_CONFIG", str(config))
    for hub, where in (("modelscope", "ms_snapshot"), ("huggingface", "hf_snapshot"), ("local", "local_folder")):
        config.write_text(f'hub = "{hub}"\n')
        model = bp.load(REPO, backend="xglm")
        assert (model.info.hub, model.info.path) == (hub, caches[where])
        assert model.score(REQUESTS) == reference


def test_cache_dirs_from_config_file_relative_to_it(env, caches, tmp_path):
    env.delenv("MODELSCOPE_CACHE")
    env.delenv("HF_HUB_CACHE")
    config = caches["ms"].parent / "babelplug.toml"
    config.write_text('hub = "modelscope"\n[hubs.modelscope]\ncache_dir = "ms"\n[hubs.huggingface]\ncache_dir = "hf"\n')
    env.setenv("BABELPLUG_CONFIG", str(config))
    assert bp.load(REPO, backend="xglm").info.path == caches["ms_snapshot"]
    assert bp.load(REPO, backend="xglm", hub="huggingface").info.path == caches["hf_snapshot"]


def test_catalog_ids_and_revisions_per_hub(env, caches, reference):
    """The PolyLM 1.7B entry: DAMO-NLP-MT/polylm-1.7b@main on HF, damo/nlp_polylm_1b7_text_generation@master on ModelScope."""
    hf = bp.load("polylm-1.7b", backend="xglm", hub="huggingface")
    ms = bp.load("polylm-1.7b", backend="xglm", hub="modelscope")
    assert (hf.info.revision, ms.info.revision) == ("main", "master")
    assert hf.info.path.parent.parent.name == "models--DAMO-NLP-MT--polylm-1.7b"
    assert ms.info.path == caches["ms"] / "models" / "damo--nlp_polylm_1b7_text_generation" / "snapshots" / "master"
    assert hf.score(REQUESTS) == ms.score(REQUESTS) == reference
    # A HuggingFace "main" is never sent to ModelScope.
    assert bp.load("polylm-1.7b", backend="xglm", hub="modelscope", revision="main").info.revision == "master"


def test_local_hub_finds_catalog_entries_by_name_or_hub_id(env, xglm_dir, tmp_path):
    import shutil

    shutil.copytree(xglm_dir, tmp_path / "xglm-564m")
    env.setenv("BABELPLUG_LOCAL_ROOT", str(tmp_path))
    assert bp.load("xglm-564m", hub="local").info.path == tmp_path / "xglm-564m"
    shutil.move(tmp_path / "xglm-564m", tmp_path / "facebook--x")
    (tmp_path / "facebook").mkdir()
    shutil.move(tmp_path / "facebook--x", tmp_path / "facebook" / "xglm-564M")
    assert bp.load("xglm", hub="local").info.path == tmp_path / "facebook" / "xglm-564M"
    with pytest.raises(ModelLoadError, match=r"hub 'local': no folder 'xglm-1.7b' or 'facebook/xglm-1.7B' under"):
        bp.load("xglm-1.7b", hub="local")


def test_existing_local_path_wins_over_configuration(env, xglm_dir):
    env.setenv("BABELPLUG_HUB", "modelscope")
    model = bp.load(xglm_dir)
    assert model.info.hub == "local" and model.info.path == xglm_dir


def test_no_id_on_hub_names_the_hubs_that_have_one(env):
    with pytest.raises(ModelLoadError, match=r"model 'xglm-564m' has no id on hub 'modelscope'; it is on: huggingface$"):
        bp.load("xglm-564m", hub="modelscope")
    env.setenv("BABELPLUG_HUB", "modelscope")
    with pytest.raises(ModelLoadError, match=r"no id on hub 'modelscope' \(hub from env BABELPLUG_HUB\); it is on: huggingface"):
        bp.load("xglm-564m")


@pytest.mark.parametrize("hub", ["huggingface", "modelscope"])
def test_offline_miss_is_immediate_and_names_everything(env, caches, hub):
    cache = caches["hf" if hub == "huggingface" else "ms"]
    revision = "main" if hub == "huggingface" else "master"
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        bp.load("org/not-cached", backend="xglm", hub=hub)
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert f"hub '{hub}': 'org/not-cached' at revision '{revision}' is not cached" in message
    assert "offline: no network call made" in message and f"cache searched: {cache}" in message
    assert elapsed < 1.0, f"offline miss took {elapsed:.3f} s"


@pytest.mark.parametrize(("hub", "cached"), [("huggingface", "main"), ("modelscope", "master")])
def test_offline_revision_not_cached(env, hub, cached):
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=rf"'{REPO}' at revision 'v9' is not cached .*; cached revisions of '{REPO}': {cached}$"):
        bp.load(REPO, backend="xglm", hub=hub, revision="v9")
    assert time.perf_counter() - started < 1.0


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("hub", ["huggingface", "modelscope"])
def test_online_without_network_uses_cache_or_fails_fast(env, caches, closed_port, hub, caplog):
    env.delenv("HF_HUB_OFFLINE")
    env.setenv("BABELPLUG_OFFLINE", "0")
    env.setenv("HF_ENDPOINT" if hub == "huggingface" else "MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    hubs._PROBES.clear()
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=rf"'org/not-cached' at revision '\w+' is not cached \(http://127.0.0.1:{closed_port} is unreachable: ConnectionRefusedError"):
        bp.load("org/not-cached", backend="xglm", hub=hub)
    assert time.perf_counter() - started < 1.0
    with caplog.at_level("WARNING", logger="babelplug.hubs"):
        model = bp.load(REPO, backend="xglm", hub=hub)
    assert model.info.path == caches["hf_snapshot" if hub == "huggingface" else "ms_snapshot"]
    assert "is unreachable" in caplog.text and "using the cached" in caplog.text


def test_download_command_errors(env, closed_port, capsys):
    assert main(["download", REPO]) == 2
    assert "cannot download 'org/tiny-xglm' from hub 'huggingface': offline mode is on (from env HF_HUB_OFFLINE)" in capsys.readouterr().err
    assert main(["download", REPO, "--hub", "local", "--no-offline"]) == 2
    assert "hub 'local' has nothing to download" in capsys.readouterr().err
    env.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    hubs._PROBES.clear()
    assert main(["--no-offline", "download", "org/not-cached", "--hub", "modelscope", "--revision", "v2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("babelplug: error: ModelLoadError: hub 'modelscope': 'org/not-cached' at revision 'v2' is not cached")
    assert len(err.strip().splitlines()) == 1
    assert main(["download", "polylm-1.7b", "--hub", "modelscope", "--no-offline"]) == 0  # cached: no network needed
    assert capsys.readouterr().out.strip().endswith("damo--nlp_polylm_1b7_text_generation/snapshots/master")


def test_cache_ls_lists_every_hub_with_sizes(env, caches, xglm_dir, capsys):
    size = sum(p.stat().st_size for p in xglm_dir.rglob("*") if p.is_file())
    assert main(["cache", "ls", "--json"]) == 0
    listing = {h["hub"]: h for h in json.loads(capsys.readouterr().out)}
    assert listing["huggingface"]["cache_dir"] == str(caches["hf"])
    hf = {m["id"]: m for m in listing["huggingface"]["models"]}
    assert hf[REPO]["revisions"] == ["main"] and hf[REPO]["size"] == size
    ms = {m["id"]: m for m in listing["modelscope"]["models"]}
    assert ms[REPO]["revisions"] == ["master"] and ms[REPO]["size"] == size and POLYLM_MS in ms
    local = {m["id"]: m for m in listing["local"]["models"]}
    assert local[REPO]["size"] == size
    env.setenv("MODELSCOPE_CACHE", str(caches["ms_legacy"]))
    assert main(["cache", "ls", "--hub", "modelscope"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"modelscope: {caches['ms_legacy']}  (env MODELSCOPE_CACHE; 1 model, ")
    assert "org/tiny-xglm-1.0" in out and "legacy layout" in out


def test_hub_libraries_load_lazily_and_quietly():
    """--help and models import no hub library; importing modelscope makes no connection."""
    code = (
        "import socket, sys\n"
        "attempts = []\n"
        "def connect(self, address):\n    attempts.append(address)\n    raise OSError('blocked')\n"
        "socket.socket.connect = socket.socket.connect_ex = connect\n"
        "from babelplug.cli import main\n"
        "main(['models'])\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('huggingface_hub', 'modelscope', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from modelscope import snapshot_download\n"
        "assert not attempts, attempts\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
