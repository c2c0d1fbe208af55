"""Task data sources: a task's ``data`` block, a language and a split become checked records.

A task's ``data`` block names a local file (``path``), datasets on the hubs
(``hub``: per-hub dataset ids, with ``subset``, ``split``, ``revision``,
``splits``), or both. Where one language's records come from, first match wins:

1. ``data=`` (``bp.run(data=...)``, ``babelplug run --data``): that local file.
2. A hub picked **for the data**: the ``hub=`` argument of :func:`load_records`
   (the runner passes its ``data_hub``), else the per-task config table
   ``[tasks."NAME"] hub``. The task's dataset id on that hub is used; the task
   having none is an error. ``local`` picks the task's ``path``.
3. The task's ``path`` (its packaged or local copy). The global hub switches
   (``BABELPLUG_HUB``, the config file's ``hub``) never replace a local copy:
   they choose where weights come from.
4. A hub-only task: the configured hub (``BABELPLUG_HUB`` > config file
   ``hub`` > ``huggingface``); when that hub has no id for the task, the first
   hub the task lists (a global hub setting often targets weights, and many
   datasets are on one hub only).

The revision is the per-task table's ``revision``, else the task's (one string,
or per hub), else the hub's default (``main``; ``master`` on ModelScope).
Offline mode is the models' (argument > ``BABELPLUG_OFFLINE`` > a true
``HF_HUB_OFFLINE`` > config file ``offline``): no network call for data either,
and a dataset missing from the cache is a
:class:`~babelplug.errors.DataSourceError` at once, naming the dataset, subset,
split, revision, hub and cache searched. Split names are babelplug's
(``validation``, ``test``...); ``splits`` maps them to the names of the files or
hubs where those differ. Records are checked against the task's
``record_schema`` and name their ``file:line`` (for hubs:
``huggingface:ID/SUBSET:SPLIT`` and the 1-based row); a language or task with no
records is an error, never an empty run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Setting, load_config
from .datafiles import Checker, read_rows
from .datahubs import DatasetRef, serves_datasets
from .datahubs import rows as hub_rows
from .errors import DataSourceError, SpecError, UnknownHubError, close_matches
from .tasks import Record, Task, load_task


@dataclass(frozen=True)
class Source:
    """Where one language's records of one split come from, and why."""

    hub: str | None
    """None for a local file, else the hub the dataset is read from."""
    split: str | None
    """The babelplug split name."""
    path: Path | None = None
    ref: DatasetRef | None = None
    offline: bool = False
    sources: Mapping[str, str] = field(default_factory=dict)
    """Where the choice of source, hub, revision and offline mode came from."""

    @property
    def label(self) -> str:
        """What records name as their ``file``: the path, or ``hub:ID/SUBSET:SPLIT``."""
        return str(self.path) if self.ref is None else self.ref.label

    def as_dict(self) -> dict[str, Any]:
        """For results files: hub, dataset, subset, split, revision or path."""
        out: dict[str, Any] = {"split": self.split, "source": self.label}
        if self.ref is not None:
            out.update(hub=self.ref.hub, dataset=self.ref.dataset, subset=self.ref.subset,
                       source_split=self.ref.split, revision=self.ref.revision)  # fmt: skip
        return out


def _task(task: Task | str | os.PathLike[str]) -> Task:
    return task if isinstance(task, Task) else load_task(task)


def _hub_setting(task: Task, hub: str | None) -> tuple[Setting, dict[str, Setting], bool]:
    """The hub chosen for the data, the per-task table, and whether the choice is explicit (argument or table)."""
    cfg = load_config()
    table = cfg.task_table([task.name])
    per_task = table[1] if table else {}
    chosen = cfg.pick("hub", hub, per_task)
    if chosen.source != "argument" and table and "hub" in per_task:
        chosen = Setting(chosen.value, f'{chosen.source.removeprefix("file ")}: [tasks."{table[0]}"] hub')
    return chosen, per_task, hub is not None or "hub" in per_task


def resolve_source(
    task: Task | str | os.PathLike[str], language: str | None, split: str | None = None, *,
    data: str | os.PathLike[str] | None = None, hub: str | None = None, revision: str | None = None,
    offline: bool | None = None,
) -> Source:  # fmt: skip
    """Where ``language``'s records of ``split`` (default: the task's ``data.split``) come from; nothing is read."""
    from .manager import registry

    task = _task(task)
    spec = task.spec["data"]
    split = split or spec.get("split")
    off = load_config().pick("offline", offline)
    if data is not None:
        return Source(None, split, task.data_file(language, split, data), offline=bool(off.value), sources={"data": "argument"})
    chosen, per_task, explicit = _hub_setting(task, hub)
    hubs, ids = registry().hubs, spec.get("hub", {})
    use_path = "path" in spec and (not explicit or chosen.value == "local")
    if chosen.value not in hubs and (explicit or not use_path):
        raise UnknownHubError(str(chosen.value), hubs, "" if chosen.source == "argument" else f" (from {chosen.source})")
    if explicit and chosen.value == "local" and "path" not in spec:
        raise DataSourceError(f"task {task.name!r} has no local data file (data.path) for hub 'local' (from {chosen.source})")
    if use_path or not ids:
        reason = f"hub 'local' (from {chosen.source})" if explicit else "the task's data.path"
        return Source(None, split, task.data_file(language, split), offline=bool(off.value), sources={"data": reason})
    name, why = str(chosen.value), chosen.source
    if name not in ids:
        if explicit:
            local = f"; its local copy: hub 'local'" if "path" in spec else ""
            raise DataSourceError(
                f"task {task.name!r} has no dataset on hub {name!r} (from {why}); it is on: {', '.join(ids)}{local}"
            )
        name, why = next(iter(ids)), f"the task's first hub ({chosen.value!r}, from {why}, has no id for it)"
    hub_obj = hubs[name]
    if not serves_datasets(hub_obj):
        raise DataSourceError(f"hub {name!r} (from {why}) serves no datasets; task {task.name!r} can use: huggingface, modelscope")
    if split is None:
        raise SpecError(str(task.path), "$.data.split", f"task {task.name!r} reads a hub dataset: name its split (data.split)")
    rev = _revision(spec.get("revision"), name, revision, per_task)
    ref = DatasetRef(name, ids[name], task.subset(language), task.split_name(split, name) or split, hub_obj.revision(rev.value) or "main")
    return Source(name, split, ref=ref, offline=bool(off.value),
                  sources={"data": f"hub (from {why})", "revision": rev.source, "offline": off.source})  # fmt: skip


def _revision(spec_rev: Any, hub: str, argument: str | None, per_task: Mapping[str, Setting]) -> Setting:
    if argument is not None:
        return Setting(argument, "argument")
    if "revision" in per_task:
        return per_task["revision"]
    value = spec_rev.get(hub) if isinstance(spec_rev, Mapping) else spec_rev
    return Setting(value, "task data.revision") if value else Setting(None, f"default (hub {hub!r})")


def load_records(
    task: Task | str | os.PathLike[str], language: str | None, split: str | None = None, *,
    data: str | os.PathLike[str] | None = None, hub: str | None = None, offline: bool | None = None,
    limit: int | None = None,
) -> list[Record]:  # fmt: skip
    """The checked records of one language and split of a task.

    :param task: a loaded Task, a registered task name, or a task JSON path.
    :param language: one of the task's languages (None for a task without variants).
    :param split: a babelplug split name; default the task's ``data.split``.
    :param data: a local file replacing the task's data (``{language}``, ``{split}`` allowed).
    :param hub: pick this hub for the data (over a local copy); see the module docs.
    :param offline: no network call (default: the configuration's).
    :param limit: at most this many records (the first ones).
    :raises DataSourceError: missing file, dataset not cached, unknown subset or split, no records.
    :raises DataError: a record or column that breaks the task's record schema (``file:line: field``).
    """
    task = _task(task)
    if limit is not None and limit < 1:
        raise DataSourceError(f"task {task.name!r}: limit must be at least 1, got {limit}")
    return _read(task, language, resolve_source(task, language, split, data=data, hub=hub, offline=offline), limit)


def _read(task: Task, language: str | None, src: Source, limit: int | None) -> list[Record]:
    checker = Checker(task.spec["record_schema"])
    if src.ref is None:
        assert src.path is not None
        where = f"data file of task {task.name!r} (language {language!r}, split {src.split!r})"
        found = read_rows(src.path, checker, limit, where)
    else:
        found = hub_rows(_hub(src.ref.hub), src.ref, checker, limit, src.offline)
    records = [Record(language, src.label, line, fields, index, src.split) for index, (line, fields) in enumerate(found)]
    if not records:
        raise DataSourceError(f"task {task.name!r}, language {language!r}, split {src.split!r}: no records in {src.label}")
    return records


def _hub(name: str) -> Any:
    from .manager import registry

    return registry().hubs[name]


def _languages(task: Task, languages: Sequence[str] | None) -> list[str | None]:
    known = task.languages
    for lang in languages or ():
        if lang not in known:
            raise SpecError(str(task.path), "$.languages", f"no language {lang!r}{close_matches(lang, known)}")
    return list(languages or known) or [None]


def download_data(
    task: Task | str | os.PathLike[str], languages: Sequence[str] | None = None, split: str | None = None, *,
    hub: str | None = None, revision: str | None = None, offline: bool | None = None,
) -> list[tuple[str | None, Source, int]]:  # fmt: skip
    """Fetch a task's hub dataset into the hub cache and check each language's split; ``(language, source, records)``.

    The hub is ``hub`` > ``[tasks."NAME"] hub`` > ``BABELPLUG_HUB`` > config file ``hub`` >
    ``huggingface``, else the first hub the task lists. The whole repository
    snapshot is fetched (every subset and split), so the other splits are cached too.
    """
    task = _task(task)
    ids = task.spec["data"].get("hub", {})
    if not ids:
        raise DataSourceError(f"task {task.name!r} reads only its local file {task.spec['data'].get('path')!r}: nothing to download")
    off = load_config().pick("offline", offline)
    if off.value:
        source = off.source.replace("argument", "--offline / offline=True")
        raise DataSourceError(f"cannot download the data of task {task.name!r}: offline mode is on (from {source}); pass --no-offline or unset it")
    chosen, _, explicit = _hub_setting(task, hub)
    name = str(chosen.value) if chosen.value in ids or explicit else next(iter(ids))
    if name == "local":
        raise DataSourceError(f"hub 'local' has nothing to download; choose another hub with --hub (task {task.name!r} is on: {', '.join(ids)})")
    out = []
    for language in _languages(task, languages):
        src = resolve_source(task, language, split, hub=name, revision=revision, offline=False)
        out.append((language, src, len(_read(task, language, src, None))))
    return out
