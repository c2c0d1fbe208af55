"""Hubs turn a repository id and revision into a local model folder.

Backends only ever see folders. A hub is registered through the
``register_hubs`` hook; the built-in ones are ``huggingface`` and ``local``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from .errors import ModelLoadError

_TRUE = {"1", "true", "yes", "on"}


def offline_default() -> bool:
    """Offline unless told otherwise: ``BABELPLUG_OFFLINE`` or ``HF_HUB_OFFLINE``."""
    for var in ("BABELPLUG_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    return False


class Hub(ABC):
    """A source of model folders."""

    name: ClassVar[str]
    default_revision: ClassVar[str | None] = None

    @abstractmethod
    def resolve(self, repo_id: str, revision: str | None, offline: bool) -> Path:
        """Return the local folder holding ``repo_id`` at ``revision``.

        Offline, make no network call: a missing entry raises
        :class:`~babelplug.errors.ModelLoadError` naming the hub, id, revision
        and the cache searched.
        """


class LocalHub(Hub):
    """Folders below a root directory (``$BABELPLUG_LOCAL_ROOT``, default ``.``)."""

    name = "local"

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self._root = root

    @property
    def root(self) -> Path:
        return Path(self._root or os.environ.get("BABELPLUG_LOCAL_ROOT", "."))

    def resolve(self, repo_id: str, revision: str | None, offline: bool) -> Path:
        path = self.root / repo_id
        if not path.is_dir():
            raise ModelLoadError(f"hub 'local': no folder {repo_id!r} under {self.root.resolve()}")
        return path


class HuggingFaceHub(Hub):
    """The HuggingFace hub and its cache (``HF_HUB_CACHE``), through huggingface_hub."""

    name = "huggingface"
    default_revision = "main"

    def resolve(self, repo_id: str, revision: str | None, offline: bool) -> Path:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

        revision = revision or self.default_revision
        try:
            return Path(snapshot_download(repo_id, revision=revision, local_files_only=offline))
        except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError) as exc:
            where = "offline, " if offline else ""
            raise ModelLoadError(
                f"hub 'huggingface': {repo_id!r} at revision {revision!r} is not available "
                f"({where}cache searched: {constants.HF_HUB_CACHE}): {type(exc).__name__}"
            ) from None
