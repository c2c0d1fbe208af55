"""babelplug: one task, any multilingual model, any hub.

The public API::

    import babelplug as bp
    m = bp.load("xglm-564m")                 # catalog name, hub id or local folder
    m.score([("I wanted to conserve energy.\\n", "I shut off the light.")])
    m.generate(["Translate to English: Je t'aime."], max_new_tokens=20)
    report = bp.run("xcopa", m, languages=["zh", "th"])

Importing babelplug is cheap: torch and transformers load with the first model.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "loading",
    "run": "runner",
    "Report": "runner",
    "Model": "model",
    "ModelInfo": "model",
    "Backend": "backend",
    "Score": "backend",
    "hookimpl": "hookspecs",
    "load_task": "tasks",
    "ModelEntry": "catalog",
    "Hub": "hubs",
    "registry": "manager",
    "BabelplugError": "errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .backend import Backend, Score
    from .catalog import ModelEntry
    from .errors import BabelplugError
    from .hookspecs import hookimpl
    from .hubs import Hub
    from .loading import load
    from .manager import registry
    from .model import Model, ModelInfo
    from .runner import Report, run
    from .tasks import load_task


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'babelplug' has no attribute {name!r}")
