"""The Python inside the chapters' exercise solutions runs.

Every fenced ```python block inside a ``{solution}`` directive, or between
``{solution-start}`` and ``{solution-end}``, is a test case. A block runs in a fresh
namespace holding what the chapters import (torch, numpy, ``ctr_src``'s modules and
loaders) plus the cheap part of its chapter's state: the data set, ``F``, a tensor of
embeddings, and the classes and functions that the chapter's code or an exercise's
statement defines and the block names. A block whose comment says an assertion
``# fails`` must raise AssertionError. A block is skipped, saying why, when it trains
models (minutes each: the chapters and the stored leaderboard carry those results) or
uses more of the chapter's state than that (the skip names it).
`pytest -rs tests/test_solution_snippets.py` lists what ran and what did not.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINS = re.compile(r"\bexperiments\.run\(|\bfit\(")


def _solution_texts(nb: dict):
    """(label, Markdown text) of every solution of a notebook."""
    span, label = [], None
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for m in re.finditer(r"^(`{3,}|:{3,})\{solution\}\s*(\S*)\n(.*?)^\1\s*$", src,
                             re.M | re.S):
            yield m.group(2), m.group(3)
        start = re.search(r"\{solution-start\}\s*(\S*)", src)
        if start:
            label, span = start.group(1), [src[start.end():]]
        elif label is not None:
            span.append(src)
        if label is not None and "{solution-end}" in src:
            yield label, "\n".join(span).split("{solution-end}")[0]
            label, span = None, []


def snippets() -> list:
    out = []
    for path in sorted((ROOT / "chapters").glob("[0-9]*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for label, text in _solution_texts(nb):
            blocks = re.findall(r"^(`{3,})python\n(.*?)^\1\s*$", text, re.M | re.S)
            for k, (_, code) in enumerate(blocks):
                sid = f"{path.stem[:2]}-{label}" + (f"-{k}" if len(blocks) > 1 else "")
                out.append(pytest.param(path.stem, code, id=sid))
    return out


SNIPPETS = snippets()


def free_names(code: str) -> set[str]:
    """Names a block reads without defining them (imports, assignments, functions,
    classes, loop and comprehension variables count as definitions)."""
    tree = ast.parse(code)
    stored, loaded = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
        elif isinstance(node, ast.ClassDef):
            stored.add(node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stored.add(node.name)
            stored.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            stored.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Lambda):
            stored.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
    return loaded - stored


def common_namespace() -> dict:
    import numpy as np
    import torch
    import torch.nn as nn

    from ctr_src import experiments, layers, metrics, models
    from ctr_src.data import load_ctr, load_movielens
    from ctr_src.data.sequences import load_din
    from ctr_src.utils import seed_everything
    return dict(np=np, torch=torch, nn=nn, experiments=experiments, layers=layers,
                metrics=metrics, models=models, load_ctr=load_ctr,
                load_movielens=load_movielens, load_din=load_din,
                seed_everything=seed_everything)


@pytest.fixture(scope="module")
def chapter_state(ctr):
    """Per chapter, the cheap part of its state (built on first use)."""
    import torch
    cache: dict = {}

    def get(stem: str) -> dict:
        if stem not in cache:
            ns = common_namespace()
            if stem.startswith(("02", "03", "05")):
                ns.update(data=ctr, F=len(ctr.field_dims))
            if stem.startswith("05"):
                g = torch.Generator().manual_seed(5)
                ns["f"] = torch.randn(6, ns["F"], 16, generator=g, dtype=torch.float64)
            if stem.startswith("07"):
                from ctr_src.data.sequences import load_din
                data = load_din(max_len=20)
                ns.update(data=data, batch=data.train.batch(slice(0, 32)))
            cache[stem] = ns
        return dict(cache[stem])

    return get


def chapter_definitions(stem: str, names: set[str], ns: dict) -> dict:
    """The functions and classes called ``names`` that the chapter's own code cells
    define (only those statements run, not the cells around them)."""
    if not names:
        return {}
    nb = json.loads((ROOT / "chapters" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    sources = []
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code":
            sources.append(src)
        elif cell["cell_type"] == "markdown":  # code shown in an exercise's statement
            sources += re.findall(r"^```python\n(.*?)^```\s*$", src, re.M | re.S)
    found, scope = {}, dict(ns)
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:  # IPython magics
            continue
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in names:
                exec(compile(ast.Module([node], []), f"<{stem}>", "exec"), scope)  # noqa: S102
                found[node.name] = scope[node.name]
    return found


def test_every_solution_block_is_found():
    """The collector sees the blocks in one-cell solutions and in multi-cell spans."""
    ids = {p.id for p in SNIPPETS}
    assert len(SNIPPETS) >= 15, sorted(ids)
    assert "03-ex-fm-degree3" in ids and "05-pnn-ex-fnn" in ids, sorted(ids)


@pytest.mark.parametrize("stem,code", SNIPPETS)
def test_solution_block_runs(stem, code, chapter_state):
    if TRAINS.search(code):
        pytest.skip("trains models (minutes); its results are the chapter's and the "
                    "stored leaderboard's")
    ns = chapter_state(stem)
    ns.update(chapter_definitions(stem, free_names(code) - set(ns), ns))
    missing = sorted(free_names(code) - set(ns))
    if missing:
        pytest.skip(f"uses the chapter's state: {', '.join(missing)}")
    compiled = compile(code, f"<{stem} solution>", "exec")
    if re.search(r"#\s*fails\b", code):  # a check the solution says must fail
        with pytest.raises(AssertionError):
            exec(compiled, ns)  # noqa: S102
    else:
        exec(compiled, ns)  # noqa: S102
