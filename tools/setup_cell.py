"""The setup cell: the first code cell of every chapter, so that it runs on Colab and Binder.

Locally (a checkout after ``make install``: ``ctr_src`` importable, MovieLens-100K cached)
the cell does nothing and prints nothing, so nbval sees no output. Elsewhere it

* clones the book's repository (the URL in ``_config.yml``, read when the cell is
  generated) into ``~/ctr-book`` and installs ``ctr_src`` from it with ``pip install
  --no-deps -e``: the chapters also read ``results/`` and ``chapters/reference_values/``
  from that checkout. ``--no-deps`` keeps Colab's own torch (a CUDA build) and the rest of
  its stack as they are;
* installs only the packages the chapters import that are missing, pinned as in
  ``requirements.txt``; torch, if missing, as the CPU build of 2.13.0 (not several GB of
  CUDA wheels); myst-nb with ``--no-deps`` (the chapters only use its ``glue``);
* fetches MovieLens-100K when it is not cached (``ctr_src.data.fetch``).

On Binder, ``binder/`` installs everything and fetches the data at start, so the cell is a
no-op there too, unless that fetch failed.

Environment variables read when the cell runs (for tests and mirrors):
``CTR_BOOK_REPO`` -- another repository to clone, or a local folder holding a checkout
(used in place); ``CTR_BOOK_BRANCH``; ``CTR_BOOK_HOME`` -- where to clone (default
``~/ctr-book``); ``CTR_TORCH_INDEX`` -- the index for the CPU build of torch (empty: pip's
own configuration only); ``CTR_DATA_DIR`` and ``CTR_MOVIELENS_URL`` as in ``ctr_src.data``.

The cell carries the MyST-NB tag ``remove-cell``: Jupyter Book leaves it off the page.

Usage::

    python tools/setup_cell.py --print                 # show the cell's source
    python tools/setup_cell.py chapters/*.ipynb        # insert or refresh it (idempotent)
    python tools/setup_cell.py --check chapters/*.ipynb    # exit 1 where it is missing or stale

Inserting keeps a stored notebook "executed top to bottom": when its code cells are numbered
1..N, the setup cell (which has no output) becomes 1 and the others move up by one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
REQUIREMENTS = ROOT / "requirements.txt"

#: first line of the cell's source; with :data:`CELL_ID`, how the cell is recognised
MARKER = "# Setup for Colab and Binder"
#: MyST-NB (Jupyter Book 1.x) removes a cell with this tag from the page, input and output
HIDE_TAG = "remove-cell"
CELL_ID = "ctr-setup"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

#: module the chapters import -> the distribution that provides it. ctr_src's own
#: dependencies (pyproject.toml), then myst-nb (``glue``) and what its glue imports.
NEEDS = {
    "torch": "torch",
    "numpy": "numpy",
    "pandas": "pandas",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "nbformat": "nbformat",
    "docutils": "docutils",
    "myst_nb": "myst-nb",
}


def repository(config: Path = CONFIG) -> tuple[str, str]:
    """The book's repository URL and branch, as ``_config.yml`` gives them."""
    repo = yaml.safe_load(config.read_text(encoding="utf-8"))["repository"]
    return repo["url"].rstrip("/"), str(repo.get("branch") or "main")


def pins(requirements: Path = REQUIREMENTS) -> dict[str, list[str]]:
    """Each distribution in :data:`NEEDS` -> its pinned line(s) in requirements.txt, environment
    markers kept (pip evaluates them where the cell runs)."""
    wanted = {canonicalize_name(d): d for d in NEEDS.values()}
    found: dict[str, list[str]] = {d: [] for d in NEEDS.values()}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        name = wanted.get(canonicalize_name(req.name))
        if name:
            found[name].append(line)
    lost = [d for d, lines in found.items() if not lines]
    if lost:
        raise ValueError(f"requirements.txt pins none of {lost}")
    return found


_TEMPLATE = '''\
{marker}: written by tools/setup_cell.py, hidden on the
# website. Where ctr_src and MovieLens-100K are here already (a checkout after
# `make install`, Binder) it does nothing. Elsewhere (Colab) it clones the
# book's repository, installs ctr_src from it plus only the packages that are
# missing (Colab's own torch is kept) and fetches the data.
def _ctr_setup():
    import importlib
    import os
    import subprocess
    import sys
    from importlib.util import find_spec
    from pathlib import Path

    url = "{repo}"
    repo = os.environ.get("CTR_BOOK_REPO", url)
    branch = os.environ.get("CTR_BOOK_BRANCH", "{branch}")
    needs = {{  # module: pip requirements, pinned as in requirements.txt
{needs}
    }}
    pip = [sys.executable, "-m", "pip", "install", "-q"]

    def run(what, cmd):
        print(what, flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError("setup failed: " + " ".join(cmd))
        importlib.invalidate_caches()

    if find_spec("ctr_src") is None:
        src = Path(repo).expanduser()
        if not (src / "pyproject.toml").is_file():  # a URL: clone it
            home = Path.home() / "ctr-book"
            src = Path(os.environ.get("CTR_BOOK_HOME", home)).expanduser()
            if not (src / "pyproject.toml").is_file():
                run(f"Cloning {{repo}} ({{branch}}) into {{src}} ...",
                    ["git", "clone", "-q", "--depth", "1", "--branch",
                     branch, repo, str(src)])
        run(f"Installing ctr_src from {{src}} ...",
            pip + ["--no-deps", "-e", str(src)])
        sys.path.insert(0, str(src))
    missing = [m for m in needs if find_spec(m) is None]
    if "torch" in missing:  # the CPU build, not several GB of CUDA wheels
        index = "{torch_index}"
        index = os.environ.get("CTR_TORCH_INDEX", index)
        extra = ["--extra-index-url", index] if index else []
        run("Installing torch (CPU build) ...", pip + extra + needs["torch"])
    rest = [m for m in missing if m not in ("torch", "myst_nb")]
    if rest:
        run("Installing " + ", ".join(rest) + " ...",
            pip + [r for m in rest for r in needs[m]])
    if "myst_nb" in missing:  # the chapters use its glue() only
        run("Installing myst-nb ...", pip + ["--no-deps"] + needs["myst_nb"])
    from ctr_src.data import movielens

    if not (movielens.cache_dir() / movielens.CACHE_NAME).is_dir():
        movielens.fetch()


_ctr_setup()
del _ctr_setup
'''


def cell_source(repo: str | None = None, branch: str | None = None,
                requirements: Path = REQUIREMENTS, config: Path = CONFIG) -> str:
    """The setup cell's source: repository and pins baked in from _config.yml and
    requirements.txt (``repo``/``branch`` override the configured ones)."""
    conf_repo, conf_branch = repository(config)
    repo, branch = repo or conf_repo, branch or conf_branch
    found = pins(requirements)
    lines = []
    for module, dist in NEEDS.items():
        # a Python literal per pin: double quotes unless the pin holds some (markers do)
        reqs = [repr(r) if '"' in r else f'"{r}"' for r in found[dist]]
        head = f'        "{module}": ['
        lines.append(head + (",\n" + " " * len(head)).join(reqs) + "],")
    source = _TEMPLATE.format(marker=MARKER, repo=repo, branch=branch, needs="\n".join(lines),
                              torch_index=TORCH_CPU_INDEX)
    long = [line for line in source.splitlines() if len(line) > 79]
    if long:
        raise ValueError(f"setup cell lines over 79 characters: {long}")
    return source


def is_setup_cell(cell) -> bool:
    if cell.get("cell_type") != "code":
        return False
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    return cell.get("id") == CELL_ID or source.startswith(MARKER)


def _numbered(cells) -> bool:
    """Code cells (with source) executed top to bottom in one run: counts 1..N."""
    counts = [c.get("execution_count") for c in cells if c["cell_type"] == "code"
              and "".join(c.get("source", "")).strip()]
    return bool(counts) and counts == list(range(1, len(counts) + 1))


def with_setup_cell(nb, source: str | None = None):
    """``nb`` (a ``nbformat`` v4 notebook) with the setup cell as its first code cell: inserted,
    or refreshed and moved there. Returns the same object."""
    source = cell_source() if source is None else source
    old = [c for c in nb.cells if is_setup_cell(c)]
    others = [c for c in nb.cells if not is_setup_cell(c)]
    was_numbered = _numbered(others)
    cell = nbformat.v4.new_code_cell(source=source)
    if old:  # keep what a refresh need not change
        cell.execution_count = old[0].get("execution_count")
    cell.metadata = {"tags": [HIDE_TAG]}
    if nb.nbformat > 4 or (nb.nbformat == 4 and nb.nbformat_minor >= 5):
        cell.id = CELL_ID
    else:
        cell.pop("id", None)
    first = next((i for i, c in enumerate(others) if c["cell_type"] == "code"), len(others))
    nb.cells = others[:first] + [cell] + others[first:]
    if was_numbered:
        n = 0
        for c in nb.cells:
            if c["cell_type"] == "code" and "".join(c.get("source", "")).strip():
                n += 1
                c.execution_count = n
                for out in c.get("outputs", []):
                    if out.get("output_type") == "execute_result":
                        out["execution_count"] = n
    elif not old:
        cell.execution_count = None
    return nb


def insert(path: str | Path, source: str | None = None) -> bool:
    """Insert or refresh the setup cell in the notebook file ``path``; True if it changed."""
    path = Path(path)
    before = path.read_text(encoding="utf-8")
    nb = with_setup_cell(nbformat.reads(before, as_version=4), source)
    nbformat.validate(nb)
    after = nbformat.writes(nb) + "\n"
    if after == before:
        return False
    path.write_text(after, encoding="utf-8")
    return True


def check(path: str | Path, source: str | None = None) -> str | None:
    """Why ``path`` lacks the current setup cell as its first code cell, or None."""
    source = cell_source() if source is None else source
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c["cell_type"] == "code"]
    if not code or not is_setup_cell(code[0]):
        return "no setup cell first"
    if code[0].source != source:
        return "the setup cell is stale (run tools/setup_cell.py on it)"
    if HIDE_TAG not in code[0].metadata.get("tags", []):
        return f"the setup cell lacks the tag {HIDE_TAG!r}"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--print", action="store_true", help="print the cell's source")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 where "
                        "the current cell is not the first code cell")
    args = parser.parse_args(argv)
    source = cell_source()
    if args.print:
        print(source, end="")
    bad = 0
    for path in args.notebooks:
        if args.check:
            why = check(path, source)
            if why:
                bad += 1
                print(f"{path}: {why}")
        elif insert(path, source):
            print(f"{path}: setup cell written")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
