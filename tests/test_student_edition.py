"""The student edition of the website (`make book-student`, tools/student_edition.py):
it builds warning-free, and neither its pages nor the notebooks its download button
serves contain any exercise solution."""

from __future__ import annotations

import html as htmlmod
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import student_edition as se  # noqa: E402  (tools/student_edition.py)


def _alnum(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.lower())


def _page_text(path: Path) -> str:
    text = re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8"))
    return _alnum(htmlmod.unescape(text))


def _chapter_texts():
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        yield path, nb


def solution_sentences() -> dict[str, list[str]]:
    """Per chapter, the prose lines (40+ letters) of its exercise solutions that appear
    nowhere else in the chapter: what a student edition must not show."""
    out = {}
    for path, nb in _chapter_texts():
        stripped = se.strip_notebook(nb)
        kept = _alnum("\n".join(
            c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            for c in stripped["cells"]))
        lines = []
        for cell in nb["cells"]:
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            lines += src.split("\n")
        secret = [ln for ln in lines if len(_alnum(ln)) >= 40
                  and not re.search(r"[`${}\\|*_<>\[\]]", ln)  # plain prose only
                  and _alnum(ln) not in kept]
        if secret:
            out[path.stem] = secret
    return out


@pytest.fixture(scope="module")
def student_book(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    proc = se.build(out)
    return proc, out / "html", out / "source"


def test_strip_notebook_spans_and_directives():
    nb = {"cells": [
        {"cell_type": "markdown", "source": "Intro.\n\n```{exercise}\n:label: e1\nDo.\n```\n"
                                            "\n````{solution} e1\n:class: dropdown\nSECRET A\n"
                                            "```python\nx = 1\n```\nmore\n````\nAfter."},
        {"cell_type": "markdown", "source": "```{exercise}\n:label: e2\nDo 2.\n```\n\n"
                                            "```{solution-start} e2\n:class: dropdown\n```\n"
                                            "SECRET B"},
        {"cell_type": "code", "source": "secret_c = 1"},
        {"cell_type": "markdown", "source": "SECRET D\n\n```{solution-end}\n```\n\nNext."},
        {"cell_type": "code", "source": "public = 2"},
    ]}
    out = se.strip_notebook(nb)
    text = json.dumps(out)
    for secret in ("SECRET", "secret_c", "x = 1", "{solution"):
        assert secret not in text
    for kept in ("Intro.", "After.", "Do 2.", "Next.", "public = 2", "{exercise}"):
        assert kept in text
    assert [c["cell_type"] for c in out["cells"]] == ["markdown", "markdown", "markdown",
                                                      "code"]


def test_sentences_found_in_the_sources():
    """The check below has something to look for in every chapter with exercises."""
    found = solution_sentences()
    assert {"02_logistic_regression", "03_factorization_machines", "05_pnn",
            "06_wide_deep_deepfm"} <= set(found), sorted(found)


def test_full_book_shows_the_solutions(built_book):
    """Positive control: the ordinary build does contain the sentences looked for."""
    if not built_book.ok:
        pytest.skip("the ordinary book build failed (tests/test_book.py reports it)")
    for stem, lines in solution_sentences().items():
        page = _page_text(built_book.html / "chapters" / f"{stem}.html")
        assert any(_alnum(ln) in page for ln in lines), stem


def test_student_edition_builds_warning_free(student_book):
    proc, html, _ = student_book
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert (html / "index.html").exists()
    assert len(list((html / "chapters").glob("*.html"))) >= 9


def test_student_edition_has_no_solution(student_book):
    proc, html, source = student_book
    assert proc.returncode == 0
    downloads = sorted((html / "_sources").rglob("*.ipynb"))
    assert len(downloads) >= 8, "the download button serves the chapters' notebooks"
    leaks = []
    for path in sorted((html / "_sources").rglob("*")) + sorted(source.rglob("*.ipynb")):
        if path.is_file() and path.suffix in (".ipynb", ".md"):
            if not se.solution_free(path.read_text(encoding="utf-8")):
                leaks.append(f"{path.name}: a solution directive")
    for stem, lines in solution_sentences().items():
        page = _page_text(html / "chapters" / f"{stem}.html")
        cells = json.loads((html / "_sources" / "chapters" / f"{stem}.ipynb")
                           .read_text(encoding="utf-8"))["cells"]
        nb = _alnum("\n".join("".join(c["source"]) for c in cells))
        for ln in lines:
            if _alnum(ln) in page:
                leaks.append(f"{stem}.html: {ln.strip()[:70]!r}")
            if _alnum(ln) in nb:
                leaks.append(f"{stem}.ipynb: {ln.strip()[:70]!r}")
    assert not leaks, "\n".join(leaks[:20])
    # the exercises themselves stay
    assert "exercise" in (html / "chapters" / "03_factorization_machines.html").read_text()


def test_student_edition_has_no_launch_buttons(student_book):
    _, html, _ = student_book
    page = (html / "chapters" / "02_logistic_regression.html").read_text(encoding="utf-8")
    assert "colab.research.google.com" not in page and "mybinder.org" not in page
