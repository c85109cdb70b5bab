"""Re-execute chapters in place so their stored outputs are fresh (``make execute``).

Usage: ``python tools/execute.py [chapters/NN_name.ipynb ...]`` (default: every chapter).
Runs each notebook top to bottom in a fresh kernel of the current environment, from
the ``chapters/`` folder, and writes it back with its outputs. Fails on the first error.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": "python3"}
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    # the kernel spec runs `python`: make it this environment's interpreter
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    paths = [Path(a) for a in argv] or sorted((ROOT / "chapters").glob("[0-9]*.ipynb"))
    for p in paths:
        print(f"executing {p} ...", flush=True)
        print(f"  done in {execute(p.resolve()):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
