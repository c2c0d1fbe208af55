"""Registers the shipped model catalog, ``specs/models/*.json``.

The catalog is data: an entry names its backend, and loading it needs a plugin
that provides that backend.
"""

from __future__ import annotations

from collections.abc import Callable

from babelplug.hookspecs import hookimpl
from babelplug.schemas import specs_dir


@hookimpl
def register_backends(register: Callable[..., None]) -> None:
    register(models=sorted((specs_dir() / "models").glob("*.json")))
