"""The unified, batch-first model API every backend is used through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backend import Backend, Message, Score
from .catalog import ModelEntry
from .chat import check_messages
from .errors import OptionError, RequestError, SpecError
from .schemas import schema, validate


@dataclass(frozen=True)
class ModelInfo:
    """Where a loaded model came from."""

    name: str
    backend: str
    hub: str | None
    revision: str | None
    path: Path
    entry: ModelEntry | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "hub": self.hub, "revision": self.revision, "path": str(self.path)}


def check_texts(texts: Any, what: str) -> list[str]:
    """A list of strings, or a SpecError naming the offending item."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise SpecError(what, "$", "expected a list of strings (the API is batch-first)")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise SpecError(what, f"$[{i}]", f"expected a string, got {type(text).__name__}")
    return list(texts)


def check_generation_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate generation parameters against ``specs/generation.schema.json`` (and ``first_token_script``'s script)."""
    from .checks import check_script

    validate(dict(params), schema("generation"), "generation parameters", OptionError)
    check_script(params)
    return dict(params)


class Model:
    """A loaded model: tokenize, score, generate and chat, whatever the backend."""

    def __init__(self, backend: Backend, info: ModelInfo):
        self.backend = backend
        self.info = info

    def __repr__(self) -> str:
        return f"<Model {self.info.name!r} backend={self.info.backend!r} path={str(self.info.path)!r}>"

    def _call(self, operation: str, args: Sequence[Any], params: Mapping[str, Any] | None = None) -> Any:
        from .manager import plugin_manager

        if operation != "tokenize" and operation not in type(self.backend).capabilities:
            raise type(self.backend)._unsupported(operation)
        return plugin_manager().hook.backend_call(backend=self.backend, operation=operation, args=args, params=params or {})

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, with the family's special tokens."""
        return self._call("tokenize", (check_texts(texts, "texts"),))

    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Text of each id list, special tokens dropped."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise SpecError("token ids", "$", "expected a list of lists of token ids (the API is batch-first)")
        for i, row in enumerate(ids):
            if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or not all(isinstance(t, int) for t in row):
                raise SpecError("token ids", f"$[{i}]", "expected a list of integer token ids")
        return self.backend.detokenize(ids)

    def score(self, requests: Sequence[tuple[str, str]]) -> list[Score]:
        """Log-probability of each continuation given its context (see :class:`Score`)."""
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
            raise SpecError("score requests", "$", "expected a list of (context, continuation) pairs")
        pairs = []
        for i, req in enumerate(requests):
            if not (isinstance(req, (tuple, list)) and len(req) == 2 and all(isinstance(x, str) for x in req)):
                raise SpecError("score requests", f"$[{i}]", "expected a (context, continuation) pair of strings")
            if not req[1].strip():
                what = "is empty" if not req[1] else f"is only whitespace ({req[1]!r})"
                raise RequestError("score requests", i, "continuation", f"{what}: there is nothing to score")
            pairs.append((req[0], req[1]))
        return self._call("score", (pairs,))

    def generate(self, prompts: Sequence[str], **params: Any) -> list[str]:
        """Complete each prompt; returns the completions without the prompts.

        ``params`` are checked against ``specs/generation.schema.json`` first.
        """
        prompts = check_texts(prompts, "prompts")
        return self._call("generate", (prompts,), check_generation_params(params))

    def format_chat(self, messages: Sequence[Message]) -> str:
        """The prompt the family expects for ``messages``."""
        return self._call("chat_format", (check_messages(messages),))

    def chat(self, messages: Sequence[Message], **params: Any) -> str:
        """Format ``messages`` and generate the assistant's reply."""
        params = check_generation_params(params)
        return self.generate([self.format_chat(messages)], **params)[0]

    def close(self) -> None:
        """Free the model's memory."""
        self.backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
