"""BLOOMZ (bigscience/bloomz-*): BLOOM causal LMs fine-tuned to follow instructions.

BLOOM's tokenizer adds no start token, so an empty context is scored given
``<s>``. ALiBi positions make left-padded batches exact without position ids.
Chat: the instruction as plain text; end it clearly, as the card advises.
"""

from __future__ import annotations

from collections.abc import Callable

from babelplug.hf import TransformersBackend
from babelplug.hookspecs import hookimpl


class BloomzBackend(TransformersBackend):
    """BloomForCausalLM through transformers (catalog: ``specs/models/bloomz.json``)."""

    name = "bloomz"
    model_types = ("bloom",)


@hookimpl
def register_backends(register: Callable[..., None]) -> None:
    register(BloomzBackend)
