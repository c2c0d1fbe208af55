"""Every built-in backend passes the conformance suite on a tiny model of its family."""

from __future__ import annotations

import pytest

from babelplug import tiny
from babelplug.testing import BackendConformance


class _Tiny(BackendConformance):
    family: str

    @pytest.fixture(scope="class")
    @classmethod
    def model_dir(cls, tiny_root):
        return tiny.cached(cls.family, root=tiny_root)


class TestXGLM(_Tiny):
    backend = family = "xglm"


class TestMT0(_Tiny):
    backend = family = "mt0"
    encoder_decoder = True


class TestMT0ScoreEOS(_Tiny):
    """The cards' convention: the final </s> is scored."""

    backend = family = "mt0"
    encoder_decoder = scores_end_token = True
    load_options = {"score_eos": True}


class TestBLOOMZ(_Tiny):
    backend = family = "bloomz"


class TestWangChanGLM(_Tiny):
    backend = family = "wangchanglm"


class TestPolyLM(_Tiny):
    backend = family = "polylm"


class TestPolyLMModelScopeEngine(_Tiny):
    backend = family = "polylm"
    load_options = {"engine": "modelscope", "trust_remote_code": True}
