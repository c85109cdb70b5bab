"""Turn a plain-text chapter draft into a notebook (an authoring aid).

The notebook in ``chapters/`` is the source of truth once it exists; this script only
helps write a new chapter in a text editor. A draft is a text file whose cells start
with a line ``%% md`` (Markdown) or ``%% code`` (Python); a line ``%% code nbval-ignore``
starts a code cell tagged ``nbval-ignore-output`` (cell metadata, invisible on the page:
its trained numbers are checked by :mod:`ctr_src.reference` instead).

Usage: ``python tools/nbsrc.py draft.txt chapters/NN_name.ipynb`` then
``python tools/execute.py chapters/NN_name.ipynb``.
"""

from __future__ import annotations

import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def parse(text: str):
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "md":
            cells.append(new_markdown_cell(body))
        else:
            cell = new_code_cell(body)
            if kind == "ignore":
                cell.metadata["tags"] = ["nbval-ignore-output"]
            cells.append(cell)

    for line in text.splitlines():
        if line.startswith("%% "):
            flush()
            tag = line[3:].strip()
            kind = {"md": "md", "code": "code", "code nbval-ignore": "ignore"}.get(tag)
            if kind is None:
                raise ValueError(f"unknown cell marker {line!r}")
            lines = []
        else:
            lines.append(line)
    flush()
    return cells


def main(src: str, dst: str) -> None:
    nb = new_notebook(cells=parse(open(src, encoding="utf-8").read()))
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
        cell["id"] = f"cell-{i:03d}"
    nbformat.validate(nb)
    nbformat.write(nb, dst)


if __name__ == "__main__":
    main(*sys.argv[1:3])
