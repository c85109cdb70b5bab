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
