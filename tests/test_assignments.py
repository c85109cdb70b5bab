"""The classroom assignments (assignments/<name>/, format in assignments/README.md).

For every assignment folder, found automatically: `otter assign` builds it; the solution
scores full marks; the blank student notebook scores zero and the grader does not crash;
every typical mistake in mistakes.json loses points on exactly the questions it names;
no solution line and no hidden test text is left in any file of the student version.

The grading is otter's own local grader (`otter run`, in-process, no Docker, no network).
Each assignment is built and graded in a worker process (this file run as a script), two
at a time, into a temporary folder; the tests then read the workers' results.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import assignments as tool  # noqa: E402  (tools/assignments.py)

NAMES = sorted(tool.masters())
WORKERS = 2


def _src(cell) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def _raw_marker(cell, word: str) -> bool:
    return cell["cell_type"] == "raw" and bool(
        re.match(rf"#\s+{word}\b", _src(cell), re.I))


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _mistakes(name: str) -> list[dict]:
    path = tool.SOURCES / name / "mistakes.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


# ----------------------------------------------------------------------------- the worker

def make_mistake(solution: dict, mistake: dict) -> dict:
    """The autograder's solution notebook with ``old`` replaced by ``new`` (once)."""
    nb = json.loads(json.dumps(solution))
    hits = [c for c in nb["cells"]
            if c["cell_type"] == "code" and mistake["old"] in _src(c)]
    count = sum(_src(c).count(mistake["old"]) for c in hits)
    if count != 1:
        raise ValueError(f"'old' of mistake {mistake['name']!r} occurs {count} times in "
                         f"the solution code (must be exactly once)")
    cell = hits[0]
    cell["source"] = _src(cell).replace(mistake["old"], mistake["new"])
    return nb


def worker(name: str, out: Path) -> None:
    """Build ``name`` into ``out/dist`` and grade the solution, the blank student
    notebook and every mistake; write ``out/results.json``."""
    dist = out / "dist"
    result: dict = {"build_error": "", "graded": {}, "mistake_errors": {}}
    try:
        tool.build(name, run_tests=False, quiet=True, dist=dist)
    except Exception as exc:  # reported by test_builds
        result["build_error"] = f"{type(exc).__name__}: {exc}"
        (out / "results.json").write_text(json.dumps(result))
        return
    subs = out / "submissions"
    subs.mkdir()
    solution = _load(dist / name / "autograder" / f"{name}.ipynb")
    (subs / "solution.ipynb").write_text(json.dumps(solution))
    (subs / "blank.ipynb").write_bytes((dist / name / "student" / f"{name}.ipynb")
                                      .read_bytes())
    for k, mistake in enumerate(_mistakes(name)):
        try:
            nb = make_mistake(solution, mistake)
        except ValueError as exc:
            result["mistake_errors"][str(k)] = str(exc)
            continue
        (subs / f"mistake-{k}.ipynb").write_text(json.dumps(nb))
    for path in sorted(subs.glob("*.ipynb")):
        result["graded"][path.stem] = tool.grade_one(path, name, dist=dist)
    (out / "results.json").write_text(json.dumps(result, indent=1))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """``{name: (results, folder)}``, every assignment built and graded, two at a time."""
    base = tmp_path_factory.mktemp("assignments")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def run(name):
        out = base / name
        out.mkdir()
        proc = subprocess.run([sys.executable, __file__, name, str(out)], env=env,
                              capture_output=True, text=True, timeout=900)
        path = out / "results.json"
        if proc.returncode or not path.exists():
            return name, {"build_error": f"worker failed ({proc.returncode}):\n"
                                         f"{proc.stderr[-3000:]}"}, out
        return name, json.loads(path.read_text()), out

    with ThreadPoolExecutor(WORKERS) as pool:
        done = list(pool.map(run, NAMES))
    return {name: (res, out) for name, res, out in done}


def _get(graded, name):
    res, out = graded[name]
    assert not res.get("build_error"), res["build_error"]
    return res, out


# ----------------------------------------------------------------------------- the tests

def test_assignments_exist():
    assert {"lr", "fm"} <= set(NAMES), NAMES


@pytest.mark.parametrize("name", NAMES)
def test_master_format(name):
    """The conventions of assignments/README.md that otter does not check itself."""
    master = tool.masters()[name]
    nb = _load(master)
    assert _raw_marker(nb["cells"][0], "ASSIGNMENT CONFIG"), "first cell: the config"
    cfg = _src(nb["cells"][0])
    assert re.search(rf"^name:\s*{name}\s*$", cfg, re.M), "config name = folder name"
    assert re.search(r"ok_format:\s*false", cfg), "exception-based tests (ok_format)"
    info = tool.read_intro(master)
    for key in ("chapter", "covers", "time", "points"):
        assert info[key], f"intro lacks the **{key.capitalize()}:** line"
    assert re.fullmatch(r"about \d+ (minutes|hours?)", info["time"]), info["time"]
    points = tool.question_points(master)
    assert 2 <= len(points) <= 6, points
    assert float(info["points"]) == sum(points.values()), (
        f"intro says {info['points']} points, the questions add up to "
        f"{sum(points.values())}")
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, (
                "store the master with outputs cleared")
            for line in _src(cell).split("\n"):
                assert len(line) <= 79, f"code line over 79 characters: {line!r}"
    # every question: at least one public and one hidden test
    question, in_tests, kinds = None, False, {}
    for cell in nb["cells"]:
        if _raw_marker(cell, "BEGIN QUESTION"):
            question = re.search(r"^name:\s*(\S+)", _src(cell), re.M).group(1)
            kinds[question] = set()
        elif _raw_marker(cell, "BEGIN TESTS"):
            in_tests = True
        elif _raw_marker(cell, "END TESTS"):
            in_tests = False
        elif in_tests and cell["cell_type"] == "code":
            kinds[question].add("hidden" if _is_hidden(_src(cell)) else "public")
    for q, k in kinds.items():
        assert k == {"public", "hidden"}, f"{q}: needs public and hidden tests, has {k}"
    assert _mistakes(name), "mistakes.json: at least one typical wrong answer"
    for m in _mistakes(name):
        assert set(m) == {"name", "question", "old", "new", "loses"}, m
        assert m["question"] in points and set(m["loses"]) <= set(points), m
        code = "".join(_src(c) for c in nb["cells"] if c["cell_type"] == "code")
        assert code.count(m["old"]) == 1, f"{m['name']}: 'old' must occur once"


@pytest.mark.parametrize("name", NAMES)
def test_builds(graded, name):
    res, out = _get(graded, name)
    student = out / "dist" / name / "student" / f"{name}.ipynb"
    assert student.exists()
    assert tool.autograder_zip(name, out / "dist").exists()


@pytest.mark.parametrize("name", NAMES)
def test_solution_scores_full_marks(graded, name):
    res, _ = _get(graded, name)
    sol = res["graded"]["solution"]
    assert not sol["error"], sol["error"]
    expected = tool.question_points(tool.masters()[name])
    assert sol["possible"] == expected
    assert sol["scores"] == expected, f"the solution loses points: {sol['scores']}"


@pytest.mark.parametrize("name", NAMES)
def test_blank_student_notebook_scores_zero(graded, name):
    res, _ = _get(graded, name)
    blank = res["graded"]["blank"]
    assert not blank["error"], f"the grader crashed on the blank notebook: {blank['error']}"
    expected = tool.question_points(tool.masters()[name])
    assert set(blank["scores"]) == set(expected), blank
    assert all(s == 0 for s in blank["scores"].values()), (
        f"a blank notebook earns points: {blank['scores']}")


def _mistake_ids():
    return [pytest.param(name, k, id=f"{name}-{k}")
            for name in NAMES for k in range(len(_mistakes(name)))]


@pytest.mark.parametrize("name,k", _mistake_ids())
def test_mistake_loses_exactly_its_points(graded, name, k):
    res, _ = _get(graded, name)
    mistake = _mistakes(name)[k]
    assert str(k) not in res["mistake_errors"], res["mistake_errors"].get(str(k))
    got = res["graded"][f"mistake-{k}"]
    assert not got["error"], got["error"]
    full = tool.question_points(tool.masters()[name])
    lost = {q for q, s in got["scores"].items() if s < full[q]}
    assert lost == set(mistake["loses"]), (
        f"{mistake['name']!r}: lost points on {sorted(lost)}, expected "
        f"{sorted(mistake['loses'])} (scores {got['scores']})")


# ----------------------------------------------------------------------------- leakage

def _norm(text: str) -> str:
    """Whitespace removed and quotes unified, so that otter's reformatting of test
    code (ast.unparse) cannot hide a leaked line."""
    return re.sub(r"\s+", "", text).replace('"', "'")


def _is_hidden(source: str) -> bool:
    m = re.match(r'\s*(?:.\s*=\s*)?"""?\s*#\s*BEGIN\s*TEST\s*CONFIG(.*?)#\s*END\s*TEST',
                 source, re.S | re.I)
    if m:
        return bool(re.search(r"hidden:\s*true", m.group(1), re.I))
    first = source.lstrip().split("\n", 1)[0]
    return first.startswith("#") and bool(re.search(r"\bhidden\b", first, re.I))


def secrets(master: Path) -> tuple[list[str], list[str]]:
    """(solution lines, hidden test lines) of a master notebook that must not reach a
    student: lines of 12+ characters that no public cell of the master contains."""
    nb = _load(master)
    solution, hidden, public = [], [], []
    in_solution = in_tests = False
    for cell in nb["cells"]:
        src = _src(cell)
        if _raw_marker(cell, "BEGIN SOLUTION"):
            in_solution = True
        elif _raw_marker(cell, "END SOLUTION"):
            in_solution = False
        elif _raw_marker(cell, "BEGIN TESTS"):
            in_tests = True
        elif _raw_marker(cell, "END TESTS"):
            in_tests = False
        elif cell["cell_type"] == "code" and in_solution:
            inside = False
            for line in src.split("\n"):
                if re.match(r"\s*#\s*BEGIN SOLUTION", line):
                    inside = True
                elif re.match(r"\s*#\s*END SOLUTION", line):
                    inside = False
                elif inside or line.rstrip().endswith("# SOLUTION"):
                    solution.append(line.strip())
                else:
                    public.append(line)
        elif cell["cell_type"] == "code" and in_tests and _is_hidden(src):
            tree = ast.parse(src)
            funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
            lines = src.split("\n") + [ln for f in funcs for ln in ast.unparse(f).split("\n")]
            hidden += [ln.strip() for ln in lines if "TEST CONFIG" not in ln
                       and not ln.strip().startswith("hidden:")]
        else:
            public.append(src)
    allowed = _norm("\n".join(public))
    keep = lambda lines: sorted({ln for ln in lines  # noqa: E731
                                 if len(ln) >= 12 and _norm(ln) not in allowed})
    return keep(solution), keep(hidden)


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _texts(folder: Path):
    """(path, text) of every file under ``folder``; JSON decoded, zips opened."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    yield f"{path}:{member}", z.read(member).decode("utf-8", "replace")
            continue
        text = data.decode("utf-8", "replace")
        try:
            text += "\n" + "\n".join(_strings(json.loads(text)))
        except ValueError:
            pass
        yield str(path), text


def test_secrets_are_found():
    """The scanner finds what it looks for (else the leakage test proves nothing)."""
    sol, hid = secrets(tool.masters()["lr"])
    assert "loss = loss + torch.log1p(torch.exp(-logits.abs()))" in sol
    assert any("def test_q1_extreme_logits" in ln for ln in hid)
    assert not any("test_q1_at_zero" in ln for ln in hid)  # public


@pytest.mark.parametrize("name", NAMES)
def test_no_solution_or_hidden_test_in_student_files(graded, name):
    _, out = _get(graded, name)
    student = out / "dist" / name / "student"
    sol, hid = secrets(tool.masters()[name])
    assert sol and hid
    leaks = []
    for path, text in _texts(student):
        flat = _norm(text)
        leaks += [f"{Path(path).name}: solution line {ln!r}" for ln in sol
                  if _norm(ln) in flat]
        leaks += [f"{Path(path).name}: hidden test line {ln!r}" for ln in hid
                  if _norm(ln) in flat]
    assert not leaks, "\n".join(leaks[:20])


# ----------------------------------------------------------------------------- teachers' page

def test_teachers_page_lists_every_assignment():
    page = (ROOT / "chapters" / "teachers.md").read_text(encoding="utf-8")
    assert tool.table() in page, (
        "chapters/teachers.md is out of date: run `python tools/assignments.py table "
        "--write`")


if __name__ == "__main__":  # the worker: python tests/test_assignments.py NAME OUTDIR
    worker(sys.argv[1], Path(sys.argv[2]))
