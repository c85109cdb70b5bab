"""Run the chapters' code as plain Python, without Jupyter (e.g. on a GPU machine).

Usage: ``python tools/run_chapters.py [chapters/NN_name.ipynb ...]``

Each chapter's code cells run in order in one fresh namespace, from the ``chapters/``
folder, with matplotlib's non-interactive backend; every ``assert`` in the chapter is
checked. Prints the device and the wall time of each chapter. This is a smoke test of
"runs unchanged on CPU or GPU"; the stored outputs are checked by nbval, not here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(path: Path) -> float:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict = {"__name__": "__chapter__"}
    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        for i, cell in enumerate(cells):
            src = "".join(cell["source"])
            if src.lstrip().startswith(("%", "!")):
                continue
            exec(compile(src, f"{path.name}[cell {i}]", "exec"), namespace)
    finally:
        os.chdir(cwd)
        import matplotlib.pyplot as plt
        plt.close("all")
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.path.insert(0, str(ROOT))
    import torch
    from ctr_src.utils import default_device
    print(f"torch {torch.__version__}, device {default_device()}", flush=True)
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "chapters").glob("[0-9]*.ipynb"))
    failed = 0
    for p in paths:
        try:
            print(f"{p.name}: {run(p):.1f} s", flush=True)
        except Exception as exc:  # report and go on with the next chapter
            failed += 1
            print(f"{p.name}: FAILED: {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
