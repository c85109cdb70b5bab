#!/usr/bin/env python3
"""Stop early, with a clear message, on a Python that requirements.txt cannot install into.

The Makefile runs `$(PYTHON) tools/check_python.py` before it creates .venv. It exits 0
silently when the interpreter it runs under is inside pyproject.toml's `requires-python`
(the one place the supported range is written down) and 1 with an explanation otherwise.

It must be able to say so on exactly the Pythons it rejects, so it uses the standard
library only and old syntax only (no f-strings, annotations, walrus or match; no tomllib).

For tests, CTR_CHECK_PYTHON_VERSION=3.9.18 pretends to be that version.
"""
from __future__ import print_function

import io
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROJECT = os.path.join(ROOT, "pyproject.toml")
PRETEND_VAR = "CTR_CHECK_PYTHON_VERSION"

_CLAUSE = re.compile(r"^(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)(\.\*)?$")


def read_requires_python(path=PYPROJECT):
    """The `requires-python` string of pyproject.toml's [project] table."""
    with io.open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r'^requires-python\s*=\s*"([^"]*)"', text, re.MULTILINE)
    if not m:
        raise ValueError("no requires-python line in " + path)
    return m.group(1)


def parse_version(text):
    """'3.11.2' -> (3, 11, 2); '3.12' -> (3, 12)."""
    return tuple(int(part) for part in text.strip().split("."))


def parse_spec(spec):
    """'>=3.10,<3.15' -> [('>=', (3, 10), False), ('<', (3, 15), False)].

    Numeric clauses only (what requires-python uses); the flag marks a trailing '.*'.
    """
    clauses = []
    for raw in spec.split(","):
        m = _CLAUSE.match(raw.strip())
        if not m or (m.group(3) and m.group(1) not in ("==", "!=")):
            raise ValueError("cannot read requires-python clause %r in %r" % (raw.strip(), spec))
        clauses.append((m.group(1), parse_version(m.group(2)), bool(m.group(3))))
    return clauses


def _pad(v, n):
    return tuple(v) + (0,) * (n - len(v))


def satisfies(version, spec):
    """Whether a version tuple meets every clause of `spec` (PEP 440 for plain releases)."""
    for op, bound, prefix in parse_spec(spec):
        if prefix:  # '==3.11.*' / '!=3.11.*'
            same = tuple(_pad(version, len(bound))[: len(bound)]) == tuple(bound)
            ok = same if op == "==" else not same
        else:
            n = max(len(version), len(bound))
            a, b = _pad(version, n), _pad(bound, n)
            ok = {
                ">=": a >= b,
                "<=": a <= b,
                ">": a > b,
                "<": a < b,
                "==": a == b,
                "!=": a != b,
            }[op]
        if not ok:
            return False
    return True


def supported_minors(spec, lowest=(3, 0), highest=(3, 30)):
    """The 3.x minor versions whose .0 release is inside `spec`: [(3, 10), ..., (3, 14)]."""
    return [(3, minor) for minor in range(lowest[1], highest[1] + 1) if satisfies((3, minor, 0), spec)]


def describe(spec):
    """'>=3.10,<3.15' -> 'Python 3.10 to 3.14' (falls back to the raw spec)."""
    minors = supported_minors(spec)
    if not minors:
        return "Python " + spec
    first, last = minors[0], minors[-1]
    return "Python %d.%d to %d.%d" % (first + last)


def message(version, executable, spec):
    """The explanation printed for an unsupported interpreter."""
    found = ".".join(str(x) for x in version)
    minors = supported_minors(spec)
    pick = (3, 12) if (3, 12) in minors else (minors[-1] if minors else (3, 12))
    ver = "%d.%d" % pick
    exe = "python" + ver
    lines = [
        "",
        "This book needs %s (requires-python \"%s\" in pyproject.toml)," % (describe(spec), spec),
        "but found Python %s at %s." % (found, executable),
        "",
        "requirements.txt pins torch==2.13.0 and friends, which have no wheels outside that",
        "range, so the install would stop with a resolver error. Use a supported Python:",
        "",
        "  * one you already have:  make PYTHON=%s book      (or: make PYTHON=%s test)" % (exe, exe),
        "  * Debian / Ubuntu:       sudo apt install %s %s-venv" % (exe, exe),
        "      (Debian 12's python3.11 and Ubuntu 22.04's python3.10 are supported too; for a version",
        "      your Ubuntu lacks, add the deadsnakes PPA: sudo add-apt-repository ppa:deadsnakes/ppa)",
        "  * pyenv:                 pyenv install %s && make PYTHON=\"$(pyenv root)/versions/%s.N/bin/python\" book"
        % (ver, ver),
        "      (N: the patch release pyenv installed; `pyenv versions` lists it)",
        "  * uv:                    uv python install %s && make PYTHON=\"$(uv python find %s)\" book" % (ver, ver),
        "",
        "If .venv was already made with an unsupported Python, remove it first: rm -rf .venv",
        "",
    ]
    return "\n".join(lines)


def check(version, executable, spec):
    """(ok, message): message is '' when the version is supported."""
    if satisfies(version, spec):
        return True, ""
    return False, message(version, executable, spec)


def current_version(environ=None):
    environ = os.environ if environ is None else environ
    pretend = environ.get(PRETEND_VAR, "").strip()
    if pretend:
        return parse_version(pretend)
    return tuple(sys.version_info[:3])


def main():
    spec = read_requires_python()
    ok, text = check(current_version(), sys.executable or "(unknown path)", spec)
    if not ok:
        sys.stderr.write(text + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
