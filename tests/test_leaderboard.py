"""The protocol and the stored leaderboard (results/leaderboard.json).

The file is checked for what the protocol promises (every entry searched on the same grid,
five seeds, no best epoch at the cap, summaries and verdicts consistent with the runs),
and a subset is re-trained so the stored table cannot drift from the code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctr_src import experiments as ex
from ctr_src import metrics, models
from ctr_src.data import TensorData
from ctr_src.reference import TOLERANCES


@pytest.fixture(scope="module")
def board():
    return ex.Leaderboard.load()


# ----------------------------------------------------------------------------- the counting baseline

def test_mean_baseline_counts_shrunk_rates():
    fields = torch.tensor([[0, 0], [0, 1], [1, 1], [1, 1], [2, 0]])
    label = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    m = models.MeanBaseline.from_counts([3, 2], TensorData(fields=fields, label=label),
                                        user_field=0, item_field=1, prior=2.0)
    r = 3 / 5
    logit = lambda p: np.log(p / (1 - p))
    user_rates = [(1 + 2 * r) / (2 + 2), (2 + 2 * r) / (2 + 2), (0 + 2 * r) / (1 + 2)]
    item_rates = [(1 + 2 * r) / (2 + 2), (2 + 2 * r) / (3 + 2)]
    out = m({"fields": fields}).double().numpy()
    expected = [logit(user_rates[u]) + logit(item_rates[i]) - logit(r) for u, i in fields.tolist()]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert sum(p.numel() for p in m.parameters()) == 0
    # a huge prior shrinks every rate to the average: the constant model
    flat = models.MeanBaseline.from_counts([3, 2], TensorData(fields=fields, label=label),
                                           prior=1e9)
    np.testing.assert_allclose(flat({"fields": fields}).numpy(), logit(r), atol=1e-5)


def test_mean_baseline_rejects_bad_settings():
    with pytest.raises(ValueError, match="prior"):
        models.MeanBaseline([3, 2], prior=0)
    with pytest.raises(ValueError, match="differ"):
        models.MeanBaseline([3, 2], user_field=1, item_field=1)
    with pytest.raises(ValueError, match="field position"):
        models.MeanBaseline([3, 2], item_field=2)


# ----------------------------------------------------------------------------- protocol helpers

def test_verdict_needs_both_intervals_to_exclude_zero():
    rng = np.random.default_rng(0)
    base = rng.normal(size=1000)
    clear = ex.paired_intervals([0.80, 0.81, 0.80], [0.78, 0.79, 0.78], base + 0.02, base)
    assert clear["verdict"] == "higher"
    assert ex.paired_intervals([0.78, 0.79, 0.78], [0.80, 0.81, 0.80], base, base + 0.02)[
        "verdict"] == "lower"
    # the seeds agree, but another test sample could reverse it: not supported
    noisy = ex.paired_intervals([0.80, 0.81, 0.80], [0.78, 0.79, 0.78], base + 0.02,
                                base + rng.normal(scale=0.1, size=1000))
    assert noisy["boot_low"] < 0 < noisy["boot_high"] and noisy["verdict"] == "indistinguishable"


def test_choose_takes_the_best_validation_point_on_the_monitored_metric():
    e = ex.entry("din")
    recs = [{"lr": 1e-3, "weight_decay": 0.0, "valid": {"auc": 0.80, "gauc": 0.60}},
            {"lr": 3e-3, "weight_decay": 0.0, "valid": {"auc": 0.70, "gauc": 0.70}}]
    assert e.monitor == "gauc" and ex.choose(e, recs) == {"lr": 3e-3, "weight_decay": 0.0}
    assert ex.choose(ex.entry("fm"), recs) == {"lr": 1e-3, "weight_decay": 0.0}


def test_entries_are_buildable_and_ablations_point_to_tuned_entries():
    assert len({e.key for e in ex.ENTRIES}) == len(ex.ENTRIES)
    for e in ex.ENTRIES:
        assert e.split in ex.PROTOCOL["monitor"]
        if e.model != "mean":
            assert e.model in models.REGISTRY and e.model in ex.SETTINGS
        if e.tuned_as:
            parent = ex.entry(e.tuned_as)
            assert parent.tuned_as is None and parent.model == e.model and parent.split == e.split
        if e.init_from:
            source = ex.entry(e.init_from)
            assert e.tuned_as and source.tuned_as is None and source.split == e.split


# ----------------------------------------------------------------------------- the stored results

def test_every_entry_followed_the_protocol(board):
    grid = ex.PROTOCOL["grid"]
    points = [{"lr": lr, "weight_decay": wd} for lr in grid["lr"] for wd in grid["weight_decay"]]
    assert board.protocol["grid"] == grid and board.protocol["seeds"] == ex.PROTOCOL["seeds"]
    assert set(board.entries) == set(ex.ENTRY)
    for key, e in board.entries.items():
        spec = ex.entry(key)
        assert [r["seed"] for r in e["runs"]] == ex.PROTOCOL["seeds"], key
        if spec.tuned_as is None:
            searched = [s["point"] for s in e["search"]]
            assert searched == ex.search_points(spec), key  # the same budget for every model
            best = max(e["search"], key=lambda s: s["valid"][spec.monitor])
            assert best["point"] == e["chosen"], key
        else:
            chosen = dict(e["chosen"])
            if spec.init_from is not None:  # FM-initialised: its FM at the FM's point
                assert chosen.pop("init_point") == board.entries[spec.init_from]["chosen"]
            assert chosen == board.entries[spec.tuned_as]["chosen"]
        if spec.model != "mean":
            assert {k: v for k, v in e["chosen"].items() if k != "init_point"} in points
            # no run, and no chosen search point, stopped at the epoch cap
            for r in e["runs"]:
                assert r["best_epoch"] < ex.PROTOCOL["epochs"], (key, r["seed"])
                assert r["epochs"] < ex.PROTOCOL["epochs"], (key, r["seed"])


def test_summaries_and_verdicts_agree_with_the_runs(board):
    for key, e in board.entries.items():
        s = e["summary"]
        auc = np.array([r["test"]["auc"] for r in e["runs"]])
        assert s["auc_mean"] == pytest.approx(auc.mean(), abs=1e-12)
        assert s["auc_sd"] == pytest.approx(auc.std(ddof=1), abs=1e-12)
    keys = {split: [k for k, e in board.entries.items() if e["split"] == split]
            for split in ("random", "temporal")}
    for split, ks in keys.items():
        for i, a in enumerate(ks):
            for b in ks[i + 1:]:
                c = board.compare(a, b)
                va = [r["test"]["auc"] for r in board.entries[a]["runs"]]
                vb = [r["test"]["auc"] for r in board.entries[b]["runs"]]
                t = metrics.paired_t_interval(va, vb)
                assert (c["seed_low"], c["seed_high"]) == pytest.approx((t["low"], t["high"]))
                assert c["boot_low"] <= c["boot_high"]
                rev = board.compare(b, a)
                assert rev["diff"] == pytest.approx(-c["diff"])
                assert rev["verdict"] == {"higher": "lower", "lower": "higher"}.get(
                    c["verdict"], "indistinguishable")
    with pytest.raises(KeyError, match="not comparable"):
        board.compare("fm", "din")


def test_chapters_train_with_the_chosen_settings(board):
    for key in ("lr", "fm", "afm", "deepfm"):
        fk = ex.tuned_fit(key)
        assert {k: fk[k] for k in ("lr", "weight_decay")} == board.chosen(key)
        assert fk["monitor"] == "auc"
    assert ex.tuned_fit("din", split="temporal")["monitor"] == "gauc"
    assert {k: ex.tuned_fit("din", split="temporal")[k] for k in ("lr", "weight_decay")} == \
        board.chosen("din")


@pytest.mark.parametrize("key", ["lr", "fm", "deepfm"])
def test_a_retrained_subset_lies_within_the_stored_results(board, ctr, key):
    """Re-train one stored seed: it must land where the leaderboard says, within the
    book's tolerances (measured spread over seeds and CPU kernels)."""
    seed = ex.PROTOCOL["seeds"][0]
    stored = next(r for r in board.entries[key]["runs"] if r["seed"] == seed)
    point = board.chosen(key)
    out = ex.train_entry(ex.entry(key), ctr, seed=seed, **point)["record"]
    tol = {k: TOLERANCES[k].bound(stored["test"][k]) for k in ("auc", "logloss")}
    for k in ("auc", "logloss"):
        assert abs(out["test"][k] - stored["test"][k]) <= tol[k], k
    s = board.summary(key)
    assert abs(out["test"]["auc"] - s["auc_mean"]) <= tol["auc"]
    assert out["best_epoch"] < ex.PROTOCOL["epochs"]
    assert out["parameters"] == s["parameters"]


def test_fm_initialised_entries_start_from_the_trained_fm(monkeypatch):
    """``init_from``: the FM trains first (same seed, its own point) and the model's
    embedding table starts as an exact copy of the FM's trained table."""
    from types import SimpleNamespace

    from conftest import random_fields

    g = torch.Generator().manual_seed(0)
    dims = [6, 5, 4]

    def part(n):
        x = random_fields(dims, n, g)
        return TensorData(fields=x, label=(x[:, 0] % 2 == x[:, 1] % 2).float())

    data = SimpleNamespace(field_dims=dims, train=part(256), valid=part(128), test=part(64))
    calls, real_fit = [], ex.fit

    def recording_fit(model, *args, **kwargs):
        start = model.embedding.embedding.weight.detach().clone()
        kwargs.update(epochs=2)
        out = real_fit(model, *args, **kwargs)
        calls.append((type(model).__name__, kwargs["lr"], start, model))
        return out

    monkeypatch.setattr(ex, "fit", recording_fit)
    e = ex.entry("fnn")
    with pytest.raises(ValueError, match="init_point"):
        ex.train_entry(e, data, lr=1e-2, weight_decay=0.0, seed=1)
    calls.clear()
    out = ex.train_entry(e, data, lr=1e-2, weight_decay=0.0, seed=1,
                         init_point={"lr": 3e-3, "weight_decay": 0.0})
    assert [(c[0], c[1]) for c in calls] == [("FM", 3e-3), ("EmbeddingMLP", 1e-2)]
    fm_trained = calls[0][3].embedding.embedding.weight.detach()
    assert torch.equal(calls[1][2], fm_trained)  # the copy, exactly
    assert not torch.equal(calls[0][2], fm_trained)  # the FM did train
    assert out["logits"].shape == (64,)
