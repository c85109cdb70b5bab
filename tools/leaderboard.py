"""Run the book's protocol on every leaderboard entry and write the results.

    python tools/leaderboard.py [--jobs 2] [--out results/leaderboard.json]

1. **search**: every entry that is not an ablation trains once per point of
   ``PROTOCOL["grid"]`` (learning rate x weight decay) with the first seed; the point with
   the best validation value of the entry's monitored metric is chosen (the counting
   baseline searches its shrinkage prior instead);
2. **seeds**: every entry trains with each of ``PROTOCOL["seeds"]`` at its chosen point (an
   ablation at its parent's), and its test logits are kept;
3. **comparisons**: for every pair of entries on the same split and each metric, the
   t-interval over the paired seeds and the paired bootstrap over test rows (users for
   GAUC) of the seed-mean difference.

Writes ``results/leaderboard.json`` (settings, search, runs, summaries, comparisons,
library versions, machine, date) and ``results/leaderboard.csv`` (the summary table).
Each finished training run is cached under ``results/.cache/<fingerprint>/`` (the
fingerprint hashes ``ctr_src`` and this file), so an interrupted run resumes where it
stopped and a code change starts afresh. Jobs run one CPU thread each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ctr_src import experiments as ex  # noqa: E402
from ctr_src import metrics  # noqa: E402

_DATA: dict = {}


def fingerprint() -> str:
    h = hashlib.sha256()
    for path in sorted((ROOT / "ctr_src").rglob("*.py")) + [Path(__file__).resolve()]:
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _data_for(e):
    key = (e.split, e.crosses)
    if key not in _DATA:
        _DATA[key] = ex.load_entry_data(e)
    return _DATA[key]


def _task_name(key: str, point: dict, seed: int) -> str:
    text = json.dumps({"entry": key, "point": point, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_task(task):
    key, point, seed, cache = task
    rec_path = cache / f"{_task_name(key, point, seed)}.json"
    npy_path = rec_path.with_suffix(".npy")
    if rec_path.exists() and npy_path.exists():
        return key, point, seed, "cached"
    e = ex.entry(key)
    out = ex.train_entry(e, _data_for(e), seed=seed, **point)
    out["record"]["point"] = point
    np.save(npy_path.with_suffix(".tmp.npy"), out["logits"])
    os.replace(npy_path.with_suffix(".tmp.npy"), npy_path)
    tmp = rec_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out["record"]))
    os.replace(tmp, rec_path)  # written last: a record on disk means the logits are there
    return key, point, seed, f"{out['record']['seconds']:.0f}s"


def _load(cache: Path, key: str, point: dict, seed: int):
    path = cache / f"{_task_name(key, point, seed)}.json"
    return json.loads(path.read_text()), np.load(path.with_suffix(".npy"))


# rough cost, so the longest tasks start first and the two jobs end together
_COST = {"din": 30, "din_base": 6, "afm": 6, "opnn": 5, "pnn": 6, "ipnn": 3, "ffm": 2,
         "fwfm": 2}


def _execute(tasks, jobs: int) -> None:
    tasks = sorted(tasks, key=lambda t: -_COST.get(ex.entry(t[0]).model, 2))
    start = time.time()
    if jobs <= 1:
        _init_worker()
        results = map(_run_task, tasks)
    else:
        import multiprocessing as mp

        pool = mp.get_context("fork").Pool(jobs, initializer=_init_worker)
        results = pool.imap_unordered(_run_task, tasks)
    for i, (key, point, seed, what) in enumerate(results, 1):
        print(f"[{i}/{len(tasks)} {time.time() - start:6.0f}s] {key} {point} seed {seed}: "
              f"{what}", flush=True)
    if jobs > 1:
        pool.close()
        pool.join()


def environment(jobs: int) -> dict:
    import pandas
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pandas.__version__,
            "cpu": cpu, "cpu_count": os.cpu_count(), "device": "cpu",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads_per_job": 1, "jobs": jobs, "git_commit": commit,
            "command": "make leaderboard"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ex.RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cache = ROOT / "results" / ".cache" / fingerprint()
    cache.mkdir(parents=True, exist_ok=True)
    protocol = ex.PROTOCOL
    seeds = protocol["seeds"]
    started = time.time()

    tuned = [e for e in ex.ENTRIES if e.tuned_as is None]
    print(f"== search: {len(tuned)} entries, cache {cache.relative_to(ROOT)}", flush=True)
    _execute([(e.key, p, seeds[0], cache) for e in tuned for p in ex.search_points(e)],
             args.jobs)
    chosen, search = {}, {}
    for e in tuned:
        records = [_load(cache, e.key, p, seeds[0])[0] for p in ex.search_points(e)]
        chosen[e.key] = ex.choose(e, records)
        search[e.key] = [{"point": r["point"], "valid": r["valid"], "best_epoch": r["best_epoch"],
                          "epochs": r["epochs"]} for r in records]
    for e in ex.ENTRIES:
        if e.tuned_as is not None:
            chosen[e.key] = chosen[e.tuned_as]
            if e.init_from is not None:  # its source trains first, at its own point
                chosen[e.key] = dict(chosen[e.key], init_point=chosen[e.init_from])

    print("== seeds", flush=True)
    _execute([(e.key, chosen[e.key], s, cache) for e in ex.ENTRIES for s in seeds], args.jobs)

    entries, logits = {}, {}
    for e in ex.ENTRIES:
        loaded = [_load(cache, e.key, chosen[e.key], s) for s in seeds]
        runs = [r for r, _ in loaded]
        logits[e.key] = np.stack([x for _, x in loaded])
        for r in runs:
            r.pop("point", None)
        entries[e.key] = {
            "label": e.label, "model": e.model, "split": e.split, "crosses": e.crosses,
            "model_kwargs": e.kwargs, "tuned_as": e.tuned_as, "init_from": e.init_from,
            "chapter": e.chapter,
            "monitor": e.monitor, "chosen": chosen[e.key],
            "search": search.get(e.key, []), "runs": runs, "summary": ex.summarise(runs)}
    bad = ex.at_cap([r for v in entries.values() for r in v["runs"]])
    if bad:
        print(f"WARNING: {len(bad)} runs have their best epoch at the cap of "
              f"{protocol['epochs']}: {[(r['entry'], r['seed']) for r in bad]}", flush=True)

    print("== comparisons", flush=True)
    comparisons = {}
    for split in ("random", "temporal"):
        keys = [e.key for e in ex.ENTRIES if e.split == split]
        if not keys:
            continue
        data = _data_for(ex.entry(keys[0]))
        labels = data.test["label"].numpy()
        users = data.test["user"].numpy()
        ms = ["auc", "logloss"] + (["gauc"] if split == "temporal" else [])
        reps = {}
        for k in keys:
            for m in ms:
                x = logits[k].astype(np.float64)
                if m == "logloss":
                    x = 1 / (1 + np.exp(-x))
                reps[k, m] = metrics.bootstrap_replicates(
                    labels, x, m, groups=users if m == "gauc" else None,
                    n_boot=protocol["n_boot"], seed=0)
        for a, b in combinations(keys, 2):
            for m in ms:
                va = [r["test"][m] for r in entries[a]["runs"]]
                vb = [r["test"][m] for r in entries[b]["runs"]]
                comparisons[f"{a}|{b}|{m}"] = ex.paired_intervals(
                    va, vb, reps[a, m], reps[b, m], protocol["level"])

    out = {"about": "The book's leaderboard: every model under one protocol "
                    "(ctr_src.experiments.PROTOCOL). Regenerate with `make leaderboard`.",
           "protocol": protocol, "environment": environment(args.jobs),
           "minutes": round((time.time() - started) / 60, 1),
           "entries": entries, "comparisons": comparisons}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, args.out)
    board = ex.Leaderboard(out)
    table = board.table(text=False)
    table.insert(0, "split", [entries[k]["split"] for k in entries])
    table.to_csv(args.out.with_suffix(".csv"))
    print(board.table().to_string())
    print(f"wrote {args.out} and its .csv in {out['minutes']} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
