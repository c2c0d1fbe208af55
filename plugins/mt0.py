"""mT0 (bigscience/mt0-*): mT5 encoder-decoders fine-tuned to follow instructions.

Scoring: the encoder reads the context and the decoder is scored on the
continuation, as lm-evaluation-harness does by default (no final ``</s>``), or
with the final ``</s>`` under ``score_eos=True`` (see :mod:`babelplug.seq2seq`). Chat:
the instruction as plain text; end it clearly ("Translate to English: Je t'aime.").
"""

from __future__ import annotations

from collections.abc import Callable

from babelplug.hookspecs import hookimpl
from babelplug.seq2seq import TransformersSeq2SeqBackend


class MT0Backend(TransformersSeq2SeqBackend):
    """MT5ForConditionalGeneration through transformers (catalog: ``specs/models/mt0.json``)."""

    name = "mt0"
    model_types = ("mt5",)


@hookimpl
def register_backends(register: Callable[..., None]) -> None:
    register(MT0Backend)
