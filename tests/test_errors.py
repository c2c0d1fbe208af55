"""Bad input: each gives a typed error that names what is wrong and where, before any model loads."""

from __future__ import annotations

import json
import shutil

import pytest

import babelplug as bp
from babelplug.errors import (
    BabelplugError,
    DataError,
    ModelLoadError,
    OptionError,
    SpecError,
    UnknownBackendError,
    UnknownModelError,
    UnknownTaskError,
)


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModelError, match=r"unknown model 'xglm-546m'; did you mean 'xglm-564m'"):
        bp.load("xglm-546m")


def test_unknown_backend_lists_close_matches(xglm_dir):
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'xgml'; did you mean 'xglm'"):
        bp.load(xglm_dir, backend="xgml")


def test_unknown_task():
    with pytest.raises(UnknownTaskError, match="did you mean 'xcopa'"):
        bp.load_task("xcopaa")


def test_unknown_load_option_before_loading(xglm_dir, monkeypatch):
    from babelplug.plugins.xglm import XGLMBackend

    monkeypatch.setattr(XGLMBackend, "load", classmethod(lambda cls, path, **o: pytest.fail("model loaded")))
    with pytest.raises(OptionError, match=r"load options of backend 'xglm': \$: unknown key 'dtpye'; did you mean 'dtype'"):
        bp.load(xglm_dir, dtpye="float32")
    with pytest.raises(OptionError, match=r"\$\.dtype: 'float8' is not one of"):
        bp.load(xglm_dir, dtype="float8")


def test_task_breaking_schema_names_json_path(tmp_path):
    spec = json.loads((bp.load_task("xcopa").path).read_text())
    spec["prompt"]["choices"][1] = 7
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec))
    with pytest.raises(SpecError, match=r"bad\.json: \$\.prompt\.choices\[1\]: 7 is not of type 'string'"):
        bp.load_task(bad)
    spec["prompt"]["choices"][1] = "{choice2|shout}"
    bad.write_text(json.dumps(spec))
    with pytest.raises(SpecError, match=r"\$\.prompt\.choices\[1\]: unknown filter 'shout'"):
        bp.load_task(bad)
    spec["prompt"]["choices"][1] = "{choice3}"
    bad.write_text(json.dumps(spec))
    with pytest.raises(SpecError, match=r"\$\.prompt\.choices\[1\]: unknown name\(s\) \['choice3'\]"):
        bp.load_task(bad)


def test_task_with_invalid_json_names_line(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "name": "x",\n  "kind": \n}')
    with pytest.raises(SpecError, match=r"broken\.json: line 4 column 1: invalid JSON"):
        bp.load_task(bad)


def test_record_missing_field_names_file_line_field(xglm, tmp_path):
    data = tmp_path / "th.jsonl"
    good = {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 0}
    bad = {k: v for k, v in good.items() if k != "choice2"}
    data.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"th\.jsonl:3: field 'choice2': 'choice2' is a required property"):
        bp.run("xcopa", xglm, data=data, languages=["th"], output=tmp_path / "out")
    assert not (tmp_path / "out" / "partial.jsonl").exists()  # nothing was scored


def test_record_with_wrong_value(xglm, tmp_path):
    data = tmp_path / "zh.jsonl"
    data.write_text(json.dumps({"premise": "p", "choice1": "a", "choice2": "b", "question": "why", "label": 0}) + "\n")
    with pytest.raises(DataError, match=r"zh\.jsonl:1: field 'question': 'why' is not one of"):
        bp.run("xcopa", xglm, data=data, languages=["zh"])


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"max_tokens": 5}, r"\$: unknown key 'max_tokens'; did you mean 'max_new_tokens'"),
        ({"temperature": 0}, r"\$\.temperature: 0 is less than or equal to the minimum of 0"),
        ({"top_p": 1.5}, r"\$\.top_p: 1\.5 is greater than the maximum of 1"),
        ({"num_beams": 0}, r"\$\.num_beams: 0 is less than the minimum of 1"),
        ({"stop": "\n"}, r"\$\.stop: '\\n' is not of type 'array'"),
    ],
)
def test_bad_generation_parameters(xglm, params, pattern):
    with pytest.raises(OptionError, match=r"generation parameters: " + pattern):
        xglm.generate(["hi"], **params)


def test_tokenizer_not_matching_vocabulary(xglm_dir, tmp_path):
    from transformers import AutoConfig

    folder = tmp_path / "mismatch"
    shutil.copytree(xglm_dir, folder)
    config = AutoConfig.from_pretrained(folder)
    config.vocab_size = 500
    config.save_pretrained(folder)
    with pytest.raises(ModelLoadError, match=r"mismatch: the tokenizer has 2000 tokens but .* vocab_size\) has 500"):
        bp.load(folder)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no readable config.json"):
        bp.load(tmp_path)


def test_wrong_backend_for_folder(xglm_dir, tmp_path):
    folder = tmp_path / "llamaish"
    shutil.copytree(xglm_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ModelLoadError, match=r"llamaish: no backend declares its model_type 'llama'; pass backend=\.\.\. \(known: "):
        bp.load(folder)
    with pytest.raises(ModelLoadError, match="holds a 'llama' model, but backend 'xglm' serves xglm"):
        bp.load(folder, backend="xglm")


def test_api_is_batch_first(xglm):
    with pytest.raises(SpecError, match="batch-first"):
        xglm.generate("a bare string")
    with pytest.raises(SpecError, match=r"score requests: \$\[1\]: expected a \(context, continuation\) pair"):
        xglm.score([("a", "b"), ("c",)])
    with pytest.raises(SpecError, match=r"\$\[0\]\.role: 'robot' is not one of"):
        xglm.format_chat([{"role": "robot", "content": "x"}])


def test_every_error_shares_one_base():
    for cls in (DataError, ModelLoadError, OptionError, SpecError, UnknownModelError, UnknownBackendError):
        assert issubclass(cls, BabelplugError)


def test_unknown_chat_format_before_loading(xglm_dir):
    from babelplug.errors import UnknownChatFormatError

    with pytest.raises(UnknownChatFormatError, match=r"unknown chat format 'polylmm'; did you mean 'polylm'"):
        bp.load(xglm_dir, chat_format="polylmm")


def test_generation_parameters_on_a_multiple_choice_task(xglm):
    with pytest.raises(SpecError, match=r"\$\.kind: generation parameters apply to generation and chat tasks; 'xcopa'"):
        bp.run("xcopa", xglm, generation={"max_new_tokens": 3})


def test_conflicting_quantization_options(xglm_dir):
    with pytest.raises(OptionError, match="conflicting quantization: 4bit and 8bit"):
        bp.load(xglm_dir, load_in_8bit=True, quantization="4bit")
