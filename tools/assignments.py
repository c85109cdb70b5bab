"""Build and grade the classroom assignments (otter-grader, offline, no Docker).

    python tools/assignments.py build [NAME ...]
        otter assign every assignments/<name>/<name>.ipynb (or only NAME ...) into
        dist/<name>/student/ (the notebook to hand out) and dist/<name>/autograder/
        (the solution notebook and <name>-autograder.zip, every test, hidden ones included).

    python tools/assignments.py grade FOLDER [--assignment NAME] [--csv FILE]
        grade every .ipynb under FOLDER with `otter run` (the local, non-containerised
        grader) and write one row per submission to FILE (default FOLDER/grades.csv):
        submission, assignment, one column per question, total, possible, error.
        Each notebook's assignment is read from its metadata (otter writes it into the
        student notebook); --assignment NAME grades every notebook with NAME's autograder.

    python tools/assignments.py table [--write]
        print (or write into chapters/teachers.md) the Markdown table of every assignment (chapter, covers, points, time),
        read from the intro cell of each master notebook (chapters/teachers.md includes it).

Everything runs offline: the tests and ctr_src are already installed in the venv.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "assignments"
DIST = ROOT / "dist"
INTRO_KEYS = ("Chapter", "Covers", "Time", "Points")
# chapters/teachers.md: the table between these lines is written by `table --write`
TABLE_MARKERS = ("<!-- assignments table: python tools/assignments.py table --write -->",
                 "<!-- end of assignments table -->")


# ----------------------------------------------------------------------------- reading

def masters() -> dict[str, Path]:
    """``{name: assignments/<name>/<name>.ipynb}`` for every assignment folder."""
    return {p.parent.name: p for p in sorted(SOURCES.glob("*/*.ipynb"))
            if p.stem == p.parent.name}


def _source(cell) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def read_intro(master: Path) -> dict[str, str]:
    """The title and the ``**Chapter:**``, ``**Covers:**``, ``**Time:**``,
    ``**Points:**`` lines of the first Markdown cell."""
    nb = json.loads(master.read_text(encoding="utf-8"))
    md = next(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    title = re.search(r"^#\s+(?:Assignment:\s*)?(.+)$", md, re.M)
    info = {"title": title.group(1).strip() if title else master.stem}
    for key in INTRO_KEYS:
        # a value runs to the next blank line (it may wrap)
        m = re.search(rf"^\*\*{key}:\*\*\s*(.+?)(?:\n\s*\n|\Z)", md, re.M | re.S)
        info[key.lower()] = " ".join(m.group(1).split()) if m else ""
    return info


def question_points(master: Path) -> dict[str, float]:
    """``{question name: total points}`` from the ``# BEGIN QUESTION`` raw cells."""
    import yaml
    nb = json.loads(master.read_text(encoding="utf-8"))
    out = {}
    for cell in nb["cells"]:
        src = _source(cell)
        if cell["cell_type"] == "raw" and re.match(r"#\s+BEGIN\s+QUESTION", src, re.I):
            cfg = yaml.safe_load(src.split("\n", 1)[1]) or {}
            pts = cfg.get("points", 0)
            out[cfg["name"]] = float(sum(pts) if isinstance(pts, list) else pts)
    return out


def table() -> str:
    """The Markdown table of every assignment, for chapters/teachers.md."""
    rows = ["| assignment | chapter | what the student implements | points | time |",
            "|---|---|---|---|---|"]
    def chapter(item):
        m = re.match(r"\d+", read_intro(item[1])["chapter"])
        return (int(m.group()) if m else 99, item[0])

    for name, master in sorted(masters().items(), key=chapter):
        info = read_intro(master)
        rows.append(f"| `{name}`: {info['title']} | {info['chapter']} | {info['covers']} "
                    f"| {info['points']} | {info['time']} |")
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- building

def build(name: str, *, run_tests: bool = True, quiet: bool = False,
          dist: Path = DIST) -> Path:
    """``otter assign`` one master into ``dist/<name>/``; returns the autograder zip
    (renamed to the stable ``dist/<name>/autograder/<name>-autograder.zip``)."""
    from otter.assign import main as assign
    master = masters()[name]
    out = Path(dist) / name
    shutil.rmtree(out, ignore_errors=True)
    sink = io.StringIO()
    with (contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext()):
        assign(str(master), str(out), no_run_tests=not run_tests)
    zips = sorted((out / "autograder").glob(f"{name}-autograder_*.zip"))
    if len(zips) != 1:
        raise RuntimeError(f"otter assign wrote {len(zips)} autograder zips for {name}")
    stable = out / "autograder" / f"{name}-autograder.zip"
    zips[0].rename(stable)
    return stable


def autograder_zip(name: str, dist: Path = DIST) -> Path:
    path = Path(dist) / name / "autograder" / f"{name}-autograder.zip"
    if not path.exists():
        raise SystemExit(f"no autograder for {name!r}: run `make assignments` first")
    return path


# ----------------------------------------------------------------------------- grading

def assignment_of(notebook: Path) -> str | None:
    """The assignment name otter stored in a student notebook's metadata."""
    try:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (nb.get("metadata", {}).get("otter", {}) or {}).get("assignment_name")


def grade_one(notebook: Path, name: str, dist: Path = DIST) -> dict:
    """Grade one notebook with ``otter run`` (in-process, no Docker, no network).

    Returns ``{"scores": {question: score}, "possible": {question: max}, "error": str}``.
    A notebook that cannot be read or run scores zero with the error recorded; the
    grader itself never stops the batch.
    """
    from otter.run import main as otter_run
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            results = otter_run(str(notebook), autograder=str(autograder_zip(name, dist)),
                                output_dir=None, no_logo=True)
    except Exception as exc:  # a broken submission must not stop the batch
        return {"scores": {}, "possible": {}, "error": f"{type(exc).__name__}: {exc}"}
    scores = {q: float(tf.score) for q, tf in results.results.items()}
    possible = {q: float(tf.possible) for q, tf in results.results.items()}
    error = results.catastrophic_error
    return {"scores": scores, "possible": possible,
            "error": f"{type(error).__name__}: {error}" if error else ""}


def grade_folder(folder: Path, assignment: str | None = None,
                 csv_path: Path | None = None) -> list[dict]:
    """Grade every ``.ipynb`` under ``folder`` into a CSV; returns the rows."""
    folder = Path(folder)
    notebooks = sorted(p for p in folder.rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts)
    known = masters()
    rows, questions = [], []
    for nb in notebooks:
        name = assignment or assignment_of(nb)
        row = {"submission": str(nb.relative_to(folder)), "assignment": name or ""}
        if name not in known:
            row.update(total=0.0, possible="", error=f"unknown assignment {name!r}")
            rows.append(row)
            continue
        res = grade_one(nb, name)
        for q, s in res["scores"].items():
            row[q] = s
            if q not in questions:
                questions.append(q)
        possible = question_points(known[name])
        row.update(total=sum(res["scores"].values()), possible=sum(possible.values()),
                   error=res["error"])
        rows.append(row)
        print(f"{row['submission']}: {name} {row['total']:g}/{row['possible']:g}"
              + (f" ({row['error']})" if row["error"] else ""), file=sys.stderr)
    if csv_path is None:
        csv_path = folder / "grades.csv"
    fields = ["submission", "assignment", *sorted(questions), "total", "possible", "error"]
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {csv_path} ({len(rows)} submissions)", file=sys.stderr)
    return rows


# ----------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="otter assign every assignment into dist/")
    b.add_argument("names", nargs="*")
    b.add_argument("--no-run-tests", action="store_true",
                   help="skip otter's own run of the tests on the solution")
    g = sub.add_parser("grade", help="grade a folder of submitted notebooks into a CSV")
    g.add_argument("folder", type=Path)
    g.add_argument("--assignment", help="grade every notebook as this assignment")
    g.add_argument("--csv", type=Path, help="output file (default FOLDER/grades.csv)")
    t = sub.add_parser("table", help="print the Markdown table of the assignments")
    t.add_argument("--write", action="store_true",
                   help="update the table in chapters/teachers.md in place")
    args = parser.parse_args(argv)

    if args.command == "build":
        names = args.names or list(masters())
        unknown = sorted(set(names) - set(masters()))
        if unknown:
            parser.error(f"unknown assignment(s) {unknown}; known: {sorted(masters())}")
        for name in names:
            print(f"== otter assign {name}", file=sys.stderr)
            zip_path = build(name, run_tests=not args.no_run_tests)
            print(f"   student:    {(DIST / name / 'student').relative_to(ROOT)}/\n"
                  f"   autograder: {zip_path.relative_to(ROOT)}", file=sys.stderr)
    elif args.command == "grade":
        if not args.folder.is_dir():
            parser.error(f"{args.folder} is not a folder")
        if args.assignment and args.assignment not in masters():
            parser.error(f"unknown assignment {args.assignment!r}")
        grade_folder(args.folder, args.assignment, args.csv)
    elif args.write:
        page = ROOT / "chapters" / "teachers.md"
        text = page.read_text(encoding="utf-8")
        start, end = TABLE_MARKERS
        i, j = text.index(start) + len(start), text.index(end)
        page.write_text(text[:i] + "\n" + table() + text[j:], encoding="utf-8")
        print(f"updated {page.relative_to(ROOT)}", file=sys.stderr)
    else:
        sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
