"""The backend conformance suite: the contract every backend must keep, as pytest tests.

A plugin runs it against a tiny model of its family by subclassing
:class:`BackendConformance` in its own tests and providing ``model_dir``::

    import pytest
    from babelplug.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "my-backend"

        @pytest.fixture(scope="class")
        @classmethod
        def model_dir(cls, tmp_path_factory):
            return build_tiny_model(tmp_path_factory.mktemp("my-backend"))

It checks the contract, not the family: tokenize round-trips multilingual text;
``score`` sums log-probabilities over the continuation's tokens, reports token
counts and greedy flags, handles an empty context, refuses an empty or whitespace-only continuation
(:class:`~babelplug.errors.RequestError` naming the request), and gives the same results
batched and alone (within :attr:`BackendConformance.score_tolerance`); greedy
generation is the same batched and alone; seeded sampling repeats; ``stop`` and
``max_new_tokens`` are honoured; the chat format yields a prompt the model
takes; declared capabilities match behaviour; bad options raise typed errors.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest

import babelplug as bp
from babelplug.backend import OPERATIONS
from babelplug.errors import CapabilityError, OptionError, RequestError

#: Multilingual text of the XCOPA data and the model cards (8 scripts).
SAMPLES = (
    "I wanted to conserve energy.",
    "我想节约能源。",
    "ผู้ชายเปิดก๊อกนํ้า",
    "Mwen te soufle bouji a.",
    "Kız kahvaltısında bir böcek buldu.",
    "Người đàn ông mở vòi nước.",
    "சிறுமி தனது காலை உணவில் ஒரு பூச்சியைக் கண்டாள்",
    "Il ragazzo ha aperto il rubinetto.",
)
REQUESTS = (
    ("I wanted to conserve energy.", " I shut off the light in the unoccupied room."),
    ("我想节约能源。", "我把空房间里的灯关了。"),
    ("ผู้ชายเปิดก๊อกนํ้า", "ดังนั้นนํ้าไหลออกมาจากพวย"),
    ("Flam bouji a te etenn.", " Mwen te soufle bouji a."),
    ("A longer context that needs more padding than the other ones here, surely.", " Yes."),
)
PROMPTS = ("I wanted to", "蜡烛上的火焰熄灭了。 A much longer prompt, to force padding", "ผู้ชาย")


class BackendConformance:
    """Subclass it (named ``Test...``) and provide a ``model_dir`` fixture; see the module docstring."""

    backend: ClassVar[str]
    """The registered backend name under test."""
    load_options: ClassVar[dict[str, Any]] = {}
    """Load options for the model under test."""
    score_tolerance: ClassVar[float] = 1e-4
    """Largest allowed |batched - unbatched| log-probability (fp32)."""
    encoder_decoder: ClassVar[bool] = False
    """Encoder-decoder backends score the continuation's own tokens, not split from the whole text."""
    scores_end_token: ClassVar[bool] = False
    """Whether the backend also scores the continuation's final end-of-sequence token
    (seq2seq ``score_eos=True``); then a greedy text cut by ``max_new_tokens`` is not a
    greedy continuation."""

    @pytest.fixture(scope="class")
    @classmethod
    def model_dir(cls) -> Path:
        raise NotImplementedError("provide a class-scoped 'model_dir' fixture with a tiny model of the family")

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, model_dir: Path):
        loaded = bp.load(model_dir, backend=cls.backend, **cls.load_options)
        yield loaded
        loaded.close()

    # -- capabilities and options --------------------------------------------------
    def test_declared_capabilities_match_behaviour(self, model) -> None:
        cls = type(model.backend)
        cls.check_contract()
        assert cls.name == self.backend
        for op in OPERATIONS:
            if op in cls.capabilities:
                continue
            call = {"score": lambda: model.score([("a", "b")]), "generate": lambda: model.generate(["a"]),
                    "chat_format": lambda: model.format_chat([{"role": "user", "content": "a"}])}[op]  # fmt: skip
            with pytest.raises(CapabilityError):
                call()

    def test_bad_options_raise_typed_errors(self, model, model_dir: Path) -> None:
        with pytest.raises(OptionError, match="not_an_option"):
            bp.load(model_dir, backend=self.backend, not_an_option=1)
        if "generate" in type(model.backend).capabilities:
            with pytest.raises(OptionError, match="temperature"):
                model.generate(["a"], temperature=-1.0)

    # -- tokenize ------------------------------------------------------------------
    def test_tokenize_round_trips_multilingual_text(self, model) -> None:
        ids = model.tokenize(list(SAMPLES))
        assert ids == [model.tokenize([text])[0] for text in SAMPLES]
        assert all(row and all(isinstance(t, int) for t in row) for row in ids)
        assert model.detokenize(ids) == list(SAMPLES)

    # -- score ---------------------------------------------------------------------
    def _needs(self, model, op: str) -> None:
        if op not in type(model.backend).capabilities:  # checked by test_declared_capabilities_match_behaviour
            pytest.skip(f"backend {self.backend!r} does not declare {op!r}")

    def test_score_reports_logprob_count_and_flag(self, model) -> None:
        self._needs(model, "score")
        for s in model.score(list(REQUESTS)):
            assert math.isfinite(s.logprob) and s.logprob <= 0
            assert s.num_tokens >= 1 and isinstance(s.is_greedy, bool)

    @pytest.mark.parametrize("continuation", ["", " ", "\n\t "])
    def test_empty_or_blank_continuation_is_a_request_error(self, model, continuation: str) -> None:
        self._needs(model, "score")
        with pytest.raises(RequestError, match=r"\$\[1\]\.continuation") as caught:
            model.score([REQUESTS[0], ("Flam bouji a te etenn.", continuation)])
        assert (caught.value.index, caught.value.part) == (1, "continuation")

    def test_score_handles_an_empty_context(self, model) -> None:
        self._needs(model, "score")
        (s,) = model.score([("", "Mwen te soufle bouji a.")])
        assert math.isfinite(s.logprob) and s.logprob < 0 and s.num_tokens >= 1

    def test_score_batched_equals_unbatched(self, model) -> None:
        self._needs(model, "score")
        batched = model.score(list(REQUESTS))
        for req, b in zip(REQUESTS, batched):
            (alone,) = model.score([req])
            assert abs(b.logprob - alone.logprob) <= self.score_tolerance
            assert (b.num_tokens, b.is_greedy) == (alone.num_tokens, alone.is_greedy)

    def test_score_sums_over_continuation_tokens(self, model) -> None:
        """Causal: log P(a+b | c) = log P(a | c) + log P(b | c+a) where tokens split cleanly.
        Encoder-decoder: the count is the continuation's own tokens (its end token only with
        :attr:`scores_end_token`)."""
        self._needs(model, "score")
        context, continuation = "Flam bouji a te etenn.", " Mwen te soufle bouji a."
        if self.encoder_decoder:
            (s,) = model.score([(context, continuation)])
            assert s.num_tokens == len(model.tokenize([continuation])[0]) - (0 if self.scores_end_token else 1)
            return
        whole = model.tokenize([context + continuation])[0]
        for cut in [i for i, ch in enumerate(continuation) if ch == " " and i > 0]:
            head, tail = continuation[:cut], continuation[cut:]
            first = model.tokenize([context + head])[0]
            if whole[: len(first)] == first and model.tokenize([context])[0] == first[: len(model.tokenize([context])[0])]:
                full, part_a, part_b = model.score([(context, continuation), (context, head), (context + head, tail)])
                assert full.num_tokens == part_a.num_tokens + part_b.num_tokens
                assert abs(full.logprob - (part_a.logprob + part_b.logprob)) <= self.score_tolerance
                return
        pytest.fail("no split of the continuation tokenizes as a prefix; cannot check the sum")

    def test_is_greedy_flags_the_greedy_continuation(self, model) -> None:
        self._needs(model, "score")
        self._needs(model, "generate")
        flags = []
        for prompt in PROMPTS:
            text = model.generate([prompt], max_new_tokens=3, do_sample=False)[0]
            flags.append(model.score([(prompt, text)])[0].is_greedy)
        if not self.scores_end_token:
            assert any(flags), "no greedy continuation was flagged greedy"
        (odd,) = model.score([(PROMPTS[0], " zzzz qqqq 龘龘龘 xxxx")])
        assert odd.is_greedy is False

    # -- generate ------------------------------------------------------------------
    def test_greedy_generation_batched_equals_unbatched(self, model) -> None:
        self._needs(model, "generate")
        batched = model.generate(list(PROMPTS), max_new_tokens=8, do_sample=False)
        assert batched == [model.generate([p], max_new_tokens=8, do_sample=False)[0] for p in PROMPTS]
        assert all(isinstance(t, str) for t in batched)

    def test_seeded_sampling_is_reproducible(self, model) -> None:
        self._needs(model, "generate")
        params = dict(do_sample=True, top_k=50, top_p=0.95, temperature=1.0, max_new_tokens=8, seed=11)
        first = model.generate(list(PROMPTS), **params)
        assert first == model.generate(list(PROMPTS), **params)

    def test_stop_and_max_new_tokens_are_honoured(self, model) -> None:
        self._needs(model, "generate")
        prompt = [PROMPTS[0]]
        short = model.generate(prompt, max_new_tokens=2, do_sample=False)[0]
        longer = model.generate(prompt, max_new_tokens=10, do_sample=False)[0]
        assert len(model.tokenize([short])[0]) <= len(model.tokenize([longer])[0])
        assert len(short) <= len(longer)
        stop = next((longer[i : i + 2] for i in range(1, len(longer) - 1) if longer[i : i + 2].strip()), None)
        assert stop, f"greedy output too short to test stop strings: {longer!r}"
        cut = model.generate(prompt, max_new_tokens=10, do_sample=False, stop=[stop])[0]
        assert stop not in cut and longer.startswith(cut)

    def test_first_token_script(self, model) -> None:
        self._needs(model, "generate")
        out = model.generate(["I wanted to"], max_new_tokens=2, do_sample=False, first_token_script="thai")[0]
        assert out and "\u0e00" <= out[0] <= "\u0e7f", out

    # -- chat ----------------------------------------------------------------------
    def test_chat_format_gives_a_prompt_the_model_takes(self, model) -> None:
        self._needs(model, "chat_format")
        messages = [{"role": "user", "content": "Translate to English: Je t’aime."}]
        prompt = model.format_chat(messages)
        assert isinstance(prompt, str) and "Je t’aime." in prompt
        assert model.tokenize([prompt])[0]
        if "generate" in type(model.backend).capabilities:
            assert isinstance(model.chat(messages, max_new_tokens=3, do_sample=False), str)
