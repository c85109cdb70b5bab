"""The recorded-values mechanism (``ctr_src.reference``) and the justification of its
tolerances by the measured spread in ``results/spread.json``."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from ctr_src import reference
from ctr_src.reference import TOLERANCES, Reference, book_seed

ROOT = Path(__file__).resolve().parents[1]
SPREAD = ROOT / "results" / "spread.json"
#: a tolerance must cover this many standard deviations over seeds ...
SEED_SDS = 4.0
#: ... and this multiple of the largest deviation another CPU kernel produced
KERNEL_FACTOR = 1.5


@pytest.fixture
def ref(tmp_path, monkeypatch):
    for var in ("CTR_RECORD", "CTR_COLLECT", "CTR_SEED"):
        monkeypatch.delenv(var, raising=False)
    return Reference("99_test", directory=tmp_path)


def record(monkeypatch, ref, values, kind):
    monkeypatch.setenv("CTR_RECORD", "1")
    ref.check(values, kind=kind)
    monkeypatch.delenv("CTR_RECORD")


def test_record_then_check_within_and_outside_tolerance(ref, monkeypatch):
    record(monkeypatch, ref, {"m_auc": 0.78}, "auc")
    assert json.loads(ref.path.read_text())["values"]["m_auc"] == {"value": 0.78, "kind": "auc"}
    tol = TOLERANCES["auc"].absolute
    ref.check({"m_auc": 0.78 + 0.9 * tol}, kind="auc")
    ref.check({"m_auc": 0.78 - 0.9 * tol}, kind="auc")
    with pytest.raises(AssertionError, match=r"(?s)m_auc = .*recorded 0\.78.*make execute"):
        ref.check({"m_auc": 0.78 + 1.1 * tol}, kind="auc")
    with pytest.raises(AssertionError, match="99_test"):
        ref.check({"m_auc": 0.5}, kind="auc")          # a broken model


def test_relative_tolerance(ref, monkeypatch):
    record(monkeypatch, ref, {"s": 2.0}, "statistic")
    rel = TOLERANCES["statistic"].relative
    assert rel > 0
    ref.check({"s": 2.0 * (1 + 0.9 * rel)}, kind="statistic")
    with pytest.raises(AssertionError):
        ref.check({"s": 2.0 * (1 + 1.1 * rel)}, kind="statistic")


def test_unrecorded_key_wrong_kind_and_nonfinite_fail(ref, monkeypatch):
    record(monkeypatch, ref, {"a": 0.7}, "auc")
    with pytest.raises(AssertionError, match="no recorded value"):
        ref.check({"b": 0.7}, kind="auc")
    with pytest.raises(AssertionError, match="recorded as kind 'auc'"):
        ref.check({"a": 0.7}, kind="logloss")
    with pytest.raises(AssertionError, match="not finite"):
        ref.check({"a": math.nan}, kind="auc")


def test_missing_file_fails_in_check_mode(ref):
    assert not ref.path.exists()
    with pytest.raises(AssertionError, match="no recorded value"):
        ref.check({"a": 0.7}, kind="auc")


def test_bad_arguments(ref):
    with pytest.raises(ValueError, match="unknown kind"):
        ref.check({"a": 0.7}, kind="accuracy")
    with pytest.raises(ValueError, match="identifier"):
        ref.check({"test AUC": 0.7}, kind="auc")
    with pytest.raises(TypeError, match="expected a number"):
        ref.check({"a": "0.7x"}, kind="auc")
    with pytest.raises(ValueError, match="file stem"):
        Reference("../etc")


def test_corrupt_file_names_the_fix(ref):
    ref.path.write_text("{not json")
    with pytest.raises(ValueError, match="make execute"):
        ref.check({"a": 0.7}, kind="auc")


def test_record_merges_and_is_atomic(ref, monkeypatch):
    record(monkeypatch, ref, {"a": 0.7}, "auc")
    record(monkeypatch, ref, {"b": 0.5}, "logloss")
    assert set(ref.load()) == {"a", "b"}
    assert [p.name for p in ref.path.parent.iterdir()] == [ref.path.name]   # no temp files


def test_collect_mode_appends_and_checks_nothing(ref, monkeypatch, tmp_path):
    out = tmp_path / "values.jsonl"
    monkeypatch.setenv("CTR_COLLECT", str(out))
    ref.check({"a": 0.1, "b": 0.2}, kind="auc")          # nothing recorded: no error
    ref.check({"c": 0.3}, kind="logloss")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"chapter": "99_test", "key": "a", "kind": "auc", "value": 0.1},
                    {"chapter": "99_test", "key": "b", "kind": "auc", "value": 0.2},
                    {"chapter": "99_test", "key": "c", "kind": "logloss", "value": 0.3}]
    assert not ref.path.exists()


def test_book_seed(monkeypatch):
    monkeypatch.delenv("CTR_SEED", raising=False)
    assert book_seed() == reference.BOOK_SEED == 2024
    monkeypatch.setenv("CTR_SEED", "7")
    assert book_seed() == 7
    monkeypatch.setenv("CTR_SEED", "seven")
    with pytest.raises(ValueError, match="CTR_SEED"):
        book_seed()


# ------------------------------------------------------------ the recorded chapters

RECORDED = sorted((ROOT / "chapters" / "reference_values").glob("*.json"))


def test_every_recorded_chapter_exists_and_uses_known_kinds():
    assert RECORDED, "no recorded values: run `make execute`"
    for path in RECORDED:
        assert (ROOT / "chapters" / f"{path.stem}.ipynb").exists(), path.name
        for key, entry in json.loads(path.read_text())["values"].items():
            assert entry["kind"] in TOLERANCES, (path.name, key)
            assert math.isfinite(entry["value"]), (path.name, key)


# ------------------------------------------------------------ tolerances vs. spread

def spread() -> dict:
    assert SPREAD.exists(), "results/spread.json is missing: run `make spread`"
    return json.loads(SPREAD.read_text())


def test_spread_covers_every_recorded_value():
    """Every value a chapter checks was measured under every configuration."""
    data = spread()
    configs = data["seed_configs"] + [data["kernel_baseline"]] + data["kernel_configs"]
    for path in RECORDED:
        measured = data["chapters"].get(path.stem, {})
        for key in json.loads(path.read_text())["values"]:
            assert key in measured, f"{path.stem}/{key} was never measured: make spread"
            missing = [c for c in configs if c not in measured[key]["values"]]
            assert not missing, f"{path.stem}/{key} not measured under {missing}"


def worst_spread() -> dict[str, dict[str, tuple[float, str]]]:
    """Per kind: the largest seed sd and kernel deviation (absolute, or relative for
    kinds with a relative tolerance), and where it occurred."""
    data = spread()
    worst: dict[str, dict[str, tuple[float, str]]] = {}
    for chapter, keys in data["chapters"].items():
        for key, entry in keys.items():
            kind, values = entry["kind"], entry["values"]
            tol = TOLERANCES[kind]
            base = values[data["kernel_baseline"]]
            scale = abs(base) if tol.relative else 1.0
            seeds = [values[c] for c in data["seed_configs"] if c in values]
            sd = statistics.stdev(seeds) / scale if len(seeds) > 1 else 0.0
            dev = max((abs(values[c] - base) / scale for c in data["kernel_configs"]
                       if c in values), default=0.0)
            w = worst.setdefault(kind, {"sd": (0.0, ""), "dev": (0.0, "")})
            where = f"{chapter}/{key}"
            if sd > w["sd"][0]:
                w["sd"] = (sd, where)
            if dev > w["dev"][0]:
                w["dev"] = (dev, where)
    return worst


@pytest.mark.parametrize("kind", sorted(TOLERANCES))
def test_tolerance_covers_measured_spread(kind):
    tol = TOLERANCES[kind]
    allowed = tol.relative if tol.relative else tol.absolute
    w = worst_spread().get(kind)
    if w is None:
        pytest.skip(f"no chapter checks a value of kind {kind!r}")
    (sd, sd_at), (dev, dev_at) = w["sd"], w["dev"]
    assert allowed >= SEED_SDS * sd, (
        f"{kind}: tolerance {allowed} < {SEED_SDS} x seed sd {sd:.4g} (at {sd_at})")
    assert allowed >= KERNEL_FACTOR * dev, (
        f"{kind}: tolerance {allowed} < {KERNEL_FACTOR} x kernel deviation {dev:.4g} "
        f"(at {dev_at})")


def test_every_measured_run_would_pass_its_checks():
    """Each value, under every seed and kernel measured, lies within the tolerance of the
    recorded value: the chapters pass for those seeds and machines, not only for ours."""
    data = spread()
    outside = []
    for chapter, keys in data["chapters"].items():
        for key, entry in keys.items():
            base = entry["values"][data["kernel_baseline"]]
            bound = TOLERANCES[entry["kind"]].bound(base)
            outside += [f"{chapter}/{key} under {config}: {value:.4g} vs {base:.4g} ± {bound:.3g}"
                        for config, value in entry["values"].items()
                        if abs(value - base) > bound]
    assert not outside, "\n".join(outside)
