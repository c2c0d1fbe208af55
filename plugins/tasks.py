"""Registers the task files shipped in ``specs/tasks/``."""

from __future__ import annotations

from collections.abc import Callable

from babelplug.hookspecs import hookimpl
from babelplug.schemas import specs_dir


@hookimpl
def register_task_specs(register: Callable[..., None]) -> None:
    for path in sorted((specs_dir() / "tasks").glob("*.json")):
        register(path)
