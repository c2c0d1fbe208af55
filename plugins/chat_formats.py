"""Built-in chat formats.

``plain``
    The instruction as plain text, for instruction-following models without a
    chat template (mT0, BLOOMZ, as their card advises) and base LMs (XGLM). A
    single turn is the text itself (system text, then the user text, one per
    line); a longer conversation becomes a ``User:``/``Assistant:`` transcript
    ending in ``Assistant:`` so the model knows where its answer starts.
``polylm``
    PolyLM's chat models: ``<|user|>\\n{text}\\n<|assistant|>\\n`` per turn.
``wangchanglm``
    WangChanGLM: ``<human>: {text}\\n<bot>: `` per turn; a system message
    becomes the optional ``<context>: {text}\\n`` line before the first turn.
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


def polylm(messages: Sequence[Message]) -> str:
    """PolyLM chat: ``<|user|>\\n…\\n<|assistant|>\\n`` (a system text leads, on its own line)."""
    out = []
    for m in messages:
        if m["role"] == "system":
            out.append(m["content"] + "\n")
        elif m["role"] == "user":
            out.append(f"<|user|>\n{m['content']}\n<|assistant|>\n")
        else:
            out.append(m["content"] + "\n")
    return "".join(out)


def wangchanglm(messages: Sequence[Message]) -> str:
    """WangChanGLM: ``<context>: …\\n`` (from a system message) then ``<human>: …\\n<bot>: ``."""
    out = []
    for m in messages:
        if m["role"] == "system":
            out.append(f"<context>: {m['content']}\n")
        elif m["role"] == "user":
            out.append(f"<human>: {m['content']}\n<bot>: ")
        else:
            out.append(m["content"] + "\n")
    return "".join(out)


@hookimpl
def register_chat_formats(register: Callable[..., None]) -> None:
    register("plain", plain)
    register("polylm", polylm)
    register("wangchanglm", wangchanglm)
