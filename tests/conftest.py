"""Shared fixtures. The MovieLens cache is fetched by `make test` before pytest runs."""

from __future__ import annotations

import pytest
import torch

from ctr_src.data import movielens


def pytest_collection_finish(session):
    """Start the network-bound requirement resolutions (tests/test_requirements.py) as soon
    as they are collected, so they run in the background while the chapters run."""
    for item in session.items:
        if item.name.startswith("test_requirements_resolve"):
            try:
                item.module.start_resolutions()
            except RuntimeError:
                pass  # the tests themselves skip and say why
            return


@pytest.fixture(scope="session")
def ml():
    try:
        return movielens.load_movielens()
    except movielens.DataError as exc:  # pragma: no cover - only without `make data`
        pytest.fail(f"{exc}")


@pytest.fixture(scope="session")
def ctr():
    from ctr_src.data import load_ctr
    return load_ctr()


@pytest.fixture(autouse=True)
def _double_default():
    """Tests run in float32 unless they ask for float64 explicitly."""
    torch.set_default_dtype(torch.float32)
    yield


def random_fields(field_dims, batch, generator=None):
    """A ``(B, F)`` long tensor of valid per-field indices."""
    cols = [torch.randint(0, d, (batch,), generator=generator) for d in field_dims]
    return torch.stack(cols, dim=1)


# ----------------------------------------------------------------------------- the built book

class BookBuild:
    """One ``jupyter-book build . -W -n --keep-going`` (what ``make book`` runs)."""

    def __init__(self, returncode: int, log: str, html):
        self.returncode, self.log, self.html = returncode, log, html

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The HTML book, built once per session into a temporary folder and shared by
    tests/test_book.py (warnings as errors) and tests/test_browser.py (a real browser)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    exe = Path(sys.executable).parent / "jupyter-book"
    if not exe.exists():
        exe = shutil.which("jupyter-book")
    assert exe, "jupyter-book is not installed (make install)"
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([str(exe), "build", str(root), "-W", "-n", "--keep-going",
                           "--path-output", str(out)], capture_output=True, text=True,
                          env=env, timeout=1200)
    return BookBuild(proc.returncode, proc.stdout + proc.stderr, out / "_build" / "html")
