"""WangChanGLM (pythainlp/wangchanglm-7.5B-sft-en, -enth): XGLM-7.5B instruction fine-tunes.

An ``XGLMForCausalLM`` with XGLM's tokenizer. Chat format
``<human>: …\\n<bot>: `` (a system message becomes the ``<context>: …`` line).
Without explicit parameters, generation uses the card's sampling settings.
The card's ``exclude_ids`` trick (suppress every non-Thai piece at the first
step) is the generation parameter ``first_token_script="thai"``, available on
every backend.
"""

from __future__ import annotations

from collections.abc import Callable

from babelplug.hookspecs import hookimpl
from babelplug.plugins.xglm import XGLMBackend


class WangChanGLMBackend(XGLMBackend):
    """An XGLM checkpoint used as WangChanGLM (catalog: ``specs/models/wangchanglm.json``)."""

    name = "wangchanglm"
    model_types = ()  # XGLM folders go to 'xglm'; pick this backend by name or catalog entry
    default_chat_format = "wangchanglm"
    default_generation = {
        "max_new_tokens": 512, "do_sample": True, "no_repeat_ngram_size": 2,
        "top_k": 50, "top_p": 0.95, "typical_p": 1.0, "temperature": 0.9,
    }  # fmt: skip


@hookimpl
def register_backends(register: Callable[..., None]) -> None:
    register(WangChanGLMBackend)
