"""Zero-shot XCOPA scoring: babelplug against lm-evaluation-harness, on one CPU thread.

Builds the bench-sized XGLM (d_model 512, 6 layers, 16k vocabulary), makes the 2200
validation requests of the 11 XCOPA languages exactly as babelplug does, and scores
them with babelplug (``Model.score``) and with lm-eval's ``HFLM`` (same model, same
requests, ``add_bos_token=True`` so both prepend XGLM's ``</s>``). Prints requests per
CPU-second for each batch size, the ratio to lm-eval's best, the end-to-end CLI wall
time of both, and the parity of the two: max |delta log-likelihood| and whether the
per-item predictions agree. Exits 1 when parity fails.

    python tests/benchmarks/bench_xcopa.py            # full: ~4 minutes on one core
    python tests/benchmarks/bench_xcopa.py --quick    # 2 languages, smoke run
"""

from __future__ import annotations

import os

for _var, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}.items():  # fmt: skip
    os.environ[_var] = _value  # before torch, transformers and the CLIs read them

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT = 1e-4  # |delta loglik| allowed between the harnesses
TARGET = 1.2  # required speed-up over lm-eval's best batch size
QUICK_LANGUAGES = ["et", "zh"]


def bin_of(name: str) -> str:
    """A console script of this interpreter's environment (or from PATH)."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def requests_for(languages: list[str] | None):
    from babelplug.runner import build_items, requests_of, select_languages
    from babelplug.tasks import load_task

    task = load_task("xcopa")
    langs = select_languages(task, languages)
    items = build_items(task, langs, None, None)
    return [str(lang) for lang in langs], items, requests_of(task, items)


def timed(fn):
    """``(result, CPU seconds)`` of ``fn()``."""
    gc.collect()
    start = time.process_time()
    result = fn()
    return result, time.process_time() - start


def score_babelplug(folder: Path, reqs, batch: int):
    import babelplug as bp

    with bp.load(folder, batch_size=batch) as model:
        scores, cpu = timed(lambda: model.score(reqs))
    return [s.logprob for s in scores], cpu


def score_lm_eval(folder: Path, reqs, batch: int):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(folder), batch_size=batch, device="cpu", dtype="float32", add_bos_token=True)
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=0) for r in reqs]
    out, cpu = timed(lambda: lm.loglikelihood(instances, disable_tqdm=True))
    del lm
    return [lp for lp, _ in out], cpu


def predictions(items, logprobs: list[float]) -> list[int]:
    preds, cursor = [], 0
    for it in items:
        lps = logprobs[cursor : cursor + len(it.choices)]
        cursor += len(it.choices)
        preds.append(max(range(len(lps)), key=lps.__getitem__))
    return preds


def write_lm_eval_tasks(items, langs: list[str], where: Path) -> str:
    """One lm-eval task per language over the same requests (local JSONL); returns the tag."""
    tag = "bpbench_xcopa"
    for lang in langs:
        data = where / f"{lang}.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            for it in items:
                if str(it.language) == lang:
                    record = {"context": it.context, "choices": list(it.choices), "label": it.answer}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        (where / f"{tag}_{lang}.yaml").write_text(
            f"task: {tag}_{lang}\ntag: {tag}\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {json.dumps(str(data))}\n"
            "validation_split: validation\noutput_type: multiple_choice\n"
            'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
            'target_delimiter: ""\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1.0\n',
            encoding="utf-8",
        )
    return tag


def wall(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Wall seconds of one CLI run; its output goes to ``log``, shown if it fails."""
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return seconds


def run_clis(folder: Path, items, langs, tmp: Path, lm_batch: int, bp_batch: int, quick: bool) -> dict[str, tuple[float, dict]]:
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp / "hf-datasets")}
    tag = write_lm_eval_tasks(items, langs, tmp)
    lm_cmd = [bin_of("lm_eval"), "--model", "hf", "--model_args", f"pretrained={folder},dtype=float32,add_bos_token=True",
              "--tasks", tag, "--batch_size", str(lm_batch), "--device", "cpu", "--include_path", str(tmp),
              "--output_path", str(tmp / "lm-eval-out")]  # fmt: skip
    bp_cmd = [bin_of("babelplug"), "--threads", "1", "run", "xcopa", "--model", str(folder), "--batch-size", str(bp_batch),
              "--output", str(tmp / "babelplug-out"), "--no-progress"] + (["--languages", *langs] if quick else [])  # fmt: skip
    lm_s = wall(lm_cmd, env, tmp / "lm-eval.log")
    bp_s = wall(bp_cmd, env, tmp / "babelplug.log")
    lm_res = json.loads(next((tmp / "lm-eval-out").rglob("results_*.json")).read_text())["results"]
    bp_res = json.loads((tmp / "babelplug-out" / "results.json").read_text())["per_language"]
    lm_acc = {lang: lm_res[f"{tag}_{lang}"]["acc,none"] for lang in langs}
    bp_acc = {lang: bp_res[lang]["acc"] for lang in langs}
    return {"lm-eval": (lm_s, lm_acc), "babelplug": (bp_s, bp_acc)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {' and '.join(QUICK_LANGUAGES)} (400 requests)")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32], help="batch sizes to time (default: 8 32)")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI runs")
    parser.add_argument("--root", help="where the bench model is built/cached (default: babelplug.tiny's cache)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (task YAMLs, CLI outputs, logs)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from babelplug.tiny import cached

    folder = cached("xglm", size="bench", root=args.root)
    langs, items, reqs = requests_for(QUICK_LANGUAGES if args.quick else None)
    print(f"model {folder}\n{len(reqs)} requests, {len(items)} items, languages {' '.join(langs)}; torch threads 1\n", flush=True)

    runs: dict[tuple[str, int], tuple[list[float], float]] = {}
    for batch in args.batches:
        for name, fn in (("lm-eval", score_lm_eval), ("babelplug", score_babelplug)):
            runs[name, batch] = fn(folder, reqs, batch)
            print(f"  {name:9} batch {batch:3}: {len(reqs) / runs[name, batch][1]:6.1f} requests/CPU-s", flush=True)

    best = {name: min(args.batches, key=lambda b, n=name: runs[n, b][1]) for name in ("lm-eval", "babelplug")}
    clis: dict[str, tuple[float, dict]] = {}
    if not args.no_cli:
        tmp = Path(tempfile.mkdtemp(prefix="bench-xcopa-"))
        try:
            clis = run_clis(folder, items, langs, tmp, best["lm-eval"], best["babelplug"], args.quick)
        finally:
            if args.keep:
                print(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)

    reference = runs["lm-eval", args.batches[0]][0]
    ref_preds = predictions(items, reference)
    delta = max(max(abs(a - b) for a, b in zip(lps, reference)) for lps, _ in runs.values())
    same_preds = all(predictions(items, lps) == ref_preds for lps, _ in runs.values())
    lm_best = max(len(reqs) / cpu for (name, _), (_, cpu) in runs.items() if name == "lm-eval")

    print(f"\n{'harness':10} {'batch':>5} {'req/CPU-s':>10} {'vs lm-eval best':>16} {'CLI wall s':>11}")
    for (name, batch), (_, cpu) in sorted(runs.items(), key=lambda kv: (kv[0][0] != "lm-eval", kv[0][1])):
        rate = len(reqs) / cpu
        cli = f"{clis[name][0]:11.1f}" if name in clis and batch == best[name] else f"{'':>11}"
        print(f"{name:10} {batch:5} {rate:10.1f} {rate / lm_best:15.2f}x {cli}")
    bp_best = max(len(reqs) / cpu for (name, _), (_, cpu) in runs.items() if name == "babelplug")
    print(f"\nmax |delta loglik| {delta:.2e} (limit {LIMIT:g}); predictions identical: {same_preds}")
    print(f"scoring: babelplug best {bp_best / lm_best:.2f}x lm-eval best (target >= {TARGET}x): "
          f"{'ok' if bp_best >= TARGET * lm_best else 'MISSED'}")  # fmt: skip
    cli_acc_same = True
    if clis:
        (lm_s, lm_acc), (bp_s, bp_acc) = clis["lm-eval"], clis["babelplug"]
        cli_acc_same = all(abs(lm_acc[lang] - bp_acc[lang]) < 1e-9 for lang in langs)
        print(f"end to end: babelplug {bp_s:.1f} s, lm-eval {lm_s:.1f} s: {'ok' if bp_s < lm_s else 'MISSED'}; "
              f"per-language accuracy identical: {cli_acc_same}")  # fmt: skip
    parity = delta <= LIMIT and same_preds and cli_acc_same
    print("parity: ok" if parity else "parity: FAILED")
    return 0 if parity else 1


if __name__ == "__main__":
    sys.exit(main())
