"""Pre-load checks (babelplug.checks): each bad folder or option is a typed one-line error, before weights load."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import babelplug as bp
from babelplug import cli
from babelplug.errors import ModelLoadError, OptionError


def copy_model(src: Path, dest: Path, *, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*drop) if drop else None)
    return dest


def edit_json(file: Path, **changes: object) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text(encoding="utf-8")), **changes}), encoding="utf-8")


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; it must exit 2 with one line on stderr, which is returned."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def pickle_dir(xglm_dir, tmp_path_factory) -> Path:
    """The tiny XGLM with its weights as pytorch_model.bin (a pickle) only."""
    from transformers import AutoModelForCausalLM

    folder = copy_model(xglm_dir, tmp_path_factory.mktemp("pickled") / "xglm-pickle", drop=("model.safetensors",))
    AutoModelForCausalLM.from_pretrained(xglm_dir).save_pretrained(folder, safe_serialization=False)
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    return folder


# -- 1. no weight file ---------------------------------------------------------
def test_folder_without_weights_names_what_was_looked_for(xglm_dir, tmp_path, capsys):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(xglm_dir / "config.json", folder)  # no tokenizer either: the weights check comes first
    (folder / "tf_model.h5").write_bytes(b"x")
    pattern = r"no-weights: no weight file: looked for model\.safetensors, model\.safetensors\.index\.json, pytorch_model\.bin and pytorch_model\.bin\.index\.json; found only tf_model\.h5"
    with pytest.raises(ModelLoadError, match=pattern):
        bp.load(folder)
    err = cli_error(["score", "--model", str(folder), "--continuation", "x"], capsys)
    assert err.startswith("babelplug: error: ModelLoadError: ") and "no weight file" in err


def test_index_naming_a_missing_shard(xglm_dir, tmp_path):
    folder = copy_model(xglm_dir, tmp_path / "sharded", drop=("model.safetensors",))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors\.index\.json: names shard files that are missing: model-00001-of-00002\.safetensors"):
        bp.load(folder)


# -- 2. corrupt safetensors ----------------------------------------------------
def _header_past_end(real: bytes) -> bytes:
    return struct.pack("<Q", 10**6) + b"{}"


def _header_not_json(real: bytes) -> bytes:
    return struct.pack("<Q", 8) + b"notjson!" + real[8:]


def _truncated(real: bytes) -> bytes:
    return real[: len(real) // 2]


@pytest.mark.parametrize(
    "corrupt, pattern",
    [
        (_header_past_end, r"model\.safetensors: header length 1000000 runs past the end of the file \(10 bytes\)"),
        (_header_not_json, r"model\.safetensors: the header is not JSON"),
        (_truncated, r"model\.safetensors: tensor '.+' ends at byte \d+ of the data, past its end \(\d+ bytes\): the file is truncated"),
    ],
)
def test_corrupt_safetensors_found_from_the_header(xglm_dir, tmp_path, capsys, corrupt, pattern):
    folder = copy_model(xglm_dir, tmp_path / "corrupt")
    weights = folder / "model.safetensors"
    weights.write_bytes(corrupt(weights.read_bytes()))
    with pytest.raises(ModelLoadError, match=pattern):
        bp.load(folder)
    assert "model.safetensors" in cli_error(["score", "--model", str(folder), "--continuation", "x"], capsys)


# -- 3. devices ----------------------------------------------------------------
def _missing_cuda() -> str:
    import torch

    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


def test_unavailable_cuda_device_names_the_option(xglm_dir, capsys):
    missing = _missing_cuda()
    with pytest.raises(OptionError, match=rf"load options of backend 'xglm': \$\.device: '{missing}' is not available"):
        bp.load(xglm_dir, device=missing)
    with pytest.raises(OptionError, match=r'\$\.device_map\[""\]: .* is not available'):
        bp.load(xglm_dir, device_map={"": int(missing.partition(":")[2] or 0)})
    err = cli_error(["score", "--model", str(xglm_dir), "-o", f"device={missing}", "--continuation", "x"], capsys)
    assert err.startswith("babelplug: error: OptionError: ") and "$.device" in err


def test_unavailable_mps_device(xglm_dir):
    import torch

    if torch.backends.mps.is_available():
        assert bp.load(xglm_dir, device="mps").backend.device.type == "mps"
    else:
        with pytest.raises(OptionError, match=r"\$\.device: 'mps' is not available: torch sees no MPS"):
            bp.load(xglm_dir, device="mps")


# -- 4. chat template ----------------------------------------------------------
def test_template_chat_format_without_a_chat_template(xglm_dir, tmp_path, capsys):
    folder = copy_model(xglm_dir, tmp_path / "no-template")
    pattern = r"\$\.chat_format: 'template' needs the tokenizer's chat template, but .*no-template has none"
    with pytest.raises(OptionError, match=pattern):
        bp.load(folder, chat_format="template")
    assert "$.chat_format" in cli_error(["chat", "--model", str(folder), "-o", "chat_format=template", "--show-prompt", "hi"], capsys)


@pytest.mark.parametrize("where", ["tokenizer_config.json", "chat_template.jinja"])
def test_template_chat_format_with_a_chat_template(xglm_dir, tmp_path, where):
    folder = copy_model(xglm_dir, tmp_path / "with-template")
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    if where == "chat_template.jinja":
        (folder / where).write_text(template, encoding="utf-8")
    else:
        edit_json(folder / where, chat_template=template)
    model = bp.load(folder, chat_format="template")
    assert model.format_chat([{"role": "user", "content": "hi"}]) == "[user] hi\n"


# -- 5. first_token_script -----------------------------------------------------
def test_unknown_script_lists_close_matches(xglm):
    with pytest.raises(OptionError, match=r"generation parameters: \$\.first_token_script: unknown script 'thia'.*did you mean 'thai'"):
        xglm.generate(["hi"], max_new_tokens=1, first_token_script="thia")


def test_known_scripts_pass():
    from babelplug.model import check_generation_params

    for script in ("thai", "Latin", "han", "japanese", "tamil", "devanagari", "old italic"):
        assert check_generation_params({"first_token_script": script}) == {"first_token_script": script}


def test_unknown_script_found_before_the_model_loads(xglm_dir, tmp_path, capsys):
    folder = copy_model(xglm_dir, tmp_path / "weightless", drop=("model.safetensors",))  # loading would fail
    err = cli_error(["generate", "--model", str(folder), "-p", "first_token_script=klingonn", "hi"], capsys)
    assert "$.first_token_script: unknown script 'klingonn'" in err and "weight" not in err


# -- 6. eos_token_id -----------------------------------------------------------
@pytest.mark.parametrize(
    "file, eos, pattern",
    [
        ("config.json", 2000, r"config\.json: eos_token_id 2000 is outside the vocabulary \(config\.json vocab_size 2000: ids 0 to 1999\)"),
        ("generation_config.json", [2, 2500], r"generation_config\.json: eos_token_id 2500 is outside the vocabulary"),
    ],
)
def test_eos_outside_the_vocabulary(xglm_dir, tmp_path, capsys, file, eos, pattern):
    folder = copy_model(xglm_dir, tmp_path / "eos")
    edit_json(folder / file, eos_token_id=eos)
    with pytest.raises(ModelLoadError, match=pattern):
        bp.load(folder)
    assert "eos_token_id" in cli_error(["score", "--model", str(folder), "--continuation", "x"], capsys)


def test_eos_at_the_last_vocabulary_id_loads(xglm_dir, tmp_path):
    folder = copy_model(xglm_dir, tmp_path / "eos-last")
    edit_json(folder / "config.json", eos_token_id=1999)  # as PolyLM's config: the last id of the vocabulary
    assert bp.load(folder).backend.model.config.eos_token_id == 1999


# -- 7. broken config.json -----------------------------------------------------
@pytest.mark.parametrize(
    "content, pattern",
    [
        (b'{\n  "model_type": "xglm",\n  oops\n}', r"config\.json: invalid JSON at line 3, column 3: Expecting property name"),
        (b'["xglm"]', r"config\.json: expected a JSON object, got an array"),
        (b'{"vocab_size": 2000}', r"config\.json: no 'model_type' field"),
        (b'\xff\xfe{"model_type": "xglm"}', r"config\.json: not UTF-8 text \(byte 0\)"),
    ],
)
@pytest.mark.parametrize("backend", [None, "xglm", "polylm"])
def test_broken_config_says_what_is_wrong(xglm_dir, tmp_path, content, pattern, backend):
    folder = copy_model(xglm_dir, tmp_path / "broken")
    (folder / "config.json").write_bytes(content)
    with pytest.raises(ModelLoadError, match=pattern):
        bp.load(folder, backend=backend)


def test_broken_config_on_the_command_line(xglm_dir, tmp_path, capsys):
    folder = copy_model(xglm_dir, tmp_path / "broken")
    (folder / "config.json").write_text("{,}")
    err = cli_error(["score", "--model", str(folder), "--continuation", "x"], capsys)
    assert "config.json: invalid JSON at line 1, column 2" in err and "not a model folder" not in err


# -- 8. listing commands into a closed pipe ------------------------------------
LISTINGS = [["plugins"], ["models"], ["models", "--options"], ["tasks"], ["cache", "ls"], ["config", "show"]]


@pytest.mark.parametrize("argv", LISTINGS, ids=" ".join)
def test_listing_into_a_closed_pipe_exits_quietly(argv):
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before anything is written: every write gets EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "babelplug.cli", *argv], stdout=writer, stderr=subprocess.PIPE, timeout=300)
    finally:
        os.close(writer)
    assert proc.stderr == b"" and proc.returncode == cli.EXIT_BROKEN_PIPE == 141


def test_listing_piped_into_head():
    full = subprocess.run([sys.executable, "-m", "babelplug.cli", "models", "--options"], capture_output=True, text=True, timeout=300)
    assert full.returncode == 0 and full.stdout.count("\n") > 1
    script = f'"{sys.executable}" -m babelplug.cli models --options | head -1; echo "status=${{PIPESTATUS[0]}}" >&2'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.stdout == full.stdout.splitlines(keepends=True)[0]
    assert "Traceback" not in proc.stderr and proc.stderr.strip() in ("status=0", "status=141"), proc.stderr


# -- 9. weights safety ---------------------------------------------------------
def test_pickle_only_folder_is_refused(pickle_dir, capsys):
    pattern = r"xglm-pickle/pytorch_model\.bin: refused: the folder holds only pickle weights; .* allow_pickle=True"
    with pytest.raises(ModelLoadError, match=pattern):
        bp.load(pickle_dir)
    assert "allow_pickle" in cli_error(["score", "--model", str(pickle_dir), "--continuation", "x"], capsys)


def test_pickle_loads_when_allowed_and_scores_as_safetensors(pickle_dir, xglm):
    request = [("I wanted to conserve energy.\n", "I shut off the light.")]
    model = bp.load(pickle_dir, allow_pickle=True)
    assert model.score(request)[0].logprob == pytest.approx(xglm.score(request)[0].logprob, abs=1e-5)


def test_allow_pickle_per_model_in_config(pickle_dir, tmp_path, monkeypatch):
    from babelplug import tiny

    tiny.hf_cache_layout(pickle_dir, tmp_path / "hf", "facebook/xglm-564M")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        bp.load("xglm-564m", offline=True)
    config = tmp_path / "babelplug.toml"
    config.write_text('[models."xglm-564m"]\noptions = { allow_pickle = true }\n', encoding="utf-8")
    monkeypatch.setenv("BABELPLUG_CONFIG", str(config))
    assert bp.load("xglm-564m", offline=True).score([("a", "b")])[0].num_tokens > 0


def test_allow_pickle_must_be_a_boolean(pickle_dir):
    with pytest.raises(OptionError, match=r"\$\.allow_pickle: 'yes' is not of type 'boolean'"):
        bp.load(pickle_dir, allow_pickle="yes")


def test_safetensors_preferred_over_pickle(xglm_dir, tmp_path):
    folder = copy_model(xglm_dir, tmp_path / "both")
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle at all")  # never read: safetensors win
    assert bp.load(folder).score([("a", "b")])[0].num_tokens > 0


def test_corrupt_pickle_is_a_typed_error(pickle_dir, tmp_path, capsys):
    folder = copy_model(pickle_dir, tmp_path / "bad-pickle")
    weights = folder / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    pattern = r"bad-pickle/pytorch_model\.bin: cannot load these pickle weights \(read because allow_pickle=True\): corrupt"
    with pytest.raises(ModelLoadError, match=pattern):
        bp.load(folder, allow_pickle=True)
    assert "pytorch_model.bin" in cli_error(["score", "--model", str(folder), "-o", "allow_pickle=true", "--continuation", "x"], capsys)
