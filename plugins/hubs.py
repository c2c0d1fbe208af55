"""Built-in hubs: the HuggingFace hub cache and local folders."""

from __future__ import annotations

from collections.abc import Callable

from babelplug.hookspecs import hookimpl
from babelplug.hubs import HuggingFaceHub, LocalHub


@hookimpl
def register_hubs(register: Callable[..., None]) -> None:
    register(HuggingFaceHub())
    register(LocalHub())
