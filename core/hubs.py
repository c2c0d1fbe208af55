"""Hubs turn a catalog entry or repository id, a revision and an offline flag into a local folder.

Backends only ever see folders. Hubs are registered through the ``register_hubs``
hook; the built-in ones are ``huggingface`` (through huggingface_hub),
``modelscope`` (through modelscope's ``snapshot_download``, imported only when a
ModelScope model is fetched) and ``local`` (folders under a root).

No hub ever waits on a network that is not there:

* offline, a hub makes no network call at all. It looks in its cache itself
  before calling any library, so a miss is an immediate
  :class:`~babelplug.errors.ModelLoadError` naming the hub, id, revision and
  the cache searched;
* online, it first checks that the hub's server (or the proxy in between)
  accepts a connection within ``timeout`` seconds. If it does not, a cached
  snapshot is used with a warning, and a missing one is an immediate error,
  instead of the libraries' minutes of retries.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from .config import Setting, load_config
from .errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from .catalog import ModelEntry

log = logging.getLogger("babelplug.hubs")


@dataclass(frozen=True)
class CachedModel:
    """One model in a hub's cache."""

    hub: str
    id: str
    revisions: tuple[str, ...]
    size: int
    """Bytes on disk."""
    path: Path


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks are not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += st.st_size
    return total


def _filled(path: Path) -> bool:
    """A folder with at least one entry."""
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


_PROBES: dict[tuple[str, int], tuple[float, str | None]] = {}


def unreachable(url: str, timeout: float) -> str | None:
    """Why ``url``'s server (or the proxy for it) does not accept a connection within ``timeout`` s; None if it does.

    Results are remembered for 30 seconds. Name resolution runs in a worker
    thread, so a resolver that hangs cannot block past ``timeout``.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or host, proxied.port or 80
    now = time.monotonic()
    known = _PROBES.get((host, port))
    if known and now - known[0] < 30:
        return known[1]
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=attempt, daemon=True, name=f"babelplug-probe-{host}")
    worker.start()
    worker.join(timeout)
    reason = outcome[0] if outcome else f"no answer within {timeout:g} s"
    _PROBES[(host, port)] = (now, reason)
    return reason


def network_timeout() -> float:
    """Seconds to wait for a hub's server (config key ``timeout``)."""
    return float(load_config().value("timeout"))


class Hub(ABC):
    """A source of model folders.

    Subclasses implement :meth:`resolve`; hubs with a cache also implement
    :meth:`cache_setting` and :meth:`cached` (for ``babelplug cache ls``).
    """

    name: ClassVar[str]
    default_revision: ClassVar[str | None] = None
    any_model: ClassVar[bool] = False
    """True when the hub can serve a catalog entry that lists no id for it (``local``)."""
    downloads: ClassVar[bool] = True
    """False for hubs with nothing to download (``local``)."""

    def revision(self, revision: str | None) -> str | None:
        """The revision to ask this hub for (``None`` means its default)."""
        return revision or self.default_revision

    def serves(self, entry: ModelEntry) -> bool:
        """Whether this hub can look up ``entry``."""
        return self.any_model or self.name in entry.hubs

    def locate(self, entry: ModelEntry, revision: str | None, offline: bool) -> Path:
        """The folder of a catalog entry: by default, this hub's id for it."""
        ref = entry.hubs.get(self.name)
        return self.resolve(ref.id if ref else entry.name, revision, offline)

    @abstractmethod
    def resolve(self, repo_id: str, revision: str | None, offline: bool) -> Path:
        """Return the local folder holding ``repo_id`` at ``revision``.

        Offline, make no network call: a missing entry raises
        :class:`~babelplug.errors.ModelLoadError` naming the hub, id, revision
        and the cache searched.
        """

    def cache_setting(self) -> Setting | None:
        """The cache folder this hub reads, and where that setting came from."""
        return None

    def cached(self) -> list[CachedModel]:
        """The models in this hub's cache."""
        return []

    # -- helpers for cache-backed hubs ----------------------------------------
    def cache_root(self) -> Path:
        setting = self.cache_setting()
        if setting is None:
            raise NotImplementedError(f"hub {self.name!r} has no cache")
        return Path(setting.value)

    def cached_revisions(self, repo_id: str) -> list[str]:
        """The revisions of ``repo_id`` in the cache (for error messages)."""
        return []

    def not_cached(self, repo_id: str, revision: str | None, why: str) -> ModelLoadError:
        """The error for a cache miss: hub, id, revision, why the network was not used, cache searched."""
        known = self.cached_revisions(repo_id)
        have = f"; cached revisions of {repo_id!r}: {', '.join(known)}" if known else ""
        return ModelLoadError(
            f"hub {self.name!r}: {repo_id!r} at revision {revision!r} is not cached "
            f"({why}; cache searched: {self.cache_root()}){have}"
        )

    def use_network(self, repo_id: str, revision: str | None, offline: bool, cached: bool, *,
                    miss: Callable[[str], Exception] | None = None, label: str | None = None) -> bool:  # fmt: skip
        """Whether to call the hub's library online; raise at once when neither network nor cache can serve.

        ``miss(why)`` builds the cache-miss error (default :meth:`not_cached`); ``label``
        names what was found cached in the warning (default ``repo_id@revision``).
        """
        miss = miss or (lambda why: self.not_cached(repo_id, revision, why))
        if offline:
            if not cached:
                raise miss("offline: no network call made")
            return False
        url = self.endpoint()
        reason = unreachable(url, network_timeout()) if url else None
        if reason is None:
            return True
        if not cached:
            raise miss(f"{url} is unreachable: {reason}")
        log.warning("hub %r: %s is unreachable (%s); using the cached %s", self.name, url, reason, label or f"{repo_id}@{revision}")
        return False

    def endpoint(self) -> str | None:
        """The server online requests go to, probed before any library call (None: no network)."""
        return None


class LocalHub(Hub):
    """Folders below a root directory (config ``local_root``, ``$BABELPLUG_LOCAL_ROOT``, default ``.``).

    A catalog entry is found as ``ROOT/<its local id>``, ``ROOT/<catalog name>``
    or ``ROOT/<its id on any hub>``, the first folder that exists.
    """

    name = "local"
    any_model = True
    downloads = False

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self._root = root

    def root_setting(self) -> Setting:
        if self._root is not None:
            return Setting(Path(self._root), "argument")
        return load_config().get("local_root") or Setting(Path("."), "default")

    @property
    def root(self) -> Path:
        return Path(self.root_setting().value)

    def revision(self, revision: str | None) -> str | None:
        return None

    def cache_setting(self) -> Setting:
        return self.root_setting()

    def locate(self, entry: ModelEntry, revision: str | None, offline: bool) -> Path:
        names = [ref.id for hub, ref in entry.hubs.items() if hub == self.name] + [entry.name]
        names += [ref.id for ref in entry.hubs.values()]
        names = list(dict.fromkeys(names))
        for name in names:
            if (self.root / name).is_dir():
                return self.root / name
        raise ModelLoadError(f"hub 'local': no folder {' or '.join(map(repr, names))} under {self.root.resolve()}")

    def resolve(self, repo_id: str, revision: str | None, offline: bool) -> Path:
        path = self.root / repo_id
        if not path.is_dir():
            raise ModelLoadError(f"hub 'local': no folder {repo_id!r} under {self.root.resolve()}")
        return path

    def cached(self) -> list[CachedModel]:
        root = self.root
        found = [p for p in _subdirs(root) if (p / "config.json").is_file()]
        found += [q for p in _subdirs(root) if not (p / "config.json").is_file() for q in _subdirs(p) if (q / "config.json").is_file()]
        return [CachedModel(self.name, p.relative_to(root).as_posix(), (), tree_size(p), p) for p in sorted(found)]


def _subdirs(path: Path) -> Iterator[Path]:
    try:
        yield from sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return


class HuggingFaceHub(Hub):
    """The HuggingFace hub and its cache (``models--org--name/{refs,snapshots}``), through huggingface_hub."""

    name = "huggingface"
    default_revision = "main"

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None):
        self._cache_dir = cache_dir

    def endpoint(self) -> str:
        return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"

    def cache_setting(self) -> Setting:
        if self._cache_dir is not None:
            return Setting(Path(self._cache_dir), "argument")
        found = load_config().get("hubs", self.name, "cache_dir")
        if found:
            return found
        from huggingface_hub import constants  # honours HF_HOME; read at import time

        return Setting(Path(constants.HF_HUB_CACHE), "default (huggingface_hub: HF_HOME or ~/.cache/huggingface/hub)")

    @staticmethod
    def repo_dir(cache: Path, repo_id: str, kind: str = "model") -> Path:
        """``models--org--name`` (``kind="dataset"``: ``datasets--org--name``) under ``cache``."""
        return cache / (f"{kind}s--" + repo_id.replace("/", "--"))

    def snapshot(self, cache: Path, repo_id: str, revision: str, kind: str = "model") -> Path | None:
        """The cached snapshot for ``revision`` (a ref name or a commit), without any library call."""
        repo = self.repo_dir(cache, repo_id, kind)
        ref = repo / "refs" / revision
        try:
            commit = ref.read_text(encoding="ascii").strip() if ref.is_file() else revision
        except OSError:
            return None
        snap = repo / "snapshots" / commit
        return snap if snap.is_dir() else None

    def cached_revisions(self, repo_id: str) -> list[str]:
        refs = self.repo_dir(self.cache_root(), repo_id) / "refs"
        return sorted(p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []

    def resolve(self, repo_id: str, revision: str | None, offline: bool) -> Path:
        revision = self.revision(revision) or "main"
        cache = self.cache_root()
        online = self.use_network(repo_id, revision, offline, self.snapshot(cache, repo_id, revision) is not None)
        require("huggingface_hub", "hf")
        from huggingface_hub import snapshot_download

        return fetched(self.name, repo_id, revision, online, cache, lambda: snapshot_download(
            repo_id, revision=revision, cache_dir=cache, local_files_only=not online, etag_timeout=network_timeout()))  # fmt: skip

    def cached(self) -> list[CachedModel]:
        out = []
        for repo in _subdirs(self.cache_root()):
            if not repo.name.startswith("models--"):
                continue
            refs = sorted(p.relative_to(repo / "refs").as_posix() for p in (repo / "refs").rglob("*") if p.is_file())
            snaps = [p.name for p in _subdirs(repo / "snapshots")]
            size = tree_size(repo / "blobs") if (repo / "blobs").is_dir() else tree_size(repo)
            repo_id = "/".join(repo.name.split("--")[1:])
            out.append(CachedModel(self.name, repo_id, tuple(refs or snaps), size, repo))
        return out


class ModelScopeHub(Hub):
    """The ModelScope hub and its cache (``MODELSCOPE_CACHE``, default ``~/.cache/modelscope``).

    Current layout (modelscope ≥ 1.38): ``models/{owner}--{name}/snapshots/{revision}/``.
    Older layouts are still read, as modelscope reads them, whatever the revision:
    ``models/{owner}/{name}`` (dots in ``name`` as ``___``), ``hub/models/{owner}/{name}``,
    ``{owner}/{name}`` and ``hub/{owner}/{name}``. The default revision is ``master``; a
    HuggingFace-style ``main`` is never sent to ModelScope.
    """

    name = "modelscope"
    default_revision = "master"

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None):
        self._cache_dir = cache_dir

    def revision(self, revision: str | None) -> str:
        return "master" if revision in (None, "", "main") else revision  # type: ignore[return-value]

    def endpoint(self) -> str:
        return os.environ.get("MODELSCOPE_ENDPOINT") or "https://modelscope.cn"

    def cache_setting(self) -> Setting:
        if self._cache_dir is not None:
            return Setting(Path(self._cache_dir), "argument")
        found = load_config().get("hubs", self.name, "cache_dir")
        return found or Setting(Path("~/.cache/modelscope").expanduser(), "default (modelscope)")

    @staticmethod
    def snapshot(cache: Path, repo_id: str, revision: str, kind: str = "model") -> Path | None:
        """Where modelscope 1.40 finds ``repo_id`` offline, in its own order, without importing it.

        ``kind="dataset"``: the same layouts with ``datasets`` in place of ``models``.
        """
        owner, _, name = repo_id.partition("/")
        models, safe = cache / f"{kind}s", name.replace(".", "___")
        if name and not (_filled(models / f"{owner}--{name}") or _filled(models / owner / safe)):
            for old in (cache / owner / name, cache / owner / safe, cache / "hub" / owner / name,
                        cache / "hub" / owner / safe, models / owner / name):  # fmt: skip
                if _filled(old):
                    return old
        if name:
            for old in (models / owner / safe, cache / "hub" / f"{kind}s" / owner / safe):
                if _filled(old):
                    return old
        current = models / repo_id.replace("/", "--") / "snapshots" / revision
        return current if _filled(current) else None

    def cached_revisions(self, repo_id: str) -> list[str]:
        snapshots = self.cache_root() / "models" / repo_id.replace("/", "--") / "snapshots"
        return [p.name for p in _subdirs(snapshots) if _filled(p)]

    def resolve(self, repo_id: str, revision: str | None, offline: bool) -> Path:
        revision = self.revision(revision)
        cache = self.cache_root()
        online = self.use_network(repo_id, revision, offline, self.snapshot(cache, repo_id, revision) is not None)
        timeout = str(max(1, round(network_timeout())))
        os.environ.setdefault("MODELSCOPE_API_CONNECT_TIMEOUT", timeout)  # read when modelscope is imported
        require("modelscope", "modelscope")
        from modelscope import snapshot_download

        return fetched(self.name, repo_id, revision, online, cache, lambda: snapshot_download(
            repo_id, revision=revision, cache_dir=str(cache), local_files_only=not online))  # fmt: skip

    def cached(self) -> list[CachedModel]:
        cache, out = self.cache_root(), []
        for models in (cache / "models", cache / "hub" / "models"):
            for repo in _subdirs(models):
                if (repo / "snapshots").is_dir():
                    repo_id = repo.name.replace("--", "/", 1)
                    revisions = tuple(p.name for p in _subdirs(repo / "snapshots") if _filled(p))
                    out.append(CachedModel(self.name, repo_id, revisions, tree_size(repo), repo))
                elif "--" not in repo.name:  # an owner folder of the legacy layout
                    for legacy in _subdirs(repo):
                        if _filled(legacy):
                            repo_id = f"{repo.name}/{legacy.name.replace('___', '.')}"
                            out.append(CachedModel(self.name, repo_id, ("(any: legacy layout)",), tree_size(legacy), legacy))
        return out


def fetched(hub: str, repo_id: str, revision: str, online: bool, cache: Path, download: Callable[[], str]) -> Path:
    """Run a library's download; any failure becomes one error naming hub, id, revision and cache."""
    try:
        return Path(download())
    except Exception as exc:  # noqa: BLE001 - any library failure becomes one clear error
        raise ModelLoadError(
            f"hub {hub!r}: {repo_id!r} at revision {revision!r} is not available "
            f"({'online' if online else 'offline'}; cache: {cache}): {type(exc).__name__}: {_first_line(exc)}"
        ) from None


def require(module: str, extra: str) -> None:
    """Raise MissingDependencyError naming the extra when ``module`` is not installed."""
    from .hf import installed

    if not installed(module):
        raise MissingDependencyError(f"{module} is not installed; install it with: pip install 'babelplug[{extra}]'")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
