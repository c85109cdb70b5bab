"""requirements.txt installs on every Python the book supports, and make says so early.

* The supported range is written once: pyproject.toml's `requires-python`. tools/check_python.py
  reads it (the Makefile runs it before making .venv); TARGETS below must cover it.
* `network` tests: for each supported Python, pip resolves requirements.txt without installing
  (`pip install --dry-run --python-version X --target TMP`). pip evaluates environment markers
  against the Python it runs under, not against --python-version, so each target first gets its
  own marker-free copy of requirements.txt (markers evaluated for that Python here). The
  dependencies' own markers are still read for the running Python, so a backport that a real
  3.10 install would add unpinned is not caught here (the requirements.txt header says how to
  resolve with that Python itself). The runs start together and each test waits for its own;
  they skip when PyPI cannot be reached.
* The rest is offline: the markers select exactly one pin per package for every patch release of
  every supported Python, and the checker accepts/rejects the right versions with a message
  that says what it found, what it needs and how to get it.
"""
from __future__ import annotations

import ast
import atexit
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements.txt"
CHECKER = ROOT / "tools" / "check_python.py"


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_python", CHECKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_python = _load_checker()
REQUIRES_PYTHON = check_python.read_requires_python()

# One pip resolution per supported minor version. Where markers split a minor by patch release,
# the target takes the rarer branch (the common one is the same pin set as 3.12 and 3.13, so
# the same wheels are checked for the minor either way): 3.11.2 is Debian 12's Python and gets
# soupsieve 2.10 (`python_full_version < "3.11.5"`); 3.14.1 gets networkx 3.6.
TARGETS = ["3.10", "3.11.2", "3.12", "3.13", "3.14.1"]

PIP_TIMEOUT_S = 1200
PYPI_PROBE = "https://pypi.org/simple/pip/"


# ---------------------------------------------------------------- requirements.txt, per Python
def _full(version: str) -> str:
    parts = version.split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def marker_environment(version: str) -> dict:
    """The running platform's marker environment, as seen by CPython `version`."""
    env = default_environment()
    full = _full(version)
    env.update(python_version=".".join(full.split(".")[:2]), python_full_version=full)
    return env


def requirement_lines(path: Path = REQUIREMENTS) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def flatten(version: str, path: Path = REQUIREMENTS) -> list[str]:
    """requirements.txt as pip on CPython `version` reads it: markers applied, then dropped.

    Option lines stay; `-e .` becomes an absolute path so the copy can live anywhere."""
    env = marker_environment(version)
    out = []
    for line in requirement_lines(path):
        if line.startswith("-"):
            out.append(re.sub(r"^(-e|--editable)\s+\.$", r"\1 " + str(ROOT), line))
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        req.marker = None
        out.append(str(req))
    return out


def pins(version: str) -> dict[str, list[str]]:
    """package -> the pins requirements.txt selects for CPython `version`."""
    got: dict[str, list[str]] = {}
    for line in flatten(version):
        if not line.startswith("-"):
            req = Requirement(line)
            got.setdefault(canonicalize_name(req.name), []).append(str(req.specifier))
    return got


# ---------------------------------------------------------------- offline: the file itself
def test_every_requirement_is_an_exact_pin_with_a_valid_marker():
    for line in requirement_lines():
        if line.startswith("-"):
            assert line in ("-e .", "--editable ."), f"unexpected option line: {line}"
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"not an exact pin: {line}"
        if req.marker is not None:
            req.marker.evaluate(marker_environment("3.12"))  # parses and evaluates


def _patch_grid():
    for minor in check_python.supported_minors(REQUIRES_PYTHON):
        for patch in range(0, 21):
            yield "%d.%d.%d" % (minor + (patch,))


def test_markers_pick_one_pin_per_package():
    """For every patch release of every supported minor: each package pinned exactly once, and
    the same packages across the patch releases of a minor (a marker gap or overlap fails)."""
    by_minor: dict[str, set] = {}
    for full in _patch_grid():
        selected = pins(full)
        double = {name: specs for name, specs in selected.items() if len(specs) != 1}
        assert not double, f"Python {full}: more than one pin for {double}"
        minor = full.rsplit(".", 1)[0]
        names = set(selected)
        if minor in by_minor:
            assert names == by_minor[minor], (
                f"Python {full} selects a different package set than {minor}.0: "
                f"missing {sorted(by_minor[minor] - names)}, extra {sorted(names - by_minor[minor])}"
            )
        by_minor[minor] = names


@pytest.mark.parametrize("full", ["3.10.0", "3.11.2", "3.11.7", "3.12.0", "3.13.0", "3.14.0", "3.14.1"])
def test_house_pins_hold_on_every_python(full):
    selected = pins(full)
    assert selected["torch"] == ["==2.13.0"]
    (book,) = selected["jupyter-book"]
    assert Version(book.lstrip("=")) < Version("2"), book


def test_unmarked_pins_are_the_311_freeze():
    """Python 3.11.7 (what the stored notebooks were executed with) gets every pin that carries
    a python_version >= "3.11" style marker, i.e. the freeze itself, not a fallback."""
    selected = {name: specs[0] for name, specs in pins("3.11.7").items()}
    for line in requirement_lines():
        if line.startswith("-"):
            continue
        req = Requirement(line)
        if req.marker is None:
            assert selected[canonicalize_name(req.name)] == str(req.specifier)
    # the pairs' newer halves, spot-checked
    assert selected["numpy"] == "==2.4.6" and selected["soupsieve"] == "==4.1.2"


# ---------------------------------------------------------------- offline: range agreement
def test_targets_cover_requires_python():
    spec = SpecifierSet(REQUIRES_PYTHON)
    minors = ["%d.%d" % m for m in check_python.supported_minors(REQUIRES_PYTHON)]
    assert sorted({".".join(t.split(".")[:2]) for t in TARGETS}, key=Version) == minors
    for target in TARGETS:
        assert _full(target) in spec, f"{target} is outside requires-python {REQUIRES_PYTHON}"


def _grid():
    for minor in range(6, 17):
        for patch in (0, 1, 2, 5, 9):
            yield (3, minor, patch)
    yield (2, 7, 18)
    yield (4, 0, 0)


@pytest.mark.parametrize(
    "spec", [REQUIRES_PYTHON, ">=3.10", ">=3.10,!=3.14.1,<3.15", "==3.11.*", "!=3.12.*,>=3.9", "<=3.12.1,>3.10"]
)
def test_checker_reads_specifiers_as_packaging_does(spec):
    packaging_spec = SpecifierSet(spec)
    for v in _grid():
        text = ".".join(map(str, v))
        assert check_python.satisfies(v, spec) == (text in packaging_spec), (spec, text)


def test_requirements_header_names_the_range():
    header = "\n".join(
        line for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines() if line.startswith("#")
    )
    assert "C" + check_python.describe(REQUIRES_PYTHON) in header  # "CPython 3.10 to 3.14"
    assert REQUIRES_PYTHON in header


# ---------------------------------------------------------------- offline: the checker
def _run_checker(python=sys.executable, pretend=None):
    env = {k: v for k, v in os.environ.items() if k != check_python.PRETEND_VAR}
    if pretend:
        env[check_python.PRETEND_VAR] = pretend
    return subprocess.run([python, str(CHECKER)], capture_output=True, text=True, env=env, timeout=60)


def test_checker_is_silent_on_this_python():
    done = _run_checker()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize("pretend", ["3.9.18", "3.15.0", "2.7.18"])
def test_checker_rejects_unsupported_python(pretend):
    done = _run_checker(pretend=pretend)
    assert done.returncode == 1
    msg = done.stderr
    assert f"Python {pretend}" in msg and sys.executable in msg  # found: version and path
    assert check_python.describe(REQUIRES_PYTHON) in msg and REQUIRES_PYTHON in msg  # needed
    for hint in ("make PYTHON=python3.12 book", "apt install", "deadsnakes", "pyenv install", "uv python"):
        assert hint in msg, hint  # how to get one
    assert "rm -rf .venv" in msg


def test_check_function():
    spec = ">=3.10,<3.15"
    assert check_python.check((3, 10, 0), "/x/python", spec) == (True, "")
    assert check_python.check((3, 14, 9), "/x/python", spec) == (True, "")
    ok, msg = check_python.check((3, 15, 0), "/opt/py315/bin/python3", spec)
    assert not ok and "Python 3.15.0 at /opt/py315/bin/python3" in msg
    ok, msg = check_python.check((3, 9, 18), "/usr/bin/python3.9", spec)
    assert not ok and "Python 3.9.18 at /usr/bin/python3.9" in msg
    assert check_python.current_version({check_python.PRETEND_VAR: "3.8.1"}) == (3, 8, 1)
    assert check_python.current_version({}) == tuple(sys.version_info[:3])


def test_checker_source_runs_on_old_pythons():
    """The checker must explain itself on the Pythons it rejects: no syntax newer than 2.7/3.5."""
    tree = ast.parse(CHECKER.read_text(encoding="utf-8"))
    new_nodes = (ast.JoinedStr, ast.AnnAssign, ast.NamedExpr, ast.AsyncFunctionDef)
    if hasattr(ast, "Match"):
        new_nodes += (ast.Match,)
    for node in ast.walk(tree):
        assert not isinstance(node, new_nodes), f"line {getattr(node, 'lineno', '?')}: {type(node).__name__}"
        if isinstance(node, ast.arguments):
            annotated = [a for a in node.args + node.kwonlyargs if a.annotation is not None]
            assert not annotated and not node.kwonlyargs and not node.posonlyargs
        if isinstance(node, ast.FunctionDef):
            assert node.returns is None
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                top = (getattr(node, "module", None) or alias.name).split(".")[0]
                assert top in sys.stdlib_module_names, f"not stdlib: {top}"


def test_checker_on_a_real_old_python():
    """Where an old interpreter is installed (pyenv, deadsnakes), run the checker under it."""
    candidates = [shutil.which(name) for name in ("python2.7", "python3.6", "python3.7", "python3.8", "python3.9")]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for path in sorted(pyenv.glob("[23].*/bin/python")):
        m = re.match(r"(\d+)\.(\d+)\.\d+$", path.parent.parent.name)
        if m and (int(m.group(1)), int(m.group(2))) < (3, 10):
            candidates.append(str(path))
    ran = []
    for exe in filter(None, candidates):
        if subprocess.run([exe, "-c", "pass"], capture_output=True).returncode != 0:
            continue  # e.g. a pyenv shim for a version that is not selected
        done = _run_checker(python=exe)
        assert done.returncode == 1, (exe, done.stdout, done.stderr)
        assert "This book needs " + check_python.describe(REQUIRES_PYTHON) in done.stderr, done.stderr
        ran.append(exe)
    if not ran:
        pytest.skip("no Python older than 3.10 on PATH")


# ---------------------------------------------------------------- network: pip resolutions
def _pypi_problem() -> str | None:
    """Why the resolutions cannot run here, or None."""
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        return f"requirements.txt is resolved for Linux x86_64, this is {sys.platform} {platform.machine()}"
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    m = re.match(r"pip (\d+)\.(\d+)", pip.stdout)
    if not m or (int(m.group(1)), int(m.group(2))) < (22, 2):
        return f"pip >= 22.2 needed for --dry-run, found: {pip.stdout.strip() or pip.stderr.strip()}"
    request = urllib.request.Request(PYPI_PROBE, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read(1)
    except Exception as exc:  # offline, DNS, proxy, TLS: all mean "cannot check here"
        return f"PyPI cannot be reached ({PYPI_PROBE}: {exc})"
    return None


def _pip_has_fast_deps() -> bool:
    """pip's lazy wheels: metadata by HTTP range requests. Indexes without PEP 658 metadata would
    otherwise make each dry-run download whole wheels (torch + CUDA: ~1.6 GB per Python)."""
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--help"], capture_output=True, text=True)
    return "fast-deps" in out.stdout


_STARTED: dict = {}


def start_resolutions() -> dict:
    """Start one `pip install --dry-run` per target, all at once (idempotent); return
    target -> (process, log, start time), or raise ``RuntimeError`` with why they cannot run.

    ``tests/conftest.py`` calls this as soon as collection finishes, so the network-bound
    resolutions run in the background while the rest of the session (the chapters) runs."""
    if _STARTED:
        return _STARTED
    problem = _pypi_problem()
    if problem:
        raise RuntimeError(problem)
    base = Path(tempfile.mkdtemp(prefix="ctr-resolve-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    extra = ["--use-feature=fast-deps"] if _pip_has_fast_deps() else []
    for target in TARGETS:
        flat = base / f"requirements-{target}.txt"
        flat.write_text("\n".join(flatten(target)) + "\n", encoding="utf-8")
        log = base / f"pip-{target}.log"
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-input",
            "--ignore-installed", "--only-binary=:all:", "--python-version", target,
            "--target", str(base / f"target-{target}"), *extra, "-r", str(flat),
        ]
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=base)
        _STARTED[target] = (proc, log, time.monotonic())
    atexit.register(_stop_resolutions)
    return _STARTED


def _stop_resolutions() -> None:
    for proc, _, _ in _STARTED.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def resolutions():
    try:
        return start_resolutions()
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.mark.network
@pytest.mark.parametrize("target", TARGETS)
def test_requirements_resolve(target, resolutions):
    proc, log, t0 = resolutions[target]
    try:
        rc = proc.wait(timeout=max(1.0, PIP_TIMEOUT_S - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"pip dry-run for Python {target} still running after {PIP_TIMEOUT_S}s")
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    lines = [line for line in lines if not line.startswith("WARNING: Location")]  # local-index noise
    assert rc == 0, f"requirements.txt does not resolve for Python {target} (pip exit {rc}):\n" + "\n".join(
        lines[-40:]
    )
