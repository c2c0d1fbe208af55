"""The backend contract: the five operations every model family implements.

A plugin adds a model family by subclassing :class:`Backend` and registering the
class through the ``register_backends`` hook (see :mod:`babelplug.hookspecs`).
Backends only ever see a local directory; hubs turn model references into one.

The operations and the semantics the conformance suite checks:

``load(path, **options)``
    Build a ready backend from a model folder. ``options`` were already
    validated against :attr:`Backend.options_schema` (unknown options are
    errors), with the catalog entry's defaults filled in.
``tokenize(texts)``
    Token ids per text, with the family's special-token conventions (XGLM puts
    ``</s>`` first).
``score(requests)``
    For each ``(context, continuation)``: the summed natural-log probability of
    the continuation's tokens given the context, their count, and whether the
    continuation is the greedy decode. An empty context means "given only the
    family's prefix token". Batched results equal unbatched ones (fp32: 1e-4).
    An empty or whitespace-only continuation is a
    :class:`~babelplug.errors.RequestError` (checked by :meth:`babelplug.Model.score`
    before the backend is called).
``generate(prompts, params)``
    Completions without the prompt. ``params`` were validated against
    ``specs/generation.schema.json``; ``stop`` strings are cut off the text.
``chat_format(messages)``
    The prompt string the family expects for a list of
    ``{"role": ..., "content": ...}`` messages.

A backend that cannot do ``score``, ``generate`` or ``chat_format`` leaves it
out of :attr:`Backend.capabilities` and does not override it. Asking a loaded
model for it raises :class:`~babelplug.errors.CapabilityError` without calling
the backend, and :func:`babelplug.run` checks a task's needs against the
declared capabilities before any model loads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .errors import CapabilityError

#: Operations a backend may declare besides the mandatory ``load`` and ``tokenize``.
OPERATIONS = ("score", "generate", "chat_format")

Message = Mapping[str, str]


@dataclass(frozen=True)
class Score:
    """The result of scoring one ``(context, continuation)`` request."""

    logprob: float
    """Summed natural-log probability of the continuation given the context."""
    num_tokens: int
    """How many continuation tokens were scored."""
    is_greedy: bool
    """Whether greedy decoding from the context would produce the continuation."""
    truncated: bool = False
    """Whether the context was left-truncated to fit the model's maximum length."""
    resplit: bool = False
    """Whether the continuation's tokens were chosen apart from ``encode(context + continuation)``,
    because that tokenization crosses the context/continuation boundary (see
    :meth:`babelplug.hf.TransformersBackend.encode_pairs`)."""


class Backend(ABC):
    """Base class of every model backend. Subclass it, then register the class.

    Class attributes a subclass sets:

    * ``name``: the backend's registry name (``"xglm"``).
    * ``capabilities``: the subset of :data:`OPERATIONS` it implements.
    * ``options_schema``: JSON Schema (an object schema) of its ``load`` options.
    * ``model_types``: ``config.json`` ``model_type`` values it serves, used to
      pick a backend for a bare folder.
    """

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset(OPERATIONS)
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}
    model_types: ClassVar[tuple[str, ...]] = ()

    path: Path
    options: dict[str, Any]

    @classmethod
    @abstractmethod
    def load(cls, path: Path, **options: Any) -> Backend:
        """Load the model in ``path`` with validated ``options``."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, special tokens included as the family adds them."""

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> None:
        """Check load options beyond the schema, before anything loads (default: nothing)."""

    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Text of each id list, special tokens dropped (the inverse of :meth:`tokenize`)."""
        raise self._unsupported("detokenize")

    def score(self, requests: Sequence[tuple[str, str]]) -> list[Score]:
        """Score each ``(context, continuation)``; see the module docstring."""
        raise self._unsupported("score")

    def generate(self, prompts: Sequence[str], params: Mapping[str, Any]) -> list[str]:
        """Complete each prompt; return the completions without the prompt."""
        raise self._unsupported("generate")

    def chat_format(self, messages: Sequence[Message]) -> str:
        """Render chat messages into the prompt string the family expects."""
        raise self._unsupported("chat_format")

    def close(self) -> None:
        """Release the model's memory; the backend is unusable afterwards."""

    @classmethod
    def _unsupported(cls, operation: str) -> CapabilityError:
        return CapabilityError(f"backend {cls.name!r} does not support {operation!r}")

    @classmethod
    def check_contract(cls) -> None:
        """Raise if the declared capabilities do not match the overridden methods."""
        from .errors import PluginError

        if not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise PluginError(f"backend class {cls.__qualname__} has no 'name'")
        unknown = set(cls.capabilities) - set(OPERATIONS)
        if unknown:
            raise PluginError(f"backend {cls.name!r} declares unknown capabilities {sorted(unknown)}")
        for op in OPERATIONS:
            implemented = getattr(cls, op) is not getattr(Backend, op)
            if implemented != (op in cls.capabilities):
                state = "implements" if implemented else "does not implement"
                raise PluginError(
                    f"backend {cls.name!r} {state} {op!r} but "
                    f"{'does not declare' if implemented else 'declares'} it in capabilities"
                )
