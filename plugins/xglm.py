"""XGLM (facebook/xglm-*): causal multilingual LMs with XGLM's tokenizer.

XGLM's tokenizer puts ``</s>`` (id 2) first and adds no ``<s>``, so an empty
context is scored given ``</s>`` alone, as the model card's COPA code does.
"""

from __future__ import annotations

from collections.abc import Callable

from babelplug.hf import TransformersBackend
from babelplug.hookspecs import hookimpl


class XGLMBackend(TransformersBackend):
    """XGLMForCausalLM through transformers (catalog: ``specs/models/xglm.json``)."""

    name = "xglm"
    model_types = ("xglm",)

    def prefix_ids(self) -> list[int]:
        return [self.tokenizer.eos_token_id]


@hookimpl
def register_backends(register: Callable[..., None]) -> None:
    register(XGLMBackend)
