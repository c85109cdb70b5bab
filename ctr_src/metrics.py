"""Ranking and calibration metrics: AUC, logloss and group AUC (GAUC).

All three take array-likes (NumPy arrays, lists or tensors) and return Python floats.
They are written from their definitions and tested against scikit-learn.
"""

from __future__ import annotations

import numpy as np


def _as_1d(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim > 1 and arr.size == max(arr.shape):  # (N, 1) or (1, N): flatten
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_labels(y: np.ndarray) -> None:
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # boundaries of runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(labels, scores) -> float:
    """Area under the ROC curve.

    AUC is the probability that a random positive is scored above a random negative
    (ties count one half). Computed from ranks (Mann--Whitney U)::

        AUC = (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos * n_neg)

    Scores may be logits or probabilities: AUC only sees their order.
    Raises ``ValueError`` when only one class is present.
    """
    y = _as_1d(labels, "labels")
    s = _as_1d(scores, "scores")
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    _check_labels(y)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC is undefined when only one class is present")
    r = _ranks(s)
    return float((r[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels, probs, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy of probabilities (not logits), clipped to ``[eps, 1-eps]``."""
    y = _as_1d(labels, "labels")
    p = _as_1d(probs, "probs")
    if y.shape != p.shape:
        raise ValueError(f"labels and probs differ in length: {y.shape} vs {p.shape}")
    _check_labels(y)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probs must lie in [0, 1]; pass probabilities, not logits "
                         "(apply torch.sigmoid or use train.predict_proba)")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def gauc(labels, scores, groups) -> float:
    """Group AUC as in the DIN paper (Zhou et al., 2018).

    The AUC of each group (user) weighted by the group's number of impressions::

        GAUC = sum_u n_u * AUC_u / sum_u n_u

    Groups whose impressions are all of one class have no AUC and are **skipped**
    (they are left out of both sums). Raises ``ValueError`` if no group has both classes.
    """
    y = _as_1d(labels, "labels")
    s = _as_1d(scores, "scores")
    g = np.asarray(groups.detach().cpu().numpy() if hasattr(groups, "detach") else groups).reshape(-1)
    if not (len(y) == len(s) == len(g)):
        raise ValueError(f"labels, scores and groups differ in length: {len(y)}, {len(s)}, {len(g)}")
    _check_labels(y)
    order = np.argsort(g, kind="mergesort")
    g_sorted = g[order]
    cuts = np.flatnonzero(g_sorted[1:] != g_sorted[:-1]) + 1
    total, weight = 0.0, 0.0
    for idx in np.split(order, cuts):
        yy = y[idx]
        n_pos = yy.sum()
        if n_pos == 0 or n_pos == len(yy):
            continue
        total += len(idx) * auc(yy, s[idx])
        weight += len(idx)
    if weight == 0:
        raise ValueError("GAUC is undefined: no group has both positive and negative labels")
    return float(total / weight)
