"""Metrics from their definitions, checked against scikit-learn and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss, roc_auc_score

from ctr_src import metrics


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 300), st.integers(0, 10_000), st.booleans())
def test_auc_matches_sklearn(n, seed, ties):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = rng.integers(0, 5, n).astype(float) if ties else rng.normal(size=n)
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_hand_values():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts one half
    assert metrics.auc([1, 0], [2.0, -3.0]) == 1.0
    with pytest.raises(ValueError, match="one class"):
        metrics.auc([1, 1], [0.2, 0.3])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.integers(0, 10_000))
def test_logloss_matches_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = rng.uniform(0.001, 0.999, n)
    assert metrics.logloss(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-10)


def test_logloss_rejects_logits():
    with pytest.raises(ValueError, match="probabilities"):
        metrics.logloss([0, 1], [-2.0, 3.0])


def test_gauc_hand_computation_with_single_class_user():
    # user 1: 4 impressions, AUC 0.75; user 2: 2 impressions, AUC 1; user 3: one class -> skipped
    labels = [0, 0, 1, 1, 0, 1, 1, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.1, 0.5, 0.7]
    groups = [1, 1, 1, 1, 2, 2, 3, 3, 3]
    expected = (4 * 0.75 + 2 * 1.0) / (4 + 2)
    assert metrics.gauc(labels, scores, groups) == pytest.approx(expected)


def test_gauc_equals_auc_for_one_group_and_fails_without_any():
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 50), rng.normal(size=50)
    assert metrics.gauc(y, s, np.zeros(50)) == pytest.approx(metrics.auc(y, s))
    with pytest.raises(ValueError, match="no group"):
        metrics.gauc([1, 0], [0.3, 0.2], [1, 2])


# ----------------------------------------------------------------------------- intervals

def _toy_scores(n=3000, seed=0, strength=(1.0, 0.7)):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-signal))).astype(float)
    noise = rng.normal(scale=0.8, size=n)  # shared: both models make the same mistakes
    a = strength[0] * signal + noise
    b = strength[1] * signal + noise + rng.normal(scale=0.3, size=n)
    return y, a, b


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auc_equals_auc_of_the_repeated_rows(ties):
    rng = np.random.default_rng(1)
    y, s, _ = _toy_scores(400, seed=2)
    if ties:
        s = np.round(s, 1)  # many tied scores
    counts = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=5)
    got = metrics._auc_weighted(y, s, counts)
    for c, value in zip(counts, got):
        assert value == pytest.approx(metrics.auc(np.repeat(y, c), np.repeat(s, c)), abs=1e-12)


def test_paired_bootstrap_auc_interval():
    y, a, b = _toy_scores()
    out = metrics.paired_bootstrap(y, a, b, n_boot=400, seed=3)
    assert out["diff"] == pytest.approx(metrics.auc(y, a) - metrics.auc(y, b), abs=1e-12)
    assert out["low"] < out["diff"] < out["high"]
    assert out["low"] > 0  # a reads the signal more strongly: clearly better
    # paired: narrower than the spread of either AUC alone, as the models share errors
    alone = metrics.paired_bootstrap(y, a, np.zeros_like(a), n_boot=400, seed=3)
    assert out["se"] < 0.5 * alone["se"]
    same = metrics.paired_bootstrap(y, a, a, n_boot=50)
    assert same["diff"] == same["low"] == same["high"] == 0.0
    flipped = metrics.paired_bootstrap(y, b, a, n_boot=400, seed=3)
    assert flipped["low"] == pytest.approx(-out["high"]) and flipped["high"] == pytest.approx(-out["low"])


def test_paired_bootstrap_averages_over_seeds_and_logloss():
    y, a, b = _toy_scores()
    rng = np.random.default_rng(4)
    a2 = np.stack([a, a + rng.normal(scale=0.3, size=len(a))])
    b2 = np.stack([b, b + rng.normal(scale=0.3, size=len(b))])
    out = metrics.paired_bootstrap(y, a2, b2, n_boot=100)
    expected = np.mean([metrics.auc(y, x) for x in a2]) - np.mean([metrics.auc(y, x) for x in b2])
    assert out["diff"] == pytest.approx(expected, abs=1e-12)
    pa, pb = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
    ll = metrics.paired_bootstrap(y, pa, pb, metric="logloss", n_boot=200)
    assert ll["diff"] == pytest.approx(metrics.logloss(y, pa) - metrics.logloss(y, pb), abs=1e-12)
    assert ll["low"] <= ll["diff"] <= ll["high"]
    with pytest.raises(ValueError, match="probabilities"):
        metrics.paired_bootstrap(y, a, b, metric="logloss")


def test_paired_bootstrap_gauc_redraws_users():
    y, a, b = _toy_scores(3000)
    users = np.arange(3000) % 60
    out = metrics.paired_bootstrap(y, a, b, metric="gauc", groups=users, n_boot=300)
    assert out["diff"] == pytest.approx(metrics.gauc(y, a, users) - metrics.gauc(y, b, users),
                                        abs=1e-12)
    assert out["low"] < out["diff"] < out["high"]
    with pytest.raises(ValueError, match="groups"):
        metrics.paired_bootstrap(y, a, b, metric="gauc")


def test_paired_bootstrap_rejects_bad_input():
    y, a, b = _toy_scores(100)
    with pytest.raises(ValueError, match="metric"):
        metrics.paired_bootstrap(y, a, b, metric="accuracy")
    with pytest.raises(ValueError, match="shape"):
        metrics.paired_bootstrap(y, a[:50], b)
    with pytest.raises(ValueError, match="NaN"):
        metrics.paired_bootstrap(y, np.where(np.arange(100) == 3, np.nan, a), b)
    with pytest.raises(ValueError, match="level"):
        metrics.paired_bootstrap(y, a, b, level=1.5)


def test_paired_t_interval_matches_the_textbook_formula():
    from scipy import stats
    a = np.array([0.791, 0.789, 0.794, 0.790, 0.792])
    b = np.array([0.787, 0.788, 0.789, 0.786, 0.790])
    out = metrics.paired_t_interval(a, b)
    d = a - b
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    assert out["diff"] == pytest.approx(d.mean())
    assert (out["low"], out["high"]) == pytest.approx((ci.low, ci.high))
    assert out["low"] > 0
    with pytest.raises(ValueError, match="two seeds"):
        metrics.paired_t_interval([0.7], [0.6])
    with pytest.raises(ValueError, match="pair up"):
        metrics.paired_t_interval(a, b[:3])
