"""Configuration: every source, its precedence, and every bad input (no weights are read)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import babelplug as bp
from babelplug.cli import main
from babelplug.config import config_files, load_config
from babelplug.errors import ConfigError, ModelLoadError, OptionError, UnknownHubError
from babelplug.loading import target_of


@pytest.fixture
def files(monkeypatch, tmp_path):
    """User-level and project-level files in a fresh home and working directory; no BABELPLUG_CONFIG."""
    home, project = tmp_path / "xdg", tmp_path / "project"
    (home / "babelplug").mkdir(parents=True)
    project.mkdir()
    monkeypatch.delenv("BABELPLUG_CONFIG")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.chdir(project)

    def write(which: str, text: str):
        path = home / "babelplug" / "config.toml" if which == "user" else project / "babelplug.toml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


def test_file_locations(files, tmp_path, monkeypatch):
    assert config_files() == [tmp_path / "xdg" / "babelplug" / "config.toml", tmp_path / "project" / "babelplug.toml"]
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_files()[0] == tmp_path / "home" / ".config" / "babelplug" / "config.toml"
    monkeypatch.setenv("BABELPLUG_CONFIG", "~/elsewhere.toml")
    assert config_files() == [tmp_path / "home" / "elsewhere.toml"]


def test_hub_precedence_every_source(files, monkeypatch):
    """argument > per-model table > env > project file > user file > default."""
    def pick(**kw):
        target = target_of("polylm-1.7b", **kw)
        return target.hub, target.sources["hub"]

    assert pick() == ("huggingface", "default")
    user = files("user", 'hub = "local"\n')
    assert pick() == ("local", f"file {user}")
    project = files("project", 'hub = "modelscope"\n')
    assert pick() == ("modelscope", f"file {project}")
    monkeypatch.setenv("BABELPLUG_HUB", "local")
    assert pick() == ("local", "env BABELPLUG_HUB")
    files("project", 'hub = "modelscope"\n[models."polylm-1.7b"]\nhub = "huggingface"\n')
    assert pick() == ("huggingface", f"file {project}")
    assert pick(hub="modelscope") == ("modelscope", "argument")


def test_explicit_config_file_replaces_the_others(files, monkeypatch, tmp_path):
    files("user", 'hub = "local"\n')
    files("project", 'hub = "local"\n')
    only = tmp_path / "only.toml"
    only.write_text('hub = "modelscope"\n')
    monkeypatch.setenv("BABELPLUG_CONFIG", str(only))
    assert target_of("polylm-1.7b").sources["hub"] == f"file {only}"
    monkeypatch.setenv("BABELPLUG_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"env BABELPLUG_CONFIG: no such config file: .*missing\.toml"):
        load_config()


@pytest.mark.parametrize(
    ("file", "env", "argument", "expected"),
    [
        (None, {}, None, (False, "default")),
        ("offline = true", {}, None, (True, "file")),
        ("offline = true", {"BABELPLUG_OFFLINE": "0"}, None, (False, "env BABELPLUG_OFFLINE")),
        ("offline = false", {"HF_HUB_OFFLINE": "1"}, None, (True, "env HF_HUB_OFFLINE")),
        ("offline = true", {"HF_HUB_OFFLINE": "0"}, None, (True, "file")),  # a false HF_HUB_OFFLINE is no setting
        (None, {"HF_HUB_OFFLINE": "1", "BABELPLUG_OFFLINE": "no"}, None, (False, "env BABELPLUG_OFFLINE")),
        ("offline = true", {"BABELPLUG_OFFLINE": "1"}, False, (False, "argument")),
    ],
)
def test_offline_precedence(files, monkeypatch, file, env, argument, expected):
    if file:
        files("project", file + "\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    target = target_of("xglm", offline=argument)
    assert target.offline is expected[0] and target.sources["offline"].startswith(expected[1])


def test_revision_precedence(files):
    def ms(**kw):
        target = target_of("polylm-chat-13b", hub="modelscope", **kw)
        return target.revision, target.sources["revision"]

    assert ms() == ("v1.0.0", "catalog")
    assert target_of("org/x").revision == "main" and target_of("org/x", hub="modelscope").revision == "master"
    assert target_of("org/x").sources["revision"] == "default (hub 'huggingface')"
    project = files("project", '[models."polylm-chat-13b"]\nrevision = "v1.0.1"\n')
    assert ms() == ("v1.0.1", f"file {project}")
    assert ms(revision="abc123") == ("abc123", "argument")
    assert ms(revision="main")[0] == "master"  # never sent to ModelScope


def test_per_model_table_matches_aliases_and_hub_ids(files):
    files("project", '[models."FACEBOOK/xglm-564M"]\nrevision = "r1"\n[models."org/raw"]\nhub = "modelscope"\n')
    target = target_of("xglm")
    assert target.revision == "r1" and target.sources["table"] == '[models."FACEBOOK/xglm-564M"]'
    raw = target_of("org/raw")
    assert raw.hub == "modelscope" and raw.repo_id == "org/raw"


def test_options_precedence_and_checking(files):
    project = files("project", '[models."xglm-7.5b"]\noptions = { dtype = "float32", batch_size = 4 }\n')
    target = bp.loading.resolve("xglm-7.5b")  # catalog: dtype bfloat16
    assert target.options == {"dtype": "float32", "batch_size": 4}
    assert bp.loading.resolve("xglm-7.5b", dtype="auto").options["dtype"] == "auto"
    files("project", '[models."xglm-7.5b"]\noptions = { dtype = "float8" }\n')
    with pytest.raises(OptionError, match=rf'{project}: \[models\."xglm-7.5b"\]\.options: \$\.dtype: '):
        bp.loading.resolve("xglm-7.5b")


def test_paths_are_relative_to_their_file(files, tmp_path, monkeypatch):
    project = files("project", 'local_root = "models"\n[hubs.modelscope]\ncache_dir = "~/ms"\n')
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config()
    assert cfg.value("local_root") == project.parent / "models"
    assert cfg.value("hubs", "modelscope", "cache_dir") == tmp_path / "home" / "ms"
    monkeypatch.setenv("MODELSCOPE_CACHE", "/env/ms")
    assert load_config().get("hubs", "modelscope", "cache_dir").source == "env MODELSCOPE_CACHE"


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "text_or_value", "message"),
    [
        ("argument", "modelscop", r"unknown hub 'modelscop'; did you mean 'modelscope'\?$"),
        ("env", "hugingface", r"unknown hub 'hugingface'; did you mean 'huggingface'\? \(from env BABELPLUG_HUB\)"),
        ("file", 'hub = "lokal"\n', r"unknown hub 'lokal'; did you mean 'local'\? \(from file .*babelplug\.toml\)"),
        ("file", '[models.xglm]\nhub = "ms"\n', r"unknown hub 'ms'.* \(from file .*babelplug\.toml\)"),
    ],
)
def test_unknown_hub_names_its_source(files, monkeypatch, where, text_or_value, message):
    kwargs = {}
    if where == "argument":
        kwargs["hub"] = text_or_value
    elif where == "env":
        monkeypatch.setenv("BABELPLUG_HUB", text_or_value)
    else:
        files("project", text_or_value)
    with pytest.raises(UnknownHubError, match=message):
        target_of("xglm", **kwargs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('hub = "local"\noffline = \n', r"babelplug\.toml:2: invalid TOML \(column 11\): Invalid value$"),
        ('[models."x"\nhub = "local"\n', r"babelplug\.toml:1: invalid TOML \(column 12\): Expected ']'"),
        ('hub = "local"\nhub = "modelscope"\n', r"babelplug\.toml:2: invalid TOML .*Cannot overwrite a value"),
        ('hubb = "local"\n', r"babelplug\.toml:1: hubb: unknown key 'hubb'; did you mean 'hub', 'hubs'\?$"),
        ('hub = "local"\n\n[models."polylm-1.7b"]\nhub = "modelscope"\nrevison = "v1"\n',
         r'babelplug\.toml:5: models\."polylm-1\.7b"\.revison: unknown key \'revison\'; did you mean \'revision\'\?$'),
        ('[hubs.huggingface]\ncache = "/x"\n', r"babelplug\.toml:2: hubs\.huggingface\.cache: unknown key 'cache'; did you mean 'cache_dir'\?$"),
        ('offline = "yes"\n', r"babelplug\.toml:1: offline: 'yes' is not of type 'boolean'$"),
        ("timeout = 0\n", r"babelplug\.toml:1: timeout: 0 is less than or equal to the minimum of 0$"),
        ('[hubs."Bad Hub"]\n', r"babelplug\.toml:1: hubs: 'Bad Hub' does not match"),
    ],
)  # fmt: skip
def test_bad_config_file(files, text, message):
    files("project", text)
    with pytest.raises(ConfigError, match=message):
        load_config()


def test_bad_env_values(monkeypatch):
    monkeypatch.setenv("BABELPLUG_OFFLINE", "maybe")
    with pytest.raises(ConfigError, match=r"^env BABELPLUG_OFFLINE: expected a boolean .*got 'maybe'$"):
        target_of("xglm")


def test_unknown_hub_for_a_local_folder_is_still_an_error(xglm_dir):
    with pytest.raises(UnknownHubError, match="unknown hub 'hf'"):
        bp.load(xglm_dir, hub="hf")


def test_model_missing_on_configured_hub(files, monkeypatch):
    files("project", '[models."xglm-1.7b"]\nhub = "modelscope"\n')
    with pytest.raises(ModelLoadError, match=r"no id on hub 'modelscope' \(hub from file .*\); it is on: huggingface"):
        target_of("xglm-1.7b")


# -- the CLI ---------------------------------------------------------------------------------


def test_config_show_prints_values_and_sources(files, monkeypatch, capsys):
    project = files("project", 'offline = true\n[models."polylm-1.7b"]\nhub = "modelscope"\n')
    monkeypatch.setenv("BABELPLUG_HUB", "local")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert f"{project}  (read)" in out and "config.toml  (not found)" in out
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if " = " in line}
    assert lines["hub"].split()[-3:] == ['"local"', "env", "BABELPLUG_HUB"]
    assert lines["offline"].endswith(f"file {project}") and lines["timeout"].endswith("default")
    assert lines['models."polylm-1.7b".hub'].endswith(f"file {project}")
    assert main(["--hub", "huggingface", "--no-offline", "config", "show", "--json", "polylm-1.7b"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["hub"] == {"value": "huggingface", "source": "flag --hub"}
    assert doc["settings"]["offline"] == {"value": False, "source": "flag --offline"}
    assert doc["model"]["hub"] == {"value": "huggingface", "source": "flag --hub"}
    assert doc["model"]["id"] == "DAMO-NLP-MT/polylm-1.7b" and doc["model"]["revision"]["value"] == "main"
    assert main(["config", "show", "--json", "polylm-1.7b"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["hub"] == {"value": "modelscope", "source": f"file {project}"}
    assert doc["model"]["revision"] == {"value": "master", "source": "catalog"}
    assert doc["model"]["table"] == '[models."polylm-1.7b"]'


def test_command_flags_override_global_flags(files, capsys):
    assert main(["--hub", "local", "config", "show", "--json", "--hub", "modelscope", "--revision", "v2", "polylm-1.7b"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["hub"]["value"] == "modelscope" and model["revision"] == {"value": "v2", "source": "flag --revision"}


def test_cli_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('hub = "local"\n[models.x]\nrevison = "1"\n')
    env = {**os.environ, "BABELPLUG_CONFIG": str(bad)}
    out = subprocess.run([sys.executable, "-m", "babelplug.cli", "config", "show"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (
        f"babelplug: error: ConfigError: {bad}:3: models.x.revison: unknown key 'revison'; did you mean 'revision'?"
    )
