"""Generation helpers for transformers backends: stop strings and scripts.

Importing this module is cheap; torch loads only when a criterion runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import OptionError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

#: Generation parameters that matter only when sampling.
SAMPLING_KEYS = frozenset({"temperature", "top_k", "top_p", "typical_p"})

#: Unicode script names whose characters are not named after the script.
SCRIPT_PREFIXES = {"han": ("CJK UNIFIED IDEOGRAPH",), "japanese": ("HIRAGANA", "KATAKANA", "CJK UNIFIED IDEOGRAPH")}


def in_script(ch: str, script: str) -> bool:
    """Whether ``ch`` belongs to ``script`` ("thai", "latin", "han", "tamil", ...), by its Unicode name."""
    import unicodedata

    name = unicodedata.name(ch, "")
    prefixes = SCRIPT_PREFIXES.get(script.lower(), (script.upper() + " ",))
    return name.startswith(prefixes)


def pieces_outside_script(tokenizer: PreTrainedTokenizerBase, script: str) -> frozenset[int]:
    """Ids of vocabulary pieces with any character outside ``script``.

    A piece that starts a word (``▁``/``Ġ``) counts as holding a space, so it
    is outside too; so are special tokens. This generalises WangChanGLM's
    ``exclude_ids`` (every piece with a non-Thai character) to any script.
    """
    inside = []
    for i, raw in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        text = "" if raw is None or raw.startswith(("▁", "Ġ")) else tokenizer.convert_tokens_to_string([raw])
        if text and all(in_script(ch, script) for ch in text):
            inside.append(i)
    if not inside:
        raise OptionError("generation parameters", "$.first_token_script", f"no vocabulary piece of this model is written in script {script!r}")
    return frozenset(range(len(tokenizer))) - frozenset(inside)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


class StopOnStrings:
    """A transformers stopping criterion: a row is done once its new text holds a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str], prompt_width: int):
        self.tokenizer, self.stops, self.start = tokenizer, list(stops), prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)
