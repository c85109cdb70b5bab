"""The book builds with warnings as errors (``jupyter-book build . -W -n --keep-going``), and
the HTML it writes needs no network: MathJax is served from ``_static``, every script and
stylesheet is local, the launch buttons point at the repository of ``_config.yml``, and
the chapters' setup cell (tools/setup_cell.py) never shows on a page.

The build itself is the session fixture ``built_book`` (tests/conftest.py), shared with
the real-browser checks in tests/test_browser.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import setup_cell  # noqa: E402  (tools/setup_cell.py)

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def pages(html: Path) -> list[Path]:
    return sorted(p for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_"))


@pytest.fixture(scope="module")
def html(built_book):
    if not (built_book.html / "index.html").exists():
        pytest.fail("the book build wrote no index.html:\n" + built_book.log[-6000:])
    return built_book.html


@pytest.mark.slow
def test_book_builds_without_warnings(built_book):
    assert built_book.ok, built_book.log[-6000:]
    html = built_book.html
    for page in ("index.html", "chapters/intro.html", "chapters/02_logistic_regression.html"):
        assert (html / page).exists(), page
    text = (html / "chapters" / "02_logistic_regression.html").read_text(encoding="utf-8")
    assert "Exercise" in text and "math" in text


@pytest.mark.slow
def test_mathjax_is_served_from_the_book(html):
    """sphinx-mathjax-offline: every page loads MathJax from ``_static``, none from a CDN."""
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert (html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    for page in pages(html):
        text = page.read_text(encoding="utf-8")
        if "class=\"math" in text:
            assert re.search(r'<script[^>]+src="(\.\./)*_static/mathjax/tex-chtml\.js"', text), page.name


_SRC = re.compile(r'<(?:script|img|iframe)\b[^>]*\bsrc="([^"]+)"|<link\b[^>]*\bhref="([^"]+)"')


@pytest.mark.slow
def test_pages_load_nothing_from_other_hosts(html):
    """Scripts, stylesheets, fonts, images: all from the book's own folder (links to other
    sites are fine, loading from them is not: the pages must work offline)."""
    remote = {}
    for page in pages(html):
        for m in _SRC.finditer(page.read_text(encoding="utf-8")):
            url = m.group(1) or m.group(2)
            tag = m.group(0)
            if url.startswith(("http:", "https:", "//")) and not re.search(
                    r'rel="(?:canonical|alternate|author|license|next|prev)"', tag):
                remote.setdefault(page.relative_to(html).as_posix(), []).append(url)
    assert not remote, f"pages load from other hosts: {remote}"


@pytest.mark.slow
def test_launch_buttons_open_the_chapter_from_the_configured_repository(html):
    """Colab and Binder (JupyterLab) links on every chapter page, built from the one
    repository URL in _config.yml."""
    repo = CONFIG["repository"]["url"].rstrip("/")
    branch = CONFIG["repository"].get("branch", "main")
    org_repo = re.match(r"https://github\.com/([^/]+/[^/]+)$", repo).group(1)
    assert CONFIG["launch_buttons"]["notebook_interface"] == "jupyterlab"
    for nb in CHAPTERS:
        rel = nb.relative_to(ROOT).as_posix()
        text = (html / rel).with_suffix(".html").read_text(encoding="utf-8")
        colab = f"https://colab.research.google.com/github/{org_repo}/blob/{branch}/{rel}"
        binder = f"https://mybinder.org/v2/gh/{org_repo}/{branch}?urlpath=lab/tree/{rel}"
        assert f'href="{colab}"' in text, (nb.name, "Colab")
        assert f'href="{binder}"' in text, (nb.name, "Binder")


@pytest.mark.slow
def test_setup_cell_is_hidden_on_the_website(html):
    """A chapter's setup cell (tagged remove-cell) leaves no trace on its page."""
    for nb in CHAPTERS:
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        setup = [c for c in cells if setup_cell.is_setup_cell(c)]
        for cell in setup:
            assert setup_cell.HIDE_TAG in cell["metadata"].get("tags", []), nb.name
        text = (html / nb.relative_to(ROOT)).with_suffix(".html").read_text(encoding="utf-8")
        assert setup_cell.MARKER not in text and "_ctr_setup" not in text, nb.name


def test_deploy_workflow_builds_as_make_book_and_publishes_the_html():
    """.github/workflows/book.yml (it cannot run here): the same build as `make book`, and
    _build/html deployed by GitHub's Pages actions, from main only."""
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8"))
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    build, deploy = flow["jobs"]["build"], flow["jobs"]["deploy"]
    runs = [s.get("run", "") for s in build["steps"]]
    assert "make book" in runs, runs
    uses = {s.get("uses", "").split("@")[0]: s for s in build["steps"] + deploy["steps"]}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert "actions/deploy-pages" in uses and deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert "refs/heads/main" in deploy["if"] and "pull_request" in deploy["if"]
    assert "download.pytorch.org/whl/cpu" in build["env"]["PIP_EXTRA_INDEX_URL"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^build-book:\n\t\$\(BIN\)/jupyter-book build \. -W -n --keep-going$", makefile, re.M)
    assert re.search(r"^book: install data build-book$", makefile, re.M)


def test_bibliography_is_labelled_as_the_text_cites(html):
    """One citation style: the text cites "Rendle, 2010", so the bibliography's labels
    are author-year too (tools/sphinx_fixes.py), not alpha codes like "[HPJ+14]"."""
    import re

    page = (html / "chapters" / "bibliography.html").read_text()
    labels = re.findall(r'class="label"><span class="fn-bracket">\[</span>([^<]*)<', page)
    assert len(labels) >= 20, labels
    for label in labels:
        assert re.fullmatch(r"[A-Z][^,]*, (19|20)\d\d[a-z]?", label), label
    assert "Rendle, 2010" in labels and "He et al., 2014" in labels
    text = (html / "chapters" / "03_factorization_machines.html").read_text()
    assert "Rendle, 2010" in text  # the in-text citation, same form
