"""Input limits of transformers backends: maximum length, character budget, memory budget.

A backend checks every request against three limits before it allocates anything:

``max_chars`` (load option, default 1,000,000)
    Characters per request (context plus continuation, or prompt), checked
    before tokenizing: tokenizing a 50 MB string is itself slow and can abort
    the process.
``max_length`` (from the model, or the load option)
    Tokens per sequence. Over-long requests are left-truncated (the context
    keeps its last tokens, as lm-evaluation-harness does) with a
    :class:`TruncationWarning`, or refused, as the load option ``truncation``
    (``"left"`` or ``"error"``) says.
``memory_budget`` (load option, default 8 GiB)
    Bytes a batch's activations may take, by :class:`Shape`'s estimate. A
    batch over it is split; a single request over it is refused.

Refusals are :class:`~babelplug.errors.InputTooLargeError` naming the request.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputTooLargeError, OptionError

DEFAULT_MAX_CHARS = 1_000_000
DEFAULT_MEMORY_BUDGET = 8 * 2**30
#: lm-evaluation-harness's default where neither config nor tokenizer gives a length.
DEFAULT_MAX_LENGTH = 2048
#: A tokenizer's ``model_max_length`` above this means "unset" (transformers uses 1e30).
SANE_TOKENIZER_LIMIT = 1_000_000
#: Config attributes that bound positions, in lm-evaluation-harness's order.
POSITION_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")

#: JSON Schema of the limit load options (merged into ``TRANSFORMERS_OPTIONS``).
LIMIT_OPTIONS: dict[str, Any] = {
    "max_length": {
        "type": "integer", "minimum": 2,
        "description": "Tokens per sequence; default the config's positions (n_positions, max_position_embeddings, n_ctx), "
        "else the tokenizer's model_max_length, else 2048 (models without a hard limit: BLOOM, mT5).",
    },
    "truncation": {"enum": ["left", "error"], "description": "Over-long requests: left-truncate the context/prompt (default), or refuse them."},
    "max_chars": {"type": "integer", "minimum": 1, "description": "Characters per request, checked before tokenizing (default 1,000,000)."},
    "memory_budget": {
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)? ?([KMGT]i?B)?$"}],
        "description": "Estimated activation bytes one batch may take (default 8GiB); bigger batches are split, a bigger single request refused.",
    },
}  # fmt: skip


class TruncationWarning(UserWarning):
    """Some requests were left-truncated, or generation was capped, to fit the model's maximum length."""


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def parse_bytes(value: int | str) -> int:
    """Bytes from an integer or a size such as ``"8GiB"``, ``"500 MB"``."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?) ?(?:([KMGT]i?)B)?", value.strip())
    if not match:
        raise OptionError("load options", "$.memory_budget", f"not a size: {value!r} (say 8GiB or 500MB)")
    return int(float(match[1]) * _UNITS[(match[2] or "").upper()])


@dataclass(frozen=True)
class Limits:
    """The limits one loaded model works under."""

    max_length: int
    source: str
    """Where ``max_length`` came from (shown in messages)."""
    truncation: str = "left"
    max_chars: int = DEFAULT_MAX_CHARS
    memory_budget: int = DEFAULT_MEMORY_BUDGET

    @classmethod
    def of(cls, config: Any, tokenizer: Any, options: Mapping[str, Any]) -> Limits:
        """Limits from the model's config and tokenizer, and the load options."""
        hard = next(((a, int(getattr(config, a))) for a in POSITION_ATTRS if getattr(config, a, None)), None)
        if options.get("max_length"):
            length, source = int(options["max_length"]), "load option max_length"
            if hard and length > hard[1]:
                raise OptionError("load options", "$.max_length", f"{length} exceeds the model's {hard[1]} positions (config.json {hard[0]})")
        elif hard:
            length, source = hard[1], f"config.json {hard[0]}"
        elif 1 < (getattr(tokenizer, "model_max_length", None) or 0) <= SANE_TOKENIZER_LIMIT:
            length, source = int(tokenizer.model_max_length), "tokenizer model_max_length"
        else:
            length, source = DEFAULT_MAX_LENGTH, "default; set the load option max_length"
        return cls(
            length, source, options.get("truncation", "left"), int(options.get("max_chars", DEFAULT_MAX_CHARS)),
            parse_bytes(options.get("memory_budget", DEFAULT_MEMORY_BUDGET)),
        )  # fmt: skip

    def describe(self) -> str:
        return f"max_length {self.max_length} ({self.source})"

    def check_chars(self, requests: Sequence[Sequence[str]], source: str, parts: Sequence[str]) -> None:
        """Refuse a request whose texts together exceed ``max_chars``; name its longest part."""
        for i, texts in enumerate(requests):
            if sum(map(len, texts)) > self.max_chars:
                longest = max(range(len(texts)), key=lambda k: len(texts[k]))
                raise InputTooLargeError(
                    source, i, parts[longest],
                    f"{sum(map(len, texts))} characters, more than max_chars={self.max_chars} (load option max_chars)",
                )  # fmt: skip

    def fit_pair(self, index: int, context: list[int], continuation: list[int], source: str, *, causal: bool) -> tuple[list[int], bool]:
        """The context cut to fit (its last tokens), and whether it was cut.

        Causal: the model reads ``context + continuation[:-1]``, so at most
        ``max_length + 1`` tokens in all (lm-evaluation-harness's window).
        Encoder-decoder: the encoder reads at most ``max_length`` context tokens.
        A continuation longer than ``max_length`` is refused either way.
        """
        n = self.max_length
        if len(continuation) > n:
            raise InputTooLargeError(source, index, "continuation", f"{len(continuation)} tokens, more than the model's {self.describe()}")
        room = n + 1 - len(continuation) if causal else n
        if len(context) <= room:
            return context, False
        if self.truncation == "error":
            total = len(context) + len(continuation) if causal else len(context)
            raise InputTooLargeError(
                source, index, "context",
                f"{total} tokens, more than the model's {self.describe()}; load option truncation='left' keeps the last ones",
            )  # fmt: skip
        return context[len(context) - room :], True

    def fit_prompt(self, index: int, prompt: list[int], new_tokens: int, *, causal: bool) -> tuple[list[int], int, bool]:
        """The prompt cut to fit, the new tokens allowed, and whether the prompt was cut.

        Causal: prompt plus new tokens fit in ``max_length``; a prompt that leaves
        no room keeps its last ``max_length - min(new_tokens, max_length // 2)``
        tokens. Encoder-decoder: at most ``max_length`` prompt tokens and new tokens.
        """
        n = self.max_length
        if not causal:
            if len(prompt) > n and self.truncation == "error":
                raise InputTooLargeError("prompts", index, "prompt", f"{len(prompt)} tokens, more than the model's {self.describe()}")
            return prompt[-n:], min(new_tokens, n), len(prompt) > n
        if len(prompt) < n:
            return prompt, min(new_tokens, n - len(prompt)), False
        if self.truncation == "error":
            raise InputTooLargeError(
                "prompts", index, "prompt", f"{len(prompt)} tokens leave no room for new tokens in the model's {self.describe()}"
            )
        room = min(new_tokens, n // 2)
        return prompt[len(prompt) - (n - room) :], room, True


def warn_truncated(limits: Limits, truncated: int, total: int, what: str, capped: int = 0) -> None:
    """One :class:`TruncationWarning` for a call that truncated or capped some requests."""
    parts = []
    if truncated:
        parts.append(f"{truncated} of {total} {what} left-truncated")
    if capped:
        parts.append(f"max_new_tokens capped for {capped} of {total} prompts")
    if parts:
        hint = " (load option truncation='error' refuses them)" if truncated else ""
        warnings.warn(f"{'; '.join(parts)} to fit the model's {limits.describe()}{hint}", TruncationWarning, stacklevel=3)


@dataclass(frozen=True)
class Shape:
    """The sizes of a model that its activation memory depends on."""

    heads: int
    hidden: int
    ffn: int
    vocab: int
    layers: int
    itemsize: int

    @classmethod
    def of(cls, config: Any, itemsize: int) -> Shape:
        hidden = int(getattr(config, "hidden_size", None) or getattr(config, "d_model", 0) or 1024)
        ffn = next((int(v) for a in ("intermediate_size", "ffn_dim", "n_inner", "d_ff") if (v := getattr(config, a, None))), 4 * hidden)
        return cls(
            int(getattr(config, "num_attention_heads", None) or 16), hidden, ffn,
            int(getattr(config, "vocab_size", None) or 32000), int(getattr(config, "num_hidden_layers", None) or 24), itemsize,
        )  # fmt: skip

    def _layer(self, rows: int, q: int, k: int) -> int:
        """One attention layer: scores, softmax and mask (``q x k``), and the feed-forward activations."""
        return rows * (3 * self.heads * q * k + q * k + 8 * q * max(self.hidden, self.ffn)) * self.itemsize

    def causal_score(self, rows: int, width: int, picks: int) -> int:
        """A causal scoring batch: ``rows x width`` tokens, the head on ``picks`` positions (fp32 log-softmax)."""
        return self._layer(rows, width, width) + 3 * picks * self.vocab * 4

    def seq2seq_score(self, rows: int, encoder: int, decoder: int) -> int:
        """An encoder-decoder scoring batch: full logits over every decoder position."""
        return max(self._layer(rows, encoder, encoder), self._layer(rows, decoder, decoder + encoder)) + 3 * rows * decoder * self.vocab * 4

    def generation(self, rows: int, width: int, beams: int) -> int:
        """A generation batch: the first forward over ``width`` tokens and the key/value cache."""
        seqs = rows * max(beams, 1)
        return self._layer(seqs, width, width) + 2 * self.layers * seqs * width * self.hidden * self.itemsize + 4 * seqs * self.vocab * 4


def within_budget(chunk: list[int], cost: Callable[[list[int]], int], budget: int, refuse: Callable[[int, int], Exception]) -> Iterator[list[int]]:
    """``chunk`` split in halves until each part's ``cost`` fits ``budget``; a single index over it is refused."""
    estimate = cost(chunk)
    if estimate <= budget:
        yield chunk
    elif len(chunk) == 1:
        raise refuse(chunk[0], estimate)
    else:
        half = len(chunk) // 2
        yield from within_budget(chunk[:half], cost, budget, refuse)
        yield from within_budget(chunk[half:], cost, budget, refuse)


def over_budget(source: str, part: str, budget: int) -> Callable[[int, int], Exception]:
    """The error for a request whose estimated memory alone exceeds ``budget``."""

    def refuse(index: int, estimate: int) -> Exception:
        return InputTooLargeError(
            source, index, part,
            f"needs about {estimate / 2**30:.1f} GiB of activations, more than memory_budget={budget / 2**30:.1f} GiB "
            "(load options memory_budget, max_length)",
        )  # fmt: skip

    return refuse
