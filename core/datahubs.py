"""Task data on the hubs: a dataset repository's snapshot in the hub cache, and one split of it.

* ``huggingface``: the hub cache (``HF_HUB_CACHE``) holds
  ``datasets--{org}--{name}/refs/{revision}`` -> ``snapshots/{commit}/``, fetched
  by huggingface_hub's ``snapshot_download(repo_type="dataset")``; the split is
  read by ``datasets.load_dataset`` on that folder (its README ``configs:``, or
  its data files by name).
* ``modelscope``: the ModelScope cache (``MODELSCOPE_CACHE``) holds
  ``datasets/{owner}--{name}/snapshots/{revision}/`` (older
  ``datasets/{owner}/{name}`` layouts are read too, as modelscope reads them),
  fetched by modelscope's ``snapshot_download(repo_type="dataset")``; the split
  is read by ``MsDataset.load`` on that folder.

The snapshot is looked up without any library first (the code the model hubs use,
:meth:`HuggingFaceHub.snapshot` and :meth:`ModelScopeHub.snapshot` with
``kind="dataset"``): offline, a miss fails at once and no library is imported;
online, an unreachable server fails (or falls back to the cache) within the
configured ``timeout`` instead of the libraries' retries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .datafiles import Checker, Row
from .errors import DataSourceError, close_matches
from .hubs import Hub, HuggingFaceHub, ModelScopeHub, network_timeout, require

if TYPE_CHECKING:
    import datasets


#: Hub classes that serve datasets (subclasses included).
DATASET_HUBS: tuple[type[Hub], ...] = (HuggingFaceHub, ModelScopeHub)


@dataclass(frozen=True)
class DatasetRef:
    """One split of one subset of a dataset on a hub (names as the hub spells them)."""

    hub: str
    dataset: str
    subset: str | None
    split: str
    revision: str

    @property
    def label(self) -> str:
        """``huggingface:juletxara/xstory_cloze/zh:eval``: what records name as their file."""
        return f"{self.hub}:{self.dataset}" + (f"/{self.subset}" if self.subset else "") + f":{self.split}"

    def describe(self) -> str:
        subset = f", subset {self.subset!r}" if self.subset else ""
        return f"hub {self.hub!r}: dataset {self.dataset!r}{subset}, split {self.split!r}, revision {self.revision!r}"


def serves_datasets(hub: Hub) -> bool:
    return isinstance(hub, DATASET_HUBS)


def cached_snapshot(hub: Hub, ref: DatasetRef) -> Path | None:
    """The cached snapshot folder of ``ref``, found without any library call."""
    return hub.snapshot(hub.cache_root(), ref.dataset, ref.revision, kind="dataset")  # type: ignore[attr-defined]


def cached_datasets(hub: Hub) -> dict[str, list[str]]:
    """Dataset ids in the hub's cache and their cached revisions (for error messages)."""
    root = hub.cache_root() / "datasets" if isinstance(hub, ModelScopeHub) else hub.cache_root()
    out: dict[str, list[str]] = {}
    try:
        entries = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return {}
    for repo in entries:
        if isinstance(hub, HuggingFaceHub) and repo.name.startswith("datasets--"):
            refs = repo / "refs"
            names = sorted(p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []
            out["/".join(repo.name.split("--")[1:])] = names
        elif isinstance(hub, ModelScopeHub) and "--" in repo.name and (repo / "snapshots").is_dir():
            out[repo.name.replace("--", "/", 1)] = sorted(p.name for p in (repo / "snapshots").iterdir() if p.is_dir())
    return out


def not_cached(hub: Hub, ref: DatasetRef, why: str) -> DataSourceError:
    """A cache miss: dataset, subset, split, revision, hub, why no download, cache searched, what is cached."""
    cached = cached_datasets(hub)
    if ref.dataset in cached:
        have = f"; cached revisions of {ref.dataset!r}: {', '.join(cached[ref.dataset]) or 'none'}"
    else:
        have = close_matches(ref.dataset, cached).replace("; known:", "; cached datasets:")
    return DataSourceError(f"{ref.describe()}: not cached ({why}; cache searched: {hub.cache_root()}){have}")


def snapshot(hub: Hub, ref: DatasetRef, offline: bool) -> Path:
    """The local folder of ``ref``'s repository: the cached snapshot, or a download when online."""
    cached = cached_snapshot(hub, ref)
    online = _use_network(hub, ref, offline, cached is not None)
    cache = hub.cache_root()
    if isinstance(hub, ModelScopeHub):
        os.environ.setdefault("MODELSCOPE_API_CONNECT_TIMEOUT", str(max(1, round(network_timeout()))))
        require("modelscope", "modelscope")
        from modelscope import snapshot_download as ms_download

        return _fetch(ref, online, cache, lambda: ms_download(
            ref.dataset, revision=ref.revision, cache_dir=str(cache), local_files_only=not online, repo_type="dataset"))  # fmt: skip
    require("huggingface_hub", "hf")
    from huggingface_hub import snapshot_download as hf_download

    return _fetch(ref, online, cache, lambda: hf_download(
        ref.dataset, repo_type="dataset", revision=ref.revision, cache_dir=cache,
        local_files_only=not online, etag_timeout=network_timeout()))  # fmt: skip


def _use_network(hub: Hub, ref: DatasetRef, offline: bool, cached: bool) -> bool:
    """Whether to let the library go online (the hubs' own rule, with the dataset's cache-miss error)."""
    return hub.use_network(ref.dataset, ref.revision, offline, cached,
                           miss=lambda why: not_cached(hub, ref, why), label=f"snapshot of {ref.describe()}")  # fmt: skip


def _fetch(ref: DatasetRef, online: bool, cache: Path, download: Any) -> Path:
    try:
        return Path(download())
    except Exception as exc:  # noqa: BLE001 - any library failure becomes one clear error
        text = str(exc).strip().splitlines()
        raise DataSourceError(
            f"{ref.describe()}: not available ({'online' if online else 'offline'}; cache: {cache}): "
            f"{type(exc).__name__}: {text[0] if text else 'no details'}"
        ) from None


@contextmanager
def _quiet() -> Iterator[None]:
    """No ``datasets`` progress bars while babelplug reads a split."""
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def _converted_layout(folder: Path, subset: str) -> dict[str, str]:
    """``{split: pattern}`` for a ``{subset}/{split}/*.parquet`` folder (the hub's ``refs/convert/parquet`` layout)."""
    base = folder / subset
    if not base.is_dir():
        return {}
    return {p.name: f"{subset}/{p.name}/*.parquet" for p in sorted(base.iterdir()) if p.is_dir() and any(p.glob("*.parquet"))}


def load_split(hub: Hub, folder: Path, ref: DatasetRef) -> datasets.Dataset:
    """One split of a snapshot folder, through ``datasets`` (HuggingFace) or ``MsDataset`` (ModelScope).

    An unknown subset or split is a DataSourceError listing the available ones.
    """
    require("datasets", "data")
    import datasets

    with _quiet():
        try:
            configs = datasets.get_dataset_config_names(str(folder))
        except Exception as exc:  # noqa: BLE001
            raise DataSourceError(f"{ref.describe()}: cannot read the snapshot {folder}: {type(exc).__name__}: {exc}") from None
        name, extra = ref.subset, {}
        if ref.subset is not None and ref.subset not in configs:
            extra = {"data_files": _converted_layout(folder, ref.subset)}
            if not extra["data_files"]:
                raise DataSourceError(f"{ref.describe()}: no subset {ref.subset!r} in {folder}" + _listing(ref.subset, configs, "subsets"))
            name = None
        elif ref.subset is None and len(configs) > 1 and "default" not in configs:
            raise DataSourceError(f"{ref.describe()}: the dataset has several subsets, name one (data.subset): {', '.join(configs)}")
        try:
            builder = datasets.load_dataset_builder(str(folder), name, **extra)
            splits = [str(s) for s in (builder.config.data_files or builder.info.splits or {})]
        except Exception as exc:  # noqa: BLE001
            raise DataSourceError(f"{ref.describe()}: cannot read the snapshot {folder}: {type(exc).__name__}: {exc}") from None
        if ref.split not in splits:
            raise DataSourceError(f"{ref.describe()}: no split {ref.split!r}" + _listing(ref.split, splits, "splits"))
        try:
            if isinstance(hub, ModelScopeHub):
                from modelscope.msdatasets import MsDataset

                cache = hub.cache_root() / "datasets"  # MsDataset's own default under the configured cache
                loaded = MsDataset.load(str(folder), subset_name=name, split=ref.split, cache_dir=str(cache), **extra)
                return loaded.ds_instance
            return datasets.load_dataset(str(folder), name, split=ref.split, **extra)
        except Exception as exc:  # noqa: BLE001
            raise DataSourceError(f"{ref.describe()}: cannot load from {folder}: {type(exc).__name__}: {exc}") from None


def _listing(word: str, names: list[str], what: str) -> str:
    hint = close_matches(word, names)
    shown = ", ".join(names)
    return f" ({what}: {shown}){hint}" if hint.startswith("; did you mean") else f" ({what}: {shown or 'none'})"


def rows(hub: Hub, ref: DatasetRef, checker: Checker, limit: int | None, offline: bool) -> Iterator[Row]:
    """Checked rows of one split of a hub dataset; ``line`` is the 1-based row."""
    split = load_split(hub, snapshot(hub, ref, offline), ref)
    checker.check_columns(split.column_names, ref.label)
    if limit is not None and limit < len(split):
        split = split.select(range(limit))
    for row, fields in enumerate(split, 1):
        yield row, checker.check(checker.without_nulls(fields), ref.label, row)
