"""Built-in hubs: the HuggingFace hub, the ModelScope hub and local folders."""

from __future__ import annotations

from collections.abc import Callable

from babelplug.hookspecs import hookimpl
from babelplug.hubs import HuggingFaceHub, LocalHub, ModelScopeHub


@hookimpl
def register_hubs(register: Callable[..., None]) -> None:
    register(HuggingFaceHub())
    register(ModelScopeHub())
    register(LocalHub())
