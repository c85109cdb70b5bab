"""Build the student edition of the book: every exercise solution removed.

    python tools/student_edition.py [OUT]        (default OUT: _build/student)

copies the book's sources into OUT/source with every solution stripped -- the
``{solution}`` directives of the Markdown cells and pages, and each
``{solution-start}`` ... ``{solution-end}`` span, including the code and Markdown cells
between the two -- sets sphinx-exercise's ``hide_solutions`` as a second safeguard,
switches the launch buttons off (they would open the repository's notebooks, which
carry the solutions), and builds it with ``jupyter-book build -W -n --keep-going``
into OUT/html. The HTML pages and the notebooks their download button serves are both
made from the stripped copy, so neither holds a solution. Offline, like ``make book``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# what the book build reads (see _config.yml: local extension in tools/, bibliography)
SOURCES = ["_config.yml", "_toc.yml", "references.bib", "chapters", "tools/sphinx_fixes.py"]

_OPEN = re.compile(r"^(\s*)(`{3,}|:{3,})\{(solution|solution-start|solution-end)\}")


def _closes(line: str, fence: str) -> bool:
    s = line.strip()
    return len(s) >= len(fence) and set(s) == {fence[0]}


def strip_markdown(text: str, in_span: bool = False) -> tuple[str, bool]:
    """``text`` without its solutions; ``in_span`` says whether the text starts inside a
    ``{solution-start}`` ... ``{solution-end}`` span, and the second value whether it ends
    inside one."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if m:
            fence, kind = m.group(2), m.group(3)
            j = i + 1
            while j < len(lines) and not _closes(lines[j], fence):
                j += 1
            i = j + 1  # past the directive's closing fence
            if kind == "solution-start":
                in_span = True
            elif kind == "solution-end":
                in_span = False
            continue
        if not in_span:
            out.append(lines[i])
        i += 1
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text, in_span


def strip_notebook(nb: dict) -> dict:
    """A copy of a notebook with no solution: directives removed from Markdown cells,
    every cell inside a ``{solution-start}``/``{solution-end}`` span dropped."""
    nb = json.loads(json.dumps(nb))
    cells, in_span = [], False
    for cell in nb["cells"]:
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            text, in_span = strip_markdown(src, in_span)
            if text.strip():
                cell["source"] = text
                cells.append(cell)
        elif not in_span:
            cells.append(cell)
    nb["cells"] = cells
    return nb


def solution_free(text: str) -> bool:
    """No solution directive left in ``text``."""
    return not re.search(r"\{solution(-start|-end)?\}", text)


def prepare(dest: Path) -> Path:
    """The stripped copy of the book's sources in ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    for name in SOURCES:
        src, dst = ROOT / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                ".ipynb_checkpoints", "__pycache__", "reference_values"))
        else:
            shutil.copy2(src, dst)
    for path in (dest / "chapters").rglob("*"):
        if path.suffix == ".ipynb":
            nb = strip_notebook(json.loads(path.read_text(encoding="utf-8")))
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
        elif path.suffix == ".md":
            path.write_text(strip_markdown(path.read_text(encoding="utf-8"))[0] + "\n",
                            encoding="utf-8")
    config_path = dest / "_config.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["title"] = f"{config['title']} (student edition)"
    config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    config["launch_buttons"] = {"notebook_interface": "jupyterlab",
                                "binderhub_url": "", "colab_url": ""}
    config_path.write_text("# Written by tools/student_edition.py from ../_config.yml\n"
                           + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return dest


def build(out: Path) -> subprocess.CompletedProcess:
    """Prepare ``out/source`` and build it into ``out/html``."""
    out = Path(out).resolve()
    source = prepare(out / "source")
    bindir = Path(sys.executable).parent
    exe = bindir / "jupyter-book"
    env = dict(os.environ, PATH=str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([str(exe if exe.exists() else "jupyter-book"), "build",
                           str(source), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, env=env, timeout=1800)
    html = out / "html"
    shutil.rmtree(html, ignore_errors=True)
    if (source / "_build" / "html").is_dir():
        shutil.move(str(source / "_build" / "html"), str(html))
    return proc


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "_build" / "student"
    proc = build(out)
    sys.stdout.write(proc.stdout[-4000:])
    sys.stderr.write(proc.stderr[-8000:])
    if proc.returncode:
        print(f"the student edition did not build cleanly (exit {proc.returncode})",
              file=sys.stderr)
        return proc.returncode
    print(f"\nThe student edition is built. Open: {out / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
