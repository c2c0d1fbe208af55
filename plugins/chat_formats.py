"""Built-in chat formats.

``plain``: the instruction as plain text, for instruction-following models
without a chat template (mT0, BLOOMZ) and base LMs (XGLM). A single turn is the
text itself (system text, then the user text, one per line); a longer
conversation becomes a ``User:``/``Assistant:`` transcript ending in
``Assistant:`` so the model knows where its answer starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from babelplug.backend import Message
from babelplug.hookspecs import hookimpl


def plain(messages: Sequence[Message]) -> str:
    """Render messages as plain instruction text (see module docstring)."""
    users = [m for m in messages if m["role"] == "user"]
    if len(users) == 1 and messages[-1]["role"] == "user" and all(m["role"] != "assistant" for m in messages):
        return "\n".join(m["content"] for m in messages)
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names[m['role']]}: {m['content']}" for m in messages]
    return "\n".join(lines + ["Assistant:"])


@hookimpl
def register_chat_formats(register: Callable[..., None]) -> None:
    register("plain", plain)
