"""babelplug's own ``backend_call`` implementation: it performs the call.

Registered before any plugin and marked ``trylast``, so wrappers and
replacing implementations from plugins run around or before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .backend import Backend
from .hookspecs import hookimpl


@hookimpl(trylast=True)
def backend_call(backend: Backend, operation: str, args: Sequence[Any], params: Mapping[str, Any]) -> Any:
    method = getattr(backend, operation)
    return method(*args, params) if operation == "generate" else method(*args)
