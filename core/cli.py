"""The ``babelplug`` command line.

Errors print as one line (``babelplug: error: ...``) with exit status 2; pass
``--debug`` for the traceback. Listing commands never import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .errors import BabelplugError


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; values parse as JSON when they can."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BabelplugError(f"{what} {item!r}: expected KEY=VALUE")
        try:
            out[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = raw
    return out


def _add_hub_args(p: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """``--hub``, ``--revision``, ``--offline/--no-offline``; on commands they override the global ones."""
    p.add_argument("--hub", default=default, help="where the weights come from (huggingface, modelscope, local, ...)")
    p.add_argument("--revision", default=default, help="hub revision: branch, tag or commit")
    p.add_argument("--offline", action=argparse.BooleanOptionalAction, default=default,
                   help="make no network call: read hub caches only (--no-offline: allow the network)")  # fmt: skip


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True, help="catalog name or alias, local folder, or hub id")
    p.add_argument("--backend", "-b", help="backend to use (default: the catalog's or the folder's)")
    _add_hub_args(p)
    p.add_argument("--batch-size", type=int, help="requests per forward pass")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="load option (repeatable; JSON values)")


def _add_gen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--param", "-p", action="append", metavar="KEY=VALUE", help="generation parameter (repeatable; JSON values)")


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    options = _pairs(args.option, "--option")
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    return dict(backend=args.backend, hub=args.hub, revision=args.revision, offline=args.offline, **options)


def _load(args: argparse.Namespace) -> Any:
    from .loading import load

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return load(args.model, **_model_kwargs(args))


def _gen_params(args: argparse.Namespace) -> dict[str, Any]:
    from .model import check_generation_params

    params = _pairs(args.param, "--param")
    if args.max_new_tokens is not None:
        params["max_new_tokens"] = args.max_new_tokens
    return check_generation_params(params)


def cmd_plugins(args: argparse.Namespace) -> None:
    from .manager import registry

    reg = registry()
    for name, origin in reg.plugins.items():
        owned = sorted(f"{kind} {thing}" for (kind, thing), owner in reg.owners.items() if owner == name and kind != "model alias")
        print(f"{name} ({origin}): {', '.join(owned) or 'hooks only'}")


def cmd_models(args: argparse.Namespace) -> None:
    from .manager import registry

    reg = registry()
    for entry in reg.models.values():
        hubs = ", ".join(f"{hub}:{ref.id}" + (f"@{ref.revision}" if ref.revision else "") for hub, ref in entry.hubs.items())
        aliases = f"  aliases: {', '.join(entry.aliases)}" if entry.aliases else ""
        print(f"{entry.name:<28} {entry.backend:<12} {hubs}{aliases}")
    if args.options:
        for name, cls in reg.backends.items():
            print(f"\noptions of backend {name!r}:")
            print(json.dumps(cls.options_schema.get("properties", {}), indent=2))


def cmd_tasks(args: argparse.Namespace) -> None:
    from .tasks import load_task
    from .manager import registry

    for name in registry().tasks:
        task = load_task(name)
        langs = ",".join(task.languages) or "-"
        print(f"{name:<16} {task.kind:<16} {langs}")


def cmd_run(args: argparse.Namespace) -> None:
    from .runner import run
    from .tasks import load_task

    from .loading import resolve
    from .runner import check_capabilities

    task = load_task(args.task)
    where = _run_folder(args)  # refusals that need no model are made before it loads
    params = _gen_params(args)
    target = resolve(args.model, **_model_kwargs(args))  # model reference and options, no weights
    if target.backend is not None:
        check_capabilities(task, target.backend)
    # The model loads only once the task, its data and the backend's capabilities are checked.
    report = run(task, lambda: _load(args), data=args.data, languages=args.languages, limit=args.limit,
                 **where, seed=args.seed, generation=params, num_fewshot=args.num_fewshot, progress=not args.no_progress)  # fmt: skip
    metrics = [m for m in report.metrics if not m.endswith("_stderr")]
    print(f"{'language':<10}" + "".join(f"{m:>18}" for m in metrics) + f"{'n':>6}")
    for lang, row in report.per_language.items():
        print(f"{lang:<10}" + "".join(_cell(row[m], row.get(m + "_stderr")) for m in metrics) + f"{row['n']:>6}")
    print(f"{'all':<10}" + "".join(_cell(report.metrics[m], report.metrics.get(m + "_stderr")) for m in metrics) + f"{len(report.samples):>6}")
    print(f"results: {report.output / 'results.json'}")


def _run_folder(args: argparse.Namespace) -> dict[str, Any]:
    """run()'s ``output``/``runs``/``overwrite``/``resume`` from ``--output``, ``--resume``, ``--fresh``, ``--overwrite``, ``--runs-dir``."""
    from . import rundir

    if args.overwrite and not args.output:
        raise BabelplugError("--overwrite applies to --output DIR; automatic run folders are never overwritten")
    if args.runs_dir and (args.output or args.resume):
        raise BabelplugError("--runs-dir applies to automatic run folders, not to --output or --resume")
    if args.resume:
        rundir.check_output(args.resume, resume=True)
        return {"output": args.resume, "resume": True}
    if args.output:
        rundir.check_output(args.output, overwrite=args.overwrite)
        return {"output": args.output, "overwrite": args.overwrite}
    return {"runs": args.runs_dir or rundir.RUNS_ROOT, "resume": False if args.fresh else None}


def _cell(value: float | None, stderr: float | None = None) -> str:
    """A metric and its standard error (``0.5400±0.0501``), 18 characters wide; ``-`` when absent."""
    if value is None:
        return f"{'-':>18}"
    return f"{f'{value:.4f}' + (f'±{stderr:.4f}' if stderr is not None else ''):>18}"


def _score_requests(file: str) -> list[tuple[str, str]]:
    """(context, continuation) pairs from a JSONL file, each line checked."""
    from .errors import DataError

    name = "<stdin>" if file == "-" else file
    try:
        handle = sys.stdin if file == "-" else open(file, encoding="utf-8")
    except OSError as exc:
        raise DataError(name, 0, "-", f"cannot read: {exc.strerror}") from None
    requests = []
    with handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(name, lineno, "-", f"invalid JSON: {exc.msg}") from None
            for key in ("context", "continuation"):
                if not isinstance(row.get(key, ""), str) or (key == "continuation" and key not in row):
                    raise DataError(name, lineno, key, "expected a string")
            requests.append((row.get("context", ""), row["continuation"]))
    return requests


def cmd_score(args: argparse.Namespace) -> None:
    if args.file:
        requests = _score_requests(args.file)
    elif args.continuation is not None:
        requests = [(args.context, args.continuation)]
    else:
        raise BabelplugError("score: give --continuation (and --context), or --file JSONL")
    model = _load(args)
    for (ctx, cont), s in zip(requests, model.score(requests)):
        print(json.dumps({"context": ctx, "continuation": cont, "logprob": s.logprob, "num_tokens": s.num_tokens,
                          "is_greedy": s.is_greedy}, ensure_ascii=False))  # fmt: skip


def cmd_generate(args: argparse.Namespace) -> None:
    params = _gen_params(args)
    model = _load(args)
    for text in model.generate(args.prompts, **params):
        print(json.dumps(text, ensure_ascii=False) if args.json else text)


def cmd_chat(args: argparse.Namespace) -> None:
    params = _gen_params(args)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [{"role": "user", "content": args.message}]
    model = _load(args)
    if args.show_prompt:
        print(model.format_chat(messages))
        return
    print(model.chat(messages, **params))


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return ""


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("hub", "revision", "offline") if getattr(args, k) is not None}


def cmd_download(args: argparse.Namespace) -> None:
    """A task's hub data (its languages' subsets) or a model's weights, into the hub cache.

    NAME is a task when it is a registered task or a task JSON file, else a model; a
    name that is both needs --task or --model.
    """
    from .manager import registry

    reg = registry()
    is_task = args.name in reg.tasks or args.name.endswith(".json")
    kind = args.kind or ("task" if is_task else "model")
    if args.kind is None and is_task and reg.lookup_model(args.name) is not None:
        raise BabelplugError(f"{args.name!r} is both a task and a model: pass --task or --model")
    if kind == "model":
        from .loading import download

        target, path = download(args.name, hub=args.hub, revision=args.revision, offline=args.offline)
        print(f"{target.name}: hub {target.hub}, revision {target.revision}: {path}")
        return
    from .sources import download_data

    for lang, src, n in download_data(args.name, args.languages, args.split, hub=args.hub, revision=args.revision, offline=args.offline):
        print(f"{lang or '-'}: {src.label} @ {src.ref.revision if src.ref else '-'}: {n} records")


def cmd_config_show(args: argparse.Namespace) -> None:
    from .config import Setting, load_config
    from .loading import hub_for, target_of
    from .manager import registry

    cfg, reg = load_config(), registry()
    rows = dict(cfg.rows())
    for key, value in _flags(args).items():
        if key != "revision":
            rows[key] = Setting(value, f"flag --{key}")
    hub_for(reg, rows["hub"])
    for name, hub in reg.hubs.items():
        key = "local_root" if name == "local" else f"hubs.{name}.cache_dir"
        setting = hub.cache_setting() if key not in rows else None
        if setting is not None:
            rows[key] = setting
    rank = {k: (2 if k.startswith("models.") else 1 if k.startswith("hubs.") else 0) for k in rows}
    rows = dict(sorted(rows.items(), key=lambda kv: rank[kv[0]]))
    model: dict[str, Any] = {}
    if args.model:
        t = target_of(args.model, hub=args.hub, revision=args.revision, offline=args.offline)
        flag = {k: f"flag --{k}" for k in _flags(args)}
        model = {"name": t.name, "hub": {"value": t.hub, "source": flag.get("hub", t.sources.get("hub"))},
                 "id": t.repo_id or (str(t.path) if t.path else t.name), "revision": {"value": t.revision,
                 "source": flag.get("revision", t.sources.get("revision"))}, "offline": {"value": t.offline,
                 "source": flag.get("offline", t.sources.get("offline"))}, "options": t.options,
                 "table": t.sources.get("table")}  # fmt: skip
    if args.json:
        settings = {k: {"value": str(s.value) if isinstance(s.value, os.PathLike) else s.value, "source": s.source} for k, s in rows.items()}
        files = [{"path": str(p), "read": read} for p, read in cfg.files]
        print(json.dumps({"files": files, "settings": settings, "model": model or None}, indent=2))
        return
    print("config files (later wins):")
    for path, read in cfg.files:
        print(f"  {path}  ({'read' if read else 'not found'})")
    print("settings (argument > per-model table > environment > file > default):")
    width = max(len(k) for k in rows)
    for key, setting in rows.items():
        value = str(setting.value) if isinstance(setting.value, os.PathLike) else json.dumps(setting.value, ensure_ascii=False)
        print(f"  {key:<{width}} = {value:<28} {setting.source}")
    if model:
        print(f"model {model['name']!r}" + (f" (config table {model['table']})" if model["table"] else "") + ":")
        print(f"  hub      = {model['hub']['value']:<24} {model['hub']['source']}")
        print(f"  id       = {model['id']}")
        print(f"  revision = {model['revision']['value'] or '-':<24} {model['revision']['source']}")
        print(f"  offline  = {json.dumps(model['offline']['value']):<24} {model['offline']['source']}")
        print(f"  options  = {json.dumps(model['options'], ensure_ascii=False)}")


def cmd_cache_ls(args: argparse.Namespace) -> None:
    from .config import Setting
    from .loading import hub_for
    from .manager import registry

    reg = registry()
    hubs = [hub_for(reg, Setting(args.hub, "argument"))] if args.hub else list(reg.hubs.values())
    listing = []
    for hub in hubs:
        setting = hub.cache_setting()
        if setting is None:
            continue
        models = hub.cached()
        listing.append((hub, setting, models))
    if args.json:
        print(json.dumps([{"hub": hub.name, "cache_dir": str(s.value), "source": s.source, "models": [
            {"id": m.id, "revisions": list(m.revisions), "size": m.size, "path": str(m.path)} for m in models]}
            for hub, s, models in listing], indent=2))  # fmt: skip
        return
    for hub, setting, models in listing:
        total = sum(m.size for m in models)
        count = f"{len(models)} model{'s' if len(models) != 1 else ''}"
        print(f"{hub.name}: {setting.value}  ({setting.source}; {count}, {_size(total)})")
        for m in models:
            print(f"  {m.id:<44} {','.join(m.revisions) or '-':<20} {_size(m.size):>10}  {m.path}")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import demo

    demo(limit=args.limit, languages=args.languages, threads=args.threads or 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="babelplug", description="One task, any multilingual model, any hub.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    _add_hub_args(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("plugins", help="list loaded plugins and what they register").set_defaults(func=cmd_plugins)
    p = sub.add_parser("models", help="list the model catalog")
    p.add_argument("--options", action="store_true", help="also print each backend's load options")
    p.set_defaults(func=cmd_models)
    sub.add_parser("tasks", help="list registered tasks").set_defaults(func=cmd_tasks)

    p = sub.add_parser("run", help="run a task on a model and write DIR/results.json")
    p.add_argument("task", help="registered task name or task JSON file")
    _add_model_args(p)
    p.add_argument("--data", help="JSONL data file replacing the task's ('{language}' allowed)")
    p.add_argument("--languages", "-l", nargs="+", help="language variants to run (default: all)")
    p.add_argument("--limit", type=int, help="at most N records per language")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--output", metavar="DIR", help="run folder (default: a new RUNS/TASK/MODEL/RUN-ID, or the one unfinished run "
                       "of the same identity there); a folder holding another run or a finished one is refused unless --overwrite")
    where.add_argument("--resume", metavar="DIR", help="resume the unfinished run in DIR (refused if DIR holds another run)")
    where.add_argument("--fresh", action="store_true", help="start a new run folder even if an unfinished run of the same identity exists")
    p.add_argument("--overwrite", action="store_true", help="with --output: replace the run files in DIR, whatever run they belong to")
    p.add_argument("--runs-dir", metavar="RUNS", help="parent of the automatic run folders (default: babelplug-runs)")
    p.add_argument("--seed", type=int, default=1234, help="torch seed and few-shot sampler seed")
    p.add_argument("--num-fewshot", type=int, help="demonstrations per item (default: the task's fewshot.num_fewshot, else 0)")
    p.add_argument("--no-progress", action="store_true")
    _add_gen_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("score", help="log-probability of continuations given contexts (JSON lines out)")
    _add_model_args(p)
    p.add_argument("--context", default="")
    p.add_argument("--continuation")
    p.add_argument("--file", help="JSONL of {context, continuation}; '-' for stdin")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("generate", help="complete prompts")
    _add_model_args(p)
    _add_gen_args(p)
    p.add_argument("prompts", nargs="+")
    p.add_argument("--json", action="store_true", help="print each completion as a JSON string")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="one chat turn in the model's chat format")
    _add_model_args(p)
    _add_gen_args(p)
    p.add_argument("message")
    p.add_argument("--system")
    p.add_argument("--show-prompt", action="store_true", help="print the formatted prompt instead of replying")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("download", help="fetch a model's weights or a task's data into the hub cache")
    p.add_argument("name", metavar="NAME", help="task name or task JSON file, model catalog name or alias, or a model id on the hub")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--task", dest="kind", action="store_const", const="task", help="NAME is a task")
    which.add_argument("--model", dest="kind", action="store_const", const="model", help="NAME is a model")
    p.add_argument("--languages", "-l", nargs="+", help="task languages to fetch and check (default: all)")
    p.add_argument("--split", help="task split to check (default: the task's; the whole dataset is fetched)")
    _add_hub_args(p)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("config", help="configuration: 'config show [MODEL]'")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("show", help="print the effective settings and where each came from")
    q.add_argument("model", nargs="?", help="also resolve this model: its hub, id, revision and options")
    q.add_argument("--json", action="store_true")
    _add_hub_args(q)
    q.set_defaults(func=cmd_config_show)

    p = sub.add_parser("cache", help="hub caches: 'cache ls'")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("ls", help="list cached models per hub, with sizes")
    q.add_argument("--hub", default=argparse.SUPPRESS, help="only this hub")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_cache_ls)

    p = sub.add_parser("demo", help="zero-shot XCOPA on every built-in backend, on embedded tiny models")
    p.add_argument("--limit", type=int, help="at most N items per language")
    p.add_argument("--languages", "-l", nargs="+")
    p.set_defaults(func=cmd_demo)
    return parser


#: Exit status when the reader of stdout went away (``babelplug models | head -1``): 128 + SIGPIPE, as git and coreutils.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            args.func(args)
        except BabelplugError as exc:
            if args.debug:
                raise
            print(f"babelplug: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("babelplug: interrupted", file=sys.stderr)
            return 130
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    return 0


def _drop_stdout() -> None:
    """Point stdout at the null device, so that no later flush fails on the closed pipe (Python's recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured): nothing to protect
        pass


if __name__ == "__main__":
    raise SystemExit(main())
