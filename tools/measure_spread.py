"""Measure how far the chapters' trained numbers move, to justify the tolerances.

Usage: ``python tools/measure_spread.py [--jobs 2] [chapters/NN_name.ipynb ...]``
(``make spread``; about 30 minutes for all chapters on 2 cores).

Every chapter is executed (a fresh kernel, all cells, errors do not stop it) under
several configurations, with ``CTR_COLLECT`` set so that every value a chapter checks
through :class:`ctr_src.reference.Reference` is collected instead of checked:

* **seeds**: the book's seed 2024 and four others (``CTR_SEED``), one thread each --
  the spread a reader meets when the random stream changes (another seed, or a GPU,
  which draws its own dropout masks);
* **kernels**: the recorded values (``make execute``: native kernels, all threads)
  against seed 2024 with one thread, and with ``ATEN_CPU_CAPABILITY=default`` (no SIMD)
  and one thread -- the spread between machines. (The native kernel of the machine that
  executes the book -- ``avx2`` or ``avx512`` -- is already the recorded run, so it adds
  nothing there; the machine's capability is stored with the results.)

Runs go two at a time, one thread each (two threads each on two cores would oversubscribe
them many times over). Each finished run is appended to ``results/spread.partial.jsonl``,
so an interrupted measurement resumes where it stopped.

Chapters that check no trained value (no ``Reference`` in their code) are skipped.

The result goes to ``results/spread.json``; ``tests/test_reference.py`` checks that each
tolerance in :data:`ctr_src.reference.TOLERANCES` covers four standard deviations over
seeds and 1.5 times the largest deviation between kernels, for every value of its kind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "spread.json"
PARTIAL = ROOT / "results" / "spread.partial.jsonl"
BASELINE = "recorded (make execute)"
SEEDS = (2024, 1, 2, 3, 4)

CONFIGS: dict[str, dict[str, str]] = {
    **{f"seed {s}": {"CTR_SEED": str(s), "OMP_NUM_THREADS": "1"} for s in SEEDS},
    "no SIMD (default), 1 thread": {"CTR_SEED": "2024", "OMP_NUM_THREADS": "1",
                                    "ATEN_CPU_CAPABILITY": "default"},
}
#: the configurations that differ from the recorded run only in kernels / threads
KERNEL_CONFIGS = ("seed 2024", "no SIMD (default), 1 thread")


def execute(path: Path, env: dict[str, str], collect: Path) -> tuple[float, list[str]]:
    """Run one chapter in a fresh kernel under ``env``; return (seconds, error names)."""
    code = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "c = NotebookClient(nb, timeout=3600, kernel_name='python3', allow_errors=True,\n"
        "                   resources={'metadata': {'path': sys.argv[2]}})\n"
        "c.execute()\n"
        "code = [c for c in nb.cells if c.cell_type == 'code']\n"
        "errs = [f'cell {i}: ' + o.get('ename', '?') + ': ' + o.get('evalue', '')[:200]\n"
        "        + ' | ' + ' '.join(o.get('traceback', [])[-2:])[-300:]\n"
        "        for i, cell in enumerate(code) for o in cell.get('outputs', [])\n"
        "        if o.get('output_type') == 'error']\n"
        "print('\\n'.join(errs))\n")
    full_env = dict(os.environ, **env, CTR_COLLECT=str(collect), MPLBACKEND="Agg",
                    PYDEVD_DISABLE_FILE_VALIDATION="1")
    full_env.pop("CTR_RECORD", None)
    full_env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + full_env.get("PATH", "")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(path.parent)],
                          env=full_env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{path.name} under {env}: {proc.stderr[-2000:]}")
    errors = [line for line in proc.stdout.splitlines() if line.strip()]
    return time.perf_counter() - start, errors


def run_one(path: Path, config: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        collect = Path(tmp) / "values.jsonl"
        collect.touch()
        seconds, errors = execute(path, CONFIGS[config], collect)
        values = [json.loads(line) for line in collect.read_text().splitlines() if line]
    print(f"  {path.stem:28s} {config:30s} {seconds:5.0f} s  {len(values)} values"
          + (f"  errors: {errors}" if errors else ""), flush=True)
    return {"chapter": path.stem, "config": config, "seconds": round(seconds, 1),
            "errors": errors, "values": values}


def summarise(runs: list[dict]) -> dict:
    """``{chapter: {key: {"kind": .., "values": {config: value}}}}``, with the recorded
    value of every key under :data:`BASELINE`."""
    from ctr_src.reference import Reference

    table: dict[str, dict[str, dict]] = {}
    for chapter in {run["chapter"] for run in runs}:
        for key, entry in Reference(chapter).load().items():
            table.setdefault(chapter, {})[key] = {"kind": entry["kind"],
                                                  "values": {BASELINE: entry["value"]}}
    for run in runs:
        for v in run["values"]:
            entry = table.setdefault(v["chapter"], {}).setdefault(
                v["key"], {"kind": v["kind"], "values": {}})
            entry["values"][run["config"]] = v["value"]
    return table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    paths = [Path(a).resolve() for a in args.chapters] or [
        p for p in sorted((ROOT / "chapters").glob("[0-9]*.ipynb"))
        if "Reference(" in p.read_text(encoding="utf-8")]
    done = [json.loads(line) for line in PARTIAL.read_text().splitlines()
            if line] if PARTIAL.exists() else []
    finished = {(r["chapter"], r["config"]) for r in done}
    jobs = [(p, c) for p in paths for c in CONFIGS if (p.stem, c) not in finished]
    print(f"{len(jobs)} chapter runs to go ({len(done)} resumed), {args.jobs} at a time",
          flush=True)
    PARTIAL.parent.mkdir(exist_ok=True)

    def job(args_):
        result = run_one(*args_)
        with open(PARTIAL, "a", encoding="utf-8") as fh:   # one write per line: no tearing
            fh.write(json.dumps(result) + "\n")
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        runs = done + list(pool.map(job, jobs))
    runs = [r for r in runs if r["chapter"] in {p.stem for p in paths}]
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    chapters = previous.get("chapters", {})
    chapters.update(summarise(runs))        # re-measured chapters replace their old entries
    import torch
    result = {
        "about": "Every trained value the chapters check, under each configuration; "
                 "written by tools/measure_spread.py, read by tests/test_reference.py.",
        "seed_configs": [f"seed {s}" for s in SEEDS],
        "kernel_baseline": BASELINE,
        "kernel_configs": list(KERNEL_CONFIGS),
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "errors": {f"{r['chapter']} / {r['config']}": r["errors"] for r in runs if r["errors"]},
        "chapters": dict(sorted(chapters.items())),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    PARTIAL.unlink(missing_ok=True)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
