"""The few plot helpers the chapters share (matplotlib, small figures)."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (6.4, 3.6),
                     "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                     "axes.spines.right": False})


def learning_curves(histories: Mapping[str, "History"], metrics: Sequence[str] = ("train_loss", "valid_auc"),
                    titles: Sequence[str] | None = None):
    """One panel per metric, one line per model; the best epoch is marked with a dot."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2))
    axes = np.atleast_1d(axes)
    for ax, metric, title in zip(axes, metrics, titles or metrics):
        for name, h in histories.items():
            epochs = h.column("epoch")
            line, = ax.plot(epochs, h.column(metric), marker=".", label=name)
            ax.plot([h.best_epoch], [h.best[metric]], "o", color=line.get_color(), ms=8, alpha=0.5)
        ax.set_xlabel("epoch")
        ax.set_title(title.replace("_", " "))
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def heatmap(matrix, row_labels: Sequence[str], col_labels: Sequence[str] | None = None,
            title: str = "", cmap: str = "viridis", fmt: str = "{:.2f}", ax=None, mask_lower: bool = False):
    """A labelled heat map with the values written in the cells (NaN cells stay blank)."""
    m = np.array(matrix, dtype=float)
    if mask_lower:
        m = np.where(np.triu(np.ones_like(m, dtype=bool), k=1), m, np.nan)
    col_labels = row_labels if col_labels is None else col_labels
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * len(col_labels) + 2.2, 0.5 * len(row_labels) + 1.2))
    im = ax.imshow(m, cmap=cmap)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.grid(False)
    finite = m[np.isfinite(m)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for (i, j), v in np.ndenumerate(m):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="white" if v < mid else "black")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
    ax.figure.tight_layout()
    return ax


def barh(labels: Sequence[str], values, title: str = "", xlabel: str = "", ax=None, color=None):
    """Horizontal bars, largest at the top."""
    values = np.asarray(values, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.28 * len(labels) + 1.2))
    ax.barh(range(len(labels))[::-1], values, color=color)
    ax.set_yticks(range(len(labels))[::-1], labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax
