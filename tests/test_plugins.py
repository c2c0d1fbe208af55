"""The hook contract and plugin manager, exercised with real installed plugins.

Third-party plugins are installed for real: a ``*.dist-info`` folder with an
``entry_points.txt`` (group ``babelplug``) is put on ``sys.path``, which is what
``pip install`` leaves behind.
"""

from __future__ import annotations

import sys
import textwrap
import warnings

import pytest

import babelplug as bp
from babelplug import hookspecs
from babelplug.errors import PluginError, UnknownModelError
from babelplug.manager import BUILTIN_PLUGINS, PluginWarning

BUILTINS = ",".join(name for name, _ in BUILTIN_PLUGINS)


@pytest.fixture
def install(tmp_path, monkeypatch, fresh_registry):
    """Install a plugin module as distribution ``name`` with an entry point ``name``."""

    def install(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[babelplug]\n{name} = {name}\n")
        monkeypatch.setenv("BABELPLUG_PLUGINS", f"{BUILTINS},{name}")
        fresh_registry.reset()

    monkeypatch.syspath_prepend(str(tmp_path))
    yield install
    for mod in [m for m in sys.modules if m.startswith("thirdparty")]:
        del sys.modules[mod]


ECHO_PLUGIN = """
from babelplug import Backend, Score, hookimpl

class EchoBackend(Backend):
    name = "echo"
    capabilities = frozenset({"score", "generate", "chat_format"})
    model_types = ("echo",)

    @classmethod
    def load(cls, path, **options):
        self = cls(); self.path, self.options = path, options
        return self

    def tokenize(self, texts):
        return [[ord(c) for c in t] for t in texts]

    def score(self, requests):
        return [Score(-float(len(c)), len(c), True) for _, c in requests]

    def generate(self, prompts, params):
        return [p[::-1][: params.get("max_new_tokens", 32)] for p in prompts]

    def chat_format(self, messages):
        return " | ".join(m["content"] for m in messages)

@hookimpl
def register_backends(register):
    register(EchoBackend, models=[{"name": "echo-1", "aliases": ["Echo"], "hubs": {"local": {"id": "echo"}}}])

@hookimpl
def resolve_model(ref, hub):
    from babelplug import ModelEntry
    if ref.startswith("echo:"):
        return ModelEntry(name=ref, backend="echo", hubs={"local": {"id": "echo"}})
"""


def _echo_folder(tmp_path):
    folder = tmp_path / "echo"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "echo"}')
    return folder


def test_hook_register_backends(install, tmp_path, monkeypatch):
    install("thirdparty_echo", ECHO_PLUGIN)
    reg = bp.registry()
    assert reg.backends["echo"].__name__ == "EchoBackend"
    assert reg.plugins["thirdparty_echo"] == "entry point"
    assert reg.lookup_model("echo") is reg.lookup_model("echo-1")
    monkeypatch.setenv("BABELPLUG_LOCAL_ROOT", str(tmp_path))
    _echo_folder(tmp_path)
    model = bp.load("echo-1")
    assert model.info.backend == "echo" and model.info.hub == "local"
    assert model.generate(["abc"], max_new_tokens=2) == ["cb"]
    assert model.score([("x", "hello")])[0].num_tokens == 5
    assert model.chat([{"role": "user", "content": "hi"}]) == "ih"


def test_hook_resolve_model(install, tmp_path, monkeypatch):
    install("thirdparty_echo", ECHO_PLUGIN)
    monkeypatch.setenv("BABELPLUG_LOCAL_ROOT", str(tmp_path))
    _echo_folder(tmp_path)
    assert bp.load("echo:anything").info.name == "echo:anything"
    with pytest.raises(UnknownModelError):
        bp.load("nothing-claims-this")


def test_hook_backend_call(install, xglm_dir):
    install(
        "thirdparty_tracer",
        """
        from babelplug import hookimpl
        CALLS = []

        @hookimpl(wrapper=True)
        def backend_call(backend, operation, args, params):
            result = yield
            CALLS.append((backend.name, operation, len(args[0])))
            return result
        """,
    )
    model = bp.load(xglm_dir)
    model.tokenize(["a", "b"])
    model.score([("a", "b")])
    model.generate(["a"], max_new_tokens=1)
    from thirdparty_tracer import CALLS

    assert CALLS == [("xglm", "tokenize", 2), ("xglm", "score", 1), ("xglm", "generate", 1)]


def test_hook_backend_call_can_replace_a_call(install, xglm_dir):
    install(
        "thirdparty_cache",
        """
        from babelplug import Score, hookimpl

        @hookimpl
        def backend_call(backend, operation, args, params):
            if operation == "score":
                return [Score(0.0, 0, True) for _ in args[0]]
        """,
    )
    assert bp.load(xglm_dir).score([("a", "b")]) == [bp.Score(0.0, 0, True)]


def test_hook_register_chat_formats(install, xglm_dir):
    install(
        "thirdparty_formats",
        """
        from babelplug import hookimpl

        @hookimpl
        def register_chat_formats(register):
            register("shouting", lambda messages: messages[-1]["content"].upper() + "!")
        """,
    )
    model = bp.load(xglm_dir, chat_format="shouting")
    assert model.format_chat([{"role": "user", "content": "hi"}]) == "HI!"


def test_hook_register_task_specs(install, tmp_path):
    task = bp.load_task("xcopa").path.read_text().replace('"name": "xcopa"', '"name": "my-xcopa"')
    task = task.replace("../data/", str(bp.load_task("xcopa").path.parent.parent / "data") + "/")
    (tmp_path / "my-xcopa.json").write_text(task)
    install(
        "thirdparty_tasks",
        f"""
        from babelplug import hookimpl

        @hookimpl
        def register_task_specs(register):
            register({str(tmp_path / "my-xcopa.json")!r})
        """,
    )
    assert bp.load_task("my-xcopa").languages == bp.load_task("xcopa").languages


def test_hook_register_hubs(install, xglm_dir):
    install(
        "thirdparty_hub",
        f"""
        from pathlib import Path
        from babelplug import Hub, hookimpl

        class Fixed(Hub):
            name = "fixed"
            def resolve(self, repo_id, revision, offline):
                return Path({str(xglm_dir)!r})

        @hookimpl
        def register_hubs(register):
            register(Fixed())
        """,
    )
    model = bp.load("org/anything", hub="fixed")
    assert model.info.hub == "fixed" and model.info.backend == "xglm"


def test_every_hook_has_a_test():
    hooks = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "babelplug_spec")]
    missing = [h for h in hooks if f"test_hook_{h}" not in globals()]
    assert len(hooks) == 6 and not missing


def test_plugin_failing_on_import_is_isolated(install, monkeypatch):
    install("thirdparty_broken", "raise RuntimeError('boom at import')")
    with pytest.warns(PluginWarning, match=r"plugin 'thirdparty_broken' \(thirdparty_broken\) failed to load: RuntimeError: boom"):
        reg = bp.registry()
    assert "xglm" in reg.backends  # the rest still works
    monkeypatch.setenv("BABELPLUG_STRICT_PLUGINS", "1")
    bp.registry.cache_clear()
    from babelplug import manager

    manager.reset()
    with pytest.raises(PluginError, match="thirdparty_broken"):
        bp.registry()


def test_misspelled_hook_is_reported(install):
    install("thirdparty_typo", "from babelplug import hookimpl\n@hookimpl\ndef register_backend(register):\n    pass\n")
    with pytest.warns(PluginWarning, match=r"plugin 'thirdparty_typo' .* unknown hooks"):
        bp.registry()


def test_collision_is_an_error_unless_override(install):
    source = """
    from babelplug import hookimpl
    from babelplug.plugins.xglm import XGLMBackend

    class Other(XGLMBackend):
        pass

    @hookimpl
    def register_backends(register):
        register(Other{})
    """
    install("thirdparty_clash", source.format(""))
    with pytest.warns(PluginWarning, match=r"plugin 'thirdparty_clash' failed in register_backends: .*backend 'xglm', already registered by plugin 'xglm'"):
        bp.registry()
    del sys.modules["thirdparty_clash"]
    (__import__("pathlib").Path(sys.path[0]) / "thirdparty_clash.py").write_text(textwrap.dedent(source.format(", override=True")))
    from babelplug import manager

    manager.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bp.registry().backends["xglm"].__name__ == "Other"


def test_declared_capabilities_must_match_methods(install):
    install(
        "thirdparty_liar",
        """
        from babelplug import Backend, hookimpl

        class Liar(Backend):
            name = "liar"
            capabilities = frozenset({"score"})
            @classmethod
            def load(cls, path, **options): ...
            def tokenize(self, texts): ...

        @hookimpl
        def register_backends(register):
            register(Liar)
        """,
    )
    with pytest.warns(PluginWarning, match="backend 'liar' does not implement 'score' but declares it"):
        assert "liar" not in bp.registry().backends


def test_allow_list(monkeypatch, fresh_registry):
    monkeypatch.setenv("BABELPLUG_PLUGINS", "chat_formats,tasks")
    fresh_registry.reset()
    reg = bp.registry()
    assert set(reg.plugins) == {"chat_formats", "tasks"} and not reg.backends


def test_undeclared_operation_fails_before_loading(install, tmp_path, monkeypatch):
    install(
        "thirdparty_scorer",
        """
        from babelplug import Backend, Score, hookimpl

        class ScoreOnly(Backend):
            name = "score-only"
            capabilities = frozenset({"score"})
            model_types = ("score-only",)
            @classmethod
            def load(cls, path, **options):
                global LOADED
                LOADED = True
                return cls()
            def tokenize(self, texts):
                return [[1] for _ in texts]
            def score(self, requests):
                return [Score(0.0, 1, True) for _ in requests]

        @hookimpl
        def register_backends(register):
            register(ScoreOnly)
        """,
    )
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "score-only"}')
    from babelplug.errors import CapabilityError

    with pytest.raises(CapabilityError, match=r"task 'mt0-prompts' \(generation\) needs generate, which backend 'score-only'"):
        bp.run("mt0-prompts", folder)
    import thirdparty_scorer

    assert not getattr(thirdparty_scorer, "LOADED", False)  # failed before loading
    model = bp.load(folder)
    assert thirdparty_scorer.LOADED
    with pytest.raises(CapabilityError, match="backend 'score-only' does not support 'generate'"):
        model.generate(["x"])
