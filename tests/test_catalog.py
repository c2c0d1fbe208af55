"""The shipped model catalog."""

from __future__ import annotations

import json

import pytest

import babelplug as bp
from babelplug.catalog import read_catalog
from babelplug.errors import SpecError, UnknownBackendError
from babelplug.schemas import specs_dir


def test_every_seed_family_is_catalogued():
    reg = bp.registry()
    backends = {e.backend for e in reg.models.values()}
    assert backends == {"xglm", "mt0", "bloomz", "wangchanglm", "polylm"}
    polylm = reg.lookup_model("polylm-chat-13b")
    assert polylm.hubs["huggingface"].id == "DAMO-NLP-MT/polylm-chat-13b"
    assert polylm.hubs["modelscope"].id == "damo/nlp_polylm_assistant_13b_text_generation"
    assert reg.lookup_model("AI-ModelScope/bloomz-560m") is None  # hub ids are not aliases unless declared
    assert reg.lookup_model("bigscience/bloomz-560m").hubs["modelscope"].revision == "master"
    for entry in reg.models.values():
        assert entry.hubs.get("huggingface") is None or entry.hubs["huggingface"].revision == "main"


def test_catalog_entry_without_a_plugin_says_so(monkeypatch, fresh_registry):
    monkeypatch.setenv("BABELPLUG_PLUGINS", "catalog,hubs,xglm")
    fresh_registry.reset()
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'mt0'.*catalog entry 'mt0-xxl'.*no loaded plugin provides it"):
        bp.load("bigscience/mt0-xxl")


def test_catalog_file_breaking_the_schema(tmp_path):
    doc = json.loads((specs_dir() / "models" / "xglm.json").read_text())
    doc["models"][1]["hubs"]["huggingface"]["rev"] = "main"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(SpecError, match=r"bad\.json: \$\.models\[1\]\.hubs\.huggingface: unknown key 'rev'; did you mean 'revision'"):
        read_catalog(bad)
