"""The chapters' setup cell (tools/setup_cell.py): what it is, that it does nothing here, that
inserting it is idempotent, and -- in a fresh virtual environment -- that it installs ctr_src
from a checkout and fetches the data, as it would on Colab."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import setup_cell  # noqa: E402

SOURCE = setup_cell.cell_source()
CHAPTER = ROOT / "chapters" / "02_logistic_regression.ipynb"


# ----------------------------------------------------------------------------- the source

def test_source_compiles_fits_the_column_and_names_the_configured_repository():
    compile(SOURCE, "<setup cell>", "exec")
    assert SOURCE.startswith(setup_cell.MARKER)
    assert max(len(line) for line in SOURCE.splitlines()) <= 79
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    assert f'"{url}"' in SOURCE and SOURCE.count("github.com") == 1  # written once, from there
    assert "CTR_BOOK_REPO" in SOURCE  # the override a test or a mirror can use
    assert not re.findall(r"/(?:work|tmp|root|home)/[A-Za-z]", SOURCE)  # no paths of a machine
    assert "NBVAL_" not in SOURCE


def test_pins_are_those_of_requirements_txt():
    lines = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()}
    found = setup_cell.pins()
    assert found["torch"] == ["torch==2.13.0"]
    for dist, pins in found.items():
        assert pins and all(p in lines for p in pins), dist
        for p in pins:
            assert repr(p) in SOURCE or f'"{p}"' in SOURCE, p
    assert "--no-deps" in SOURCE  # ctr_src and myst-nb: Colab keeps its own stack
    assert setup_cell.TORCH_CPU_INDEX in SOURCE


def test_is_a_no_op_here(ml):
    """In this venv (ctr_src importable, data cached) the cell prints nothing, installs
    nothing, writes nothing: nbval sees no output."""
    site = Path(subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    before = sorted(p.name for p in site.iterdir())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SOURCE], capture_output=True, text=True, env=env,
                          cwd=ROOT / "chapters", timeout=120)
    took = time.monotonic() - t0
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert sorted(p.name for p in site.iterdir()) == before
    assert took < 60, f"the no-op took {took:.0f} s"


# ----------------------------------------------------------------------------- inserting it

def _strip(nb: dict) -> dict:
    """A notebook as it was before the setup cell went in: the cell removed, the counts of
    the cells after it moved back by one."""
    nb = json.loads(json.dumps(nb))
    nb["cells"] = [c for c in nb["cells"] if not setup_cell.is_setup_cell(c)]
    for c in nb["cells"]:
        if c["cell_type"] == "code" and c.get("execution_count"):
            c["execution_count"] -= 1
            for out in c.get("outputs", []):
                if out.get("output_type") == "execute_result":
                    out["execution_count"] -= 1
    return nb


def test_insert_on_a_chapter_copy_is_idempotent(tmp_path):
    path = tmp_path / CHAPTER.name
    shutil.copy(CHAPTER, path)
    original = json.loads(path.read_text())
    if any(setup_cell.is_setup_cell(c) for c in original["cells"]):
        original = _strip(original)
        path.write_text(nbformat.writes(nbformat.from_dict(original)) + "\n")
    assert setup_cell.check(path) == "no setup cell first"

    assert setup_cell.insert(path) is True
    once = path.read_bytes()
    assert setup_cell.insert(path) is False and path.read_bytes() == once
    assert setup_cell.check(path) is None

    nb = json.loads(once)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    assert "".join(first["source"]) == SOURCE and first["outputs"] == []
    assert first["metadata"]["tags"] == [setup_cell.HIDE_TAG] and first.get("id") == setup_cell.CELL_ID
    assert nb["cells"].index(first) == [c["cell_type"] for c in original["cells"]].index("code")
    # what tests/test_notebooks.py asks of a stored chapter still holds
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    nbformat.validate(nbformat.reads(once.decode(), as_version=4))
    # nothing else changed
    assert _strip(nb) == original

    # a stale cell is refreshed, a moved one goes back to the top
    stale = json.loads(once)
    cell = next(c for c in stale["cells"] if setup_cell.is_setup_cell(c))
    cell["source"] = setup_cell.MARKER + "\nprint('old')\n"
    stale["cells"].remove(cell)
    stale["cells"].append(cell)
    path.write_text(nbformat.writes(nbformat.from_dict(stale)) + "\n")
    assert setup_cell.check(path) == "no setup cell first"
    assert setup_cell.insert(path) is True and path.read_bytes() == once


def test_insert_into_a_notebook_never_executed(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "new.ipynb"
    nbformat.write(nb, path)
    assert setup_cell.insert(path)
    got = nbformat.read(path, as_version=4)
    assert [c.cell_type for c in got.cells] == ["markdown", "code", "code"]
    assert setup_cell.is_setup_cell(got.cells[1]) and got.cells[1].execution_count is None
    assert got.cells[2].source == "x = 1"


def test_command_line_check_and_print(tmp_path):
    path = tmp_path / CHAPTER.name
    shutil.copy(CHAPTER, path)
    tool = [sys.executable, str(ROOT / "tools" / "setup_cell.py")]
    had = any(setup_cell.is_setup_cell(c) for c in json.loads(path.read_text())["cells"])
    first = subprocess.run(tool + ["--check", str(path)], capture_output=True, text=True)
    assert first.returncode == (0 if had and setup_cell.check(path) is None else 1)
    assert subprocess.run(tool + [str(path)], capture_output=True, text=True).returncode == 0
    assert subprocess.run(tool + ["--check", str(path)], capture_output=True, text=True).returncode == 0
    printed = subprocess.run(tool + ["--print"], capture_output=True, text=True, check=True).stdout
    assert printed == SOURCE


# ----------------------------------------------------------------------------- a fresh venv

FRESH_VENV_LIMIT_S = 600


def _fresh_venv_problem() -> str | None:
    """Why the fresh-venv run cannot happen here, or None."""
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10) as response:
            response.read(1)
    except Exception as exc:
        return f"PyPI cannot be reached (numpy, pandas, ... come from there): {exc}"
    probe = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps",
                            "--no-index", "--ignore-installed", "torch==2.13.0"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        return ("torch==2.13.0 is not available to pip without the network here (no find-links "
                "folder holds it), and this test does not download it (~200 MB to several GB)")
    return None


@pytest.mark.slow
@pytest.mark.network
def test_fresh_venv_installs_ctr_src_from_a_checkout_and_fetches_the_data(tmp_path, ml):
    """What Colab does with the cell, as far as this machine allows: a new venv (no system site
    packages) with none of the book's packages; the checkout is a local copy of this one
    (CTR_BOOK_REPO, instead of cloning the repository URL), the data a local GroupLens-style
    archive (CTR_MOVIELENS_URL) fetched into a temporary data folder."""
    problem = _fresh_venv_problem()
    if problem:
        pytest.skip(problem)
    from test_data import grouplens_zip

    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".cache")
    for part in ("ctr_src", "results", "chapters/reference_values"):
        shutil.copytree(ROOT / part, checkout / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, checkout / part)
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(grouplens_zip(ml))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTR_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(CTR_BOOK_REPO=str(checkout), CTR_TORCH_INDEX="", CTR_DATA_DIR=str(tmp_path / "data"),
               CTR_MOVIELENS_URL=archive.as_uri(), CTR_BOOK_HOME=str(tmp_path / "home"),
               PATH=str(venv / "bin") + os.pathsep + env.get("PATH", ""), OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    done = subprocess.run([str(python), "-c", SOURCE], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=FRESH_VENV_LIMIT_S)
    took = time.monotonic() - t0
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    for step in ("Installing ctr_src from " + str(checkout), "Installing torch (CPU build)",
                 "Installing numpy, pandas, sklearn, matplotlib, tqdm, nbformat, docutils",
                 "Installing myst-nb", "MovieLens-100K verified and cached in"):
        assert step in done.stdout, (step, log[-4000:])

    probe = ("import ctr_src, torch, myst_nb, sklearn, matplotlib, tqdm\n"
             "from ctr_src.data import load_ctr\n"
             "print(ctr_src.__file__, torch.__version__, len(load_ctr().train))\n")
    after = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=300)
    assert after.returncode == 0, after.stderr[-3000:]
    where, version, rows = after.stdout.split()
    assert Path(where).is_relative_to(checkout)  # editable: results/ and reference values found
    assert version.startswith("2.13.0") and rows == "80000"
    assert (tmp_path / "data" / "ml-100k" / "MANIFEST.json").exists()

    again = subprocess.run([str(python), "-c", SOURCE], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=300)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")  # now a no-op
    print(f"fresh venv set up by the cell in {took:.0f} s")


# ----------------------------------------------------------------------------- binder/

def test_binder_installs_the_pinned_set_with_cpu_torch():
    binder = ROOT / "binder"
    lines = [ln.strip() for ln in (binder / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-r ../requirements.txt"]
    root = (ROOT / "requirements.txt").read_text()
    assert "torch==2.13.0\n" in root and "-e ." in root and "jupyterlab_myst==" in root
    runtime = (binder / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.1[0-4]", runtime), runtime
    assert "ml-100k" not in "".join(p.name for p in binder.iterdir())  # never data in the image


def test_binder_start_fetches_the_data_then_starts_what_it_is_given(tmp_path, ml):
    """binder/start with the download pointed at a local archive: data fetched into the data
    folder, then the given command runs; a failed fetch still runs it."""
    from test_data import grouplens_zip

    start = ROOT / "binder" / "start"
    assert os.access(start, os.X_OK), "binder/start must be executable (git add --chmod=+x)"
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(grouplens_zip(ml))
    env = dict(os.environ, CTR_DATA_DIR=str(tmp_path / "data"), CTR_MOVIELENS_URL=archive.as_uri(),
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    done = subprocess.run([str(start), "echo", "lab started"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("lab started")
    assert (tmp_path / "data" / "ml-100k" / "MANIFEST.json").exists()

    env.update(CTR_DATA_DIR=str(tmp_path / "none"), CTR_MOVIELENS_URL=(tmp_path / "missing.zip").as_uri())
    broken = subprocess.run(["bash", "-c", f"python() {{ return 1; }}; export -f python; {start} echo ok"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert broken.returncode == 0 and broken.stdout.strip() == "ok", broken.stderr
    assert "could not be fetched" in broken.stderr
