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


# ------------------------------------------------ trained outputs: tags, checks, glue

IGNORE_TAG = "nbval-ignore-output"
GLUE_ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([A-Za-z_][A-Za-z0-9_]*)")


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def glued(nb) -> dict[str, str]:
    """``{glue name: stored text/plain}`` of every value the executed notebook glued."""
    out = {}
    for cell in code_cells(nb):
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                data = o.get("data", {})
                text = next((v for k, v in data.items() if k.endswith("text/plain")), "")
                out[name] = "".join(text) if isinstance(text, list) else text
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_test_machinery_on_the_page(path):
    """nbval markers are cell tags (metadata), never comments a reader would see."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(code_cells(nb)):
        src = "".join(cell["source"])
        assert "NBVAL_" not in src, f"code cell {i}: use the tag {IGNORE_TAG!r}, not a comment"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cells_that_check_trained_values_are_tagged(path):
    """A cell whose numbers come out of training is not compared digit by digit: it is
    tagged, and it checks them against the recorded run (``Reference.check``)."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(code_cells(nb)):
        src = "".join(cell["source"])
        if re.search(r"\bref\.check\(", src):
            assert IGNORE_TAG in cell.get("metadata", {}).get("tags", []), \
                f"code cell {i} checks trained values but is not tagged {IGNORE_TAG!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_quotes_only_glued_values(path):
    """Every number the prose pastes with ``{glue:...}`` was glued by the stored run."""
    nb = json.loads(path.read_text())
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    used = set(GLUE_ROLE.findall(md))
    missing = used - set(glued(nb))
    assert not missing, f"the prose pastes glue keys the notebook never glued: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_glued_numbers_are_plain_numbers(path):
    """A glued NumPy scalar is stored as ``np.float64(0.79)``, which ``{glue:text}`k:.3f```
    cannot format (the page shows a warning instead of the number): glue Python numbers."""
    nb = json.loads(path.read_text())
    bad = {k: v for k, v in glued(nb).items() if re.match(r"\s*np\.", v)}
    assert not bad, f"glued NumPy scalars (wrap them in float()/int()): {bad}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_recorded_values_come_from_the_stored_run(path):
    """The recorded reference values and the stored outputs are one execution: every
    recorded value is glued in the notebook with the same value, and every value the
    notebook checks is recorded (``make execute`` writes both)."""
    recorded_path = ROOT / "chapters" / "reference_values" / f"{path.stem}.json"
    nb = json.loads(path.read_text())
    checks = any(re.search(r"\bref\.check\(", "".join(c["source"])) for c in code_cells(nb))
    if not checks:
        assert not recorded_path.exists(), f"{recorded_path.name} is stale: the chapter " \
                                           f"checks nothing"
        return
    assert recorded_path.exists(), f"{path.name} checks trained values: run `make execute`"
    recorded = json.loads(recorded_path.read_text())["values"]
    stored = glued(nb)
    for key, entry in recorded.items():
        assert key in stored, f"{key} is recorded but not in the stored outputs: make execute"
        assert float(stored[key]) == entry["value"], \
            f"{key}: stored output {stored[key]} != recorded {entry['value']}: make execute"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_pages_fit_the_column_and_have_no_control_characters(path):
    """Code lines fit the text column (79 characters); Markdown has no stray control
    characters (e.g. a ``\\a`` from a non-raw string eating ``\\approx``)."""
    nb = json.loads(path.read_text())
    long = [(i, line) for i, c in enumerate(code_cells(nb))
            for line in "".join(c["source"]).splitlines() if len(line) > 79]
    assert not long, f"code lines over 79 characters: {long[:5]}"
    bad = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"
           and re.search(r"[\x00-\x08\x0b-\x1f\x7f]", "".join(c["source"]))]
    assert not bad, f"control characters in Markdown cells {bad}"
