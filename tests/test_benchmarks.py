"""The benchmark scripts run and write what they say (speed itself is never tested).

Both run here on a few thousand rows, with ``ctr_src`` and the hand-written loop only (the
peer libraries are not part of the book's environment; ``make bench-peers`` installs
them). What is checked: the results file, its structure, that every library trained
(AUC above chance on the planted/real signal is not asked of two tiny epochs), that the
memory probe reports a peak at least the resident set it started from, and that the
ratios are computed from the medians they claim.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=300):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.usefixtures("ctr")
def test_peers_benchmark_writes_medians_ratios_and_memory(tmp_path):
    out = tmp_path / "peers.json"
    proc = _run("benchmarks/peers.py", "--models", "fm", "--libraries", "ctr_src",
                "minimal", "--epochs", "3", "--seeds", "2", "--rows", "3000",
                "--threads", "1", "--check-cost", "--out", out)
    assert "ctr_src" in proc.stdout and "minimal" in proc.stdout
    result = json.loads(out.read_text())
    rows = result["models"]["fm"]
    assert set(rows) == {"ctr_src", "ctr_src, checks every batch", "minimal"}
    raw = result["raw"]["fm"]
    for lib, r in rows.items():
        secs = raw[lib]["seconds"]
        assert len(secs) == 2 * 2  # (epochs - 1 warm-up) x seeds
        assert r["median_s"] == pytest.approx(statistics.median(secs))
        assert r["samples_per_s"] == pytest.approx(3000 / r["median_s"])
        assert len(r["auc"]) == 2 and all(0 <= a <= 1 for a in r["auc"])
        mem = r["memory"]
        assert mem["peak_rss_mb"] >= mem["rss_before_mb"] > 0
    ratio = rows["minimal"]["ratio"]
    assert ratio == pytest.approx(rows["minimal"]["median_s"] / rows["ctr_src"]["median_s"])
    assert rows["minimal"]["target"] == pytest.approx(1 / 1.1)
    assert result["settings"]["batch_size"] == 1024
    assert result["environment"]["threads"] == 1


def test_peers_benchmark_refuses_bad_arguments():
    proc = subprocess.run([sys.executable, "benchmarks/peers.py", "--epochs", "1"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "at least 2" in proc.stderr


def test_gpu_throughput_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run("benchmarks/gpu_throughput.py", "--device", "cpu", "--rows", "6000",
                "--epochs", "2", "--batches", "1024", "--configs", "eager", "bf16",
                "--libraries", "ctr_src", "--out", out)
    assert "no GPU" in proc.stdout
    result = json.loads(out.read_text())
    assert [(r["config"], r["batch"]) for r in result["results"]] == [
        ("eager", 1024), ("bf16", 1024)]
    assert result["rows"] == 5400 and len(result["field_dims"]) == 39
    for r in result["results"]:
        assert r["samples_per_s"] == pytest.approx(5400 / r["seconds"][1])
        assert 0 <= r["valid_auc"] <= 1
