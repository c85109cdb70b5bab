"""The book builds with warnings as errors (``jupyter-book build . -W -n --keep-going``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path):
    exe = Path(sys.executable).parent / "jupyter-book"
    if not exe.exists():
        exe = shutil.which("jupyter-book")
    assert exe, "jupyter-book is not installed (make install)"
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([str(exe), "build", str(ROOT), "-W", "-n", "--keep-going",
                           "--path-output", str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists()
    for page in ("chapters/intro.html", "chapters/02_logistic_regression.html"):
        assert (html / page).exists(), page
    text = (html / "chapters" / "02_logistic_regression.html").read_text()
    assert "Exercise" in text and "math" in text
