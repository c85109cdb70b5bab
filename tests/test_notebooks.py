"""Every chapter in the table of contents exists, is stored executed and has no errors.

nbval (run by `make test` on `chapters/`) re-executes them and compares the outputs;
these checks catch what nbval cannot see: a cell never executed, an error stored as
output, a chapter missing from the book, a page without exercises or references.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


def resolve(entry: str) -> Path:
    for ext in (".ipynb", ".md"):
        p = ROOT / (entry + ext)
        if p.exists():
            return p
    raise FileNotFoundError(f"_toc.yml lists {entry!r} but neither .ipynb nor .md exists")


NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))


def test_every_toc_entry_exists():
    for entry in toc_files():
        resolve(entry)


def test_every_chapter_is_in_the_toc():
    listed = {str(resolve(e).relative_to(ROOT)) for e in toc_files()}
    for nb in NOTEBOOKS:
        assert str(nb.relative_to(ROOT)) in listed, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_executed_without_errors(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert code, "a chapter without code"
    unrun = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unrun, f"code cells never executed: {unrun}"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "cells were not executed top to bottom in one run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"error outputs stored: {[e.get('ename') for e in errors]}"
    assert path.stat().st_size < 1_000_000, "keep notebooks under 1 MB (lower the figure dpi)"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if re.match(r"0[2-9]_", p.name)], ids=lambda p: p.name)
def test_model_chapters_follow_the_template(path):
    nb = json.loads(path.read_text())
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "```{math}" in md and ":label:" in md, "numbered equations"
    assert "```{exercise}" in md and "```{solution}" in md and ":class: dropdown" in md, "exercises"
    assert "{cite" in md, "references"
    assert "import ctr_src" in code or "from ctr_src" in code, "the chapter uses ctr_src"
    assert "assert " in code, "the chapter checks something numerically"
    machine_paths = re.findall(r"/(?:work|tmp|root|home)/[A-Za-z]", "".join(path.read_text()))
    assert not machine_paths, "absolute paths of a machine in a stored notebook"
