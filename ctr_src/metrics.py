"""Ranking and calibration metrics (AUC, logloss, group AUC) and their uncertainty.

The metrics take array-likes (NumPy arrays, lists or tensors) and return Python floats.
They are written from their definitions and tested against scikit-learn.
:func:`paired_bootstrap` (over test rows or users) and :func:`paired_t_interval` (over
training seeds) put intervals on the difference between two models.
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


def _group_rows(g: np.ndarray) -> list[np.ndarray]:
    """The row indices of each group of ``g`` (groups in sorted order)."""
    order = np.argsort(g, kind="mergesort")
    g_sorted = g[order]
    return np.split(order, np.flatnonzero(g_sorted[1:] != g_sorted[:-1]) + 1)


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
    total, weight = 0.0, 0.0
    for idx in _group_rows(g):
        yy = y[idx]
        n_pos = yy.sum()
        if n_pos == 0 or n_pos == len(yy):
            continue
        total += len(idx) * auc(yy, s[idx])
        weight += len(idx)
    if weight == 0:
        raise ValueError("GAUC is undefined: no group has both positive and negative labels")
    return float(total / weight)


# ----------------------------------------------------------------------------- uncertainty

def _auc_weighted(y: np.ndarray, s: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC of each row of ``counts`` (``(B, N)``: how often each example is drawn).

    Equal to :func:`auc` of the examples repeated ``counts[b]`` times, for every ``b`` at
    once: examples are sorted by score once, tied scores form one group, and each group
    of positives beats the negative weight below it and ties half of its own.
    """
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(s_sorted)) + 1])
    w = counts[:, order].astype(np.float64)
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)  # (B, G) positive weight per tie group
    neg = np.add.reduceat(w * (1 - y_sorted), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)


def _group_aucs(y: np.ndarray, s: np.ndarray, g: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """AUC of each group in ``keys`` (every one of them must have both classes)."""
    by_key = {g[idx[0]]: idx for idx in _group_rows(g)}
    return np.array([auc(y[by_key[k]], s[by_key[k]]) for k in keys])


def _scores_2d(x, n: int, name: str) -> np.ndarray:
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else x
    arr = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ValueError(f"{name} must have shape (N,) or (S, N) with N = {n} labels, "
                         f"got {np.shape(x)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def bootstrap_replicates(labels, scores, metric: str = "auc", groups=None,
                         n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``metric`` of ``scores`` on ``n_boot`` redrawn test sets, ``(n_boot,)``.

    ``scores`` is ``(N,)`` or ``(S, N)`` (one row per training seed; each replicate is then
    the mean over the rows). Rows are redrawn with replacement for ``"auc"`` and
    ``"logloss"`` (scores must then be probabilities), whole groups for ``"gauc"``. The
    draws depend only on ``seed``, the number of rows and the groups -- not on the
    scores -- so the replicates of two models with the same ``seed`` are **paired**:
    their difference is the paired bootstrap of :func:`paired_bootstrap`.
    """
    if metric not in ("auc", "logloss", "gauc"):
        raise ValueError(f"metric must be 'auc', 'logloss' or 'gauc', got {metric!r}")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ValueError(f"n_boot must be an int >= 10, got {n_boot!r}")
    y = _as_1d(labels, "labels")
    _check_labels(y)
    x = _scores_2d(scores, len(y), "scores")
    rng = np.random.default_rng(seed)
    if metric == "gauc":
        if groups is None:
            raise ValueError("metric='gauc' needs groups (e.g. the user of each row)")
        g = np.asarray(groups.detach().cpu().numpy() if hasattr(groups, "detach") else groups)
        g = g.reshape(-1)
        if len(g) != len(y):
            raise ValueError(f"groups has {len(g)} entries for {len(y)} labels")
        keys, inverse = np.unique(g, return_inverse=True)
        n_u = np.bincount(inverse, minlength=len(keys)).astype(np.float64)
        pos_u = np.bincount(inverse, weights=y, minlength=len(keys))
        ok = (pos_u > 0) & (pos_u < n_u)
        if not ok.any():
            raise ValueError("GAUC is undefined: no group has both positive and negative labels")
        keys, n_u = keys[ok], n_u[ok]
        aucs = np.stack([_group_aucs(y, row, g, keys) for row in x]).mean(0)  # (G,)
        # redraw users; GAUC = sum_u c_u n_u AUC_u / sum_u c_u n_u
        counts = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=n_boot)
        weights = counts * n_u
        return weights @ aucs / weights.sum(1)
    n = len(y)
    losses = [_row_logloss(y, row, "scores") for row in x] if metric == "logloss" else None
    out = np.zeros(n_boot)
    for start in range(0, n_boot, 250):  # chunks bound the (chunk, N) memory
        counts = rng.multinomial(n, np.full(n, 1 / n), size=min(250, n_boot - start))
        if metric == "auc":
            part = sum(_auc_weighted(y, row, counts) for row in x)
        else:
            part = sum(counts @ loss / n for loss in losses)
        out[start:start + len(counts)] = part / len(x)
    if not np.all(np.isfinite(out)):
        raise ValueError("a bootstrap replicate drew only one class; the test set is too small "
                         "for a bootstrap interval")
    return out


def _metric_mean(y, x: np.ndarray, metric: str, groups) -> float:
    if metric == "auc":
        return float(np.mean([auc(y, row) for row in x]))
    if metric == "logloss":
        return float(np.mean([logloss(y, row) for row in x]))
    return float(np.mean([gauc(y, row, groups) for row in x]))


def paired_bootstrap(labels, scores_a, scores_b, metric: str = "auc", groups=None,
                     n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Interval for ``metric(a) - metric(b)`` on the same test rows, by paired bootstrap.

    ``scores_a`` and ``scores_b`` are ``(N,)`` scores of two models for the same rows, or
    ``(S, N)``: one row per training seed; the difference is then that of the means over
    seeds. Each bootstrap replicate redraws the test set -- rows with replacement for
    ``"auc"`` (scores may be logits) and ``"logloss"`` (scores must be probabilities),
    whole groups (users) for ``"gauc"`` (needs ``groups``) -- and scores **both** models
    on the **same** redrawn set, so what the two models share (hard rows, easy users)
    cancels out. It measures how much the difference would move with another test sample
    of the same size, not how it moves with another training seed (see
    :func:`paired_t_interval`).

    Returns ``{"diff", "low", "high", "se", "metric", "n_boot", "level"}``: the observed
    difference, the percentile interval and the bootstrap standard error.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    y = _as_1d(labels, "labels")
    a = _scores_2d(scores_a, len(y), "scores_a")
    b = _scores_2d(scores_b, len(y), "scores_b")
    if metric == "logloss":
        for x, name in ((a, "scores_a"), (b, "scores_b")):
            _row_logloss(y, x[0], name)
    boots = (bootstrap_replicates(y, a, metric, groups, n_boot, seed)
             - bootstrap_replicates(y, b, metric, groups, n_boot, seed))
    tail = (1 - level) / 2
    low, high = np.quantile(boots, [tail, 1 - tail])
    observed = _metric_mean(y, a, metric, groups) - _metric_mean(y, b, metric, groups)
    return {"diff": observed, "low": float(low), "high": float(high),
            "se": float(boots.std(ddof=1)), "metric": metric, "n_boot": int(n_boot),
            "level": float(level)}


def _row_logloss(y: np.ndarray, p: np.ndarray, name: str, eps: float = 1e-15) -> np.ndarray:
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"{name} must be probabilities in [0, 1] for metric='logloss'")
    p = np.clip(p, eps, 1 - eps)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def paired_t_interval(values_a, values_b, level: float = 0.95) -> dict:
    """Student-t interval for the mean of ``values_a - values_b``, paired by seed.

    ``values_a[i]`` and ``values_b[i]`` are one metric of two models trained with the same
    seed ``i`` (and evaluated on the same test set). The interval says how far the mean
    difference could move with other training seeds. Returns ``{"diff", "low", "high",
    "sd", "n", "level"}``; needs at least two pairs.
    """
    a = _as_1d(values_a, "values_a")
    b = _as_1d(values_b, "values_b")
    if a.shape != b.shape:
        raise ValueError(f"values_a and values_b must pair up, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError("a paired interval needs at least two seeds")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    from scipy.stats import t as student_t

    d = a - b
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, len(d) - 1)) * sd / np.sqrt(len(d))
    return {"diff": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": len(d),
            "level": float(level)}
