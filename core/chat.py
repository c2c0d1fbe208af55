"""Chat messages: validation and lookup of registered chat formats."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .backend import Message
from .errors import SpecError, UnknownChatFormatError

ROLES = ("system", "user", "assistant")

ChatFormat = Callable[[Sequence[Message]], str]


def check_messages(messages: Any) -> list[Message]:
    """Validate a conversation: a non-empty list of ``{"role", "content"}`` dicts."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise SpecError("chat messages", "$", "expected a non-empty list of {'role': ..., 'content': ...} objects")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or set(msg) - {"role", "content"} or "role" not in msg or "content" not in msg:
            raise SpecError("chat messages", f"$[{i}]", "expected exactly the keys 'role' and 'content'")
        if msg["role"] not in ROLES:
            raise SpecError("chat messages", f"$[{i}].role", f"{msg['role']!r} is not one of {list(ROLES)}")
        if not isinstance(msg["content"], str):
            raise SpecError("chat messages", f"$[{i}].content", "must be a string")
    return list(messages)


def chat_format(name: str) -> ChatFormat:
    """The registered chat format called ``name``."""
    from .manager import registry

    formats = registry().chat_formats
    if name not in formats:
        raise UnknownChatFormatError(name, formats)
    return formats[name]
