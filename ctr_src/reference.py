"""Recorded reference values for the numbers that come out of training.

A chapter's outputs are of two kinds (README, "Outputs that hold on every machine"):

* **exact by construction** (identities, float64 checks, shapes, counts, data
  statistics): nbval compares them digit by digit;
* **trained** (metrics, losses, learned weights and what derives from them):
  float32 training follows another path on every CPU instruction set, BLAS,
  thread count and device, so their cells carry the nbval tag
  ``nbval-ignore-output`` and check their numbers here instead, against the
  values recorded when the chapter was last executed (``make execute``),
  within a tolerance of their *kind*.

Use in a chapter::

    from ctr_src.reference import Reference
    ref = Reference("05_pnn")
    ref.check({"ipnn_auc": r.test["auc"]}, kind="auc")

``check`` also *glues* every value (MyST-NB), so the prose quotes it as
``{glue:text}`ipnn_auc:.3f``` and can never disagree with the output.

Modes, chosen by the environment:

* default -- **check**: a value outside ``recorded ± tolerance`` raises an
  ``AssertionError`` that names the value, the reference and the fix;
* ``CTR_RECORD=1`` -- **record** (set by ``make execute``): write the value
  into ``chapters/reference_values/<chapter>.json``;
* ``CTR_COLLECT=<file.jsonl>`` -- **collect** (``tools/measure_spread.py``):
  append the value to a file and check nothing.

The tolerances (:data:`TOLERANCES`) are written down once, here. They are not
guessed: ``tools/measure_spread.py`` re-runs every chapter with five training
seeds and with other CPU kernels and thread counts, and stores every checked
value in ``results/spread.json``; a unit test fails unless each tolerance
covers four standard deviations over seeds and 1.5 times the largest
deviation another kernel produced.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

__all__ = ["Reference", "TOLERANCES", "Tolerance", "book_seed", "reference_dir"]

#: The seed of every training run in the book; ``CTR_SEED`` overrides it so
#: that ``tools/measure_spread.py`` can measure the spread over seeds.
BOOK_SEED = 2024


def book_seed() -> int:
    """The training seed: ``$CTR_SEED`` if set, else :data:`BOOK_SEED` (2024)."""
    raw = os.environ.get("CTR_SEED")
    if raw is None or raw == "":
        return BOOK_SEED
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"CTR_SEED must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class Tolerance:
    """``|value - recorded| <= absolute + relative * |recorded|``."""

    absolute: float
    relative: float = 0.0
    what: str = ""

    def bound(self, recorded: float) -> float:
        return self.absolute + self.relative * abs(recorded)


#: One tolerance per kind of trained number. See the module docstring for how
#: they are justified; ``results/spread.json`` holds the measurements.
TOLERANCES: dict[str, Tolerance] = {
    # measured (results/spread.json, 5 seeds + no-SIMD kernels): largest seed sd of a test
    # AUC 0.0053 (Wide & Deep, chapter 6), largest kernel move 0.0103 (DIN's base model,
    # chapter 7)
    "auc": Tolerance(0.025, what="an AUC or GAUC of a trained model (test or validation)"),
    # largest seed sd 0.0059 (Wide & Deep, chapter 6), kernel move 0.0178 (DIN's base
    # model, chapter 7, on one thread without SIMD)
    "logloss": Tolerance(0.03, what="a logloss (test, validation or training loss)"),
    # largest seed sd 0.0164 (IPNN: AUC drop when all products are shuffled)
    "auc_change": Tolerance(0.07, what="a difference of two AUCs (an ablation, a drop)"),
    # no chapter checks one since RelaImpr is computed from the leaderboard (earlier largest
    # seed sd 1.12 points, RelaImpr of DIN with Dice)
    "percent": Tolerance(5.0, what="a relative improvement (RelaImpr), in percentage points"),
    # largest seed sd 2.96 points (DIN: share of the variance of g due to the interaction)
    "share": Tolerance(17.0, what="a share of variance or of attention, in percentage points"),
    # largest seed sd 0.0187 (PNN toy MLP, R^2 at twice the training scale)
    "r2": Tolerance(0.08, what="an R^2 of a model fitted by gradient descent"),
    # largest relative seed sd 0.22 (AFM: the largest attention weight on one impression)
    "statistic": Tolerance(0.0, 0.9, what="a positive statistic of learned weights "
                                          "(a mean |term|, a norm, a |correlation|): relative"),
}

_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def reference_dir() -> Path:
    """Where the recorded values live: ``$CTR_REFERENCE_DIR``, else the
    ``reference_values/`` folder next to the chapters of this checkout."""
    env = os.environ.get("CTR_REFERENCE_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    return repo / "chapters" / "reference_values"


def _mode() -> str:
    if os.environ.get("CTR_COLLECT"):
        return "collect"
    if os.environ.get("CTR_RECORD", "") not in ("", "0"):
        return "record"
    return "check"


def _glue(key: str, value) -> None:
    try:  # MyST-NB is part of the book's toolchain, not of ctr_src's dependencies
        from myst_nb import glue
    except ImportError:  # pragma: no cover - outside the book's environment
        return
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    if get_ipython() is not None:  # only inside a kernel; plain Python has no outputs
        glue(key, value, display=False)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Reference:
    """The recorded trained values of one chapter (``chapters/reference_values/<chapter>.json``)."""

    def __init__(self, chapter: str, directory: str | Path | None = None):
        if not re.match(r"^[A-Za-z0-9_]+$", chapter):
            raise ValueError(f"chapter must be a file stem like '05_pnn', got {chapter!r}")
        self.chapter = chapter
        self.path = Path(directory or reference_dir()) / f"{chapter}.json"

    # ------------------------------------------------------------------ storage
    def load(self) -> dict[str, dict]:
        """``{key: {"value": float, "kind": str}}`` as recorded; ``{}`` if none is."""
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path} is not valid JSON ({exc}); re-record it with "
                             f"`make execute`") from None
        return data.get("values", {})

    def _record(self, items: dict[str, tuple[float, str]]) -> None:
        values = self.load()
        for key, (value, kind) in items.items():
            values[key] = {"value": value, "kind": kind}
        text = json.dumps({"chapter": self.chapter, "values": dict(sorted(values.items()))},
                          indent=1) + "\n"
        _atomic_write(self.path, text)

    # ------------------------------------------------------------------ checking
    def check(self, values: Mapping[str, float], kind: str) -> None:
        """Check (or record, or collect) trained ``values`` of one ``kind``; glue each.

        ``values`` maps a key (a Python identifier, used as the glue name) to a
        finite number. Raises ``AssertionError`` in check mode when a value lies
        outside its recorded value ± the kind's tolerance, or was never recorded.
        """
        if kind not in TOLERANCES:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(TOLERANCES)}")
        items: dict[str, float] = {}
        for key, value in values.items():
            if not _KEY.match(key):
                raise ValueError(f"reference key {key!r} must be an identifier "
                                 f"(letters, digits, '_'; it is also the glue name)")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"{key}: expected a number, got {type(value).__name__}") from None
            if not math.isfinite(value):
                raise AssertionError(f"{self.chapter}: {key} = {value} is not finite: "
                                     f"the training run diverged or the model is broken")
            items[key] = value
        mode = _mode()
        if mode == "collect":
            with open(os.environ["CTR_COLLECT"], "a", encoding="utf-8") as fh:
                for key, value in items.items():
                    fh.write(json.dumps({"chapter": self.chapter, "key": key, "kind": kind,
                                         "value": value}) + "\n")
        elif mode == "record":
            self._record({k: (v, kind) for k, v in items.items()})
        else:
            self._compare(items, kind)
        for key, value in items.items():
            _glue(key, value)

    def _compare(self, items: dict[str, float], kind: str) -> None:
        recorded = self.load()
        tol = TOLERANCES[kind]
        problems = []
        for key, value in items.items():
            if key not in recorded:
                problems.append(f"{key} = {value:.6g} has no recorded value in {self.path.name}")
                continue
            ref = recorded[key]
            if ref.get("kind") != kind:
                problems.append(f"{key} was recorded as kind {ref.get('kind')!r}, "
                                f"checked as {kind!r}")
                continue
            bound = tol.bound(ref["value"])
            if not abs(value - ref["value"]) <= bound:
                problems.append(f"{key} = {value:.6g}, recorded {ref['value']:.6g} "
                                f"± {bound:.3g} ({kind}: {tol.what})")
        if problems:
            raise AssertionError(
                f"chapter {self.chapter}: trained values differ from the recorded run by more "
                f"than seeds and CPU kernels move them:\n  " + "\n  ".join(problems)
                + "\nIf ctr_src or the chapter changed on purpose, re-execute and re-record "
                  "with `make execute`; otherwise a model is broken.")
