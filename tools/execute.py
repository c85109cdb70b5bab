"""Re-execute chapters in place so their stored outputs are fresh (``make execute``).

Usage: ``python tools/execute.py [chapters/NN_name.ipynb ...]`` (default: every chapter).
Runs each notebook top to bottom in a fresh kernel of the current environment, from
the ``chapters/`` folder, and writes it back with its outputs. Fails on the first error
(and then leaves the notebook and its recorded values as they were).

It also **records** the trained values the chapter checks (``CTR_RECORD=1``, see
:mod:`ctr_src.reference`) into ``chapters/reference_values/<chapter>.json``, starting
from an empty file so that no value of an older version of the chapter survives.
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
    from ctr_src.reference import Reference

    nb = nbformat.read(path, as_version=4)
    ref = Reference(path.stem)
    old = ref.path.read_text() if ref.path.exists() else None
    ref.path.unlink(missing_ok=True)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": "python3"}
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except BaseException:
        if old is not None:  # a failed run leaves the old values in place
            ref.path.write_text(old)
        else:
            ref.path.unlink(missing_ok=True)
        raise
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    # the kernel spec runs `python`: make it this environment's interpreter
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    os.environ["CTR_RECORD"] = "1"          # the kernels record the chapters' trained values
    os.environ.pop("CTR_COLLECT", None)
    os.environ.pop("CTR_SEED", None)
    paths = [Path(a) for a in argv] or sorted((ROOT / "chapters").glob("[0-9]*.ipynb"))
    for p in paths:
        print(f"executing {p} ...", flush=True)
        print(f"  done in {execute(p.resolve()):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
