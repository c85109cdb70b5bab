"""The few plot helpers the chapters share (matplotlib, small figures)."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

#: the width of the book's text column, in inches at ``figure.dpi`` (740 px on the website):
#: figures are drawn at most this wide, so the page never shrinks them and a 9 pt label
#: stays 9 pt on the screen
COLUMN_INCHES = 7.4

STYLE = {"figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": (6.4, 3.6),
         "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
         "figure.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False}


def use_book_style() -> None:
    """The book's figure style: :data:`STYLE`, and in a notebook PNGs at twice the pixel
    density (``retina``), so figures stay sharp on high-density screens while their size on
    the page is unchanged. Applied when this module is imported."""
    plt.rcParams.update(STYLE)
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # pragma: no cover - plain Python without IPython
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


use_book_style()


def learning_curves(histories: Mapping[str, "History"], metrics: Sequence[str] = ("train_loss", "valid_auc"),
                    titles: Sequence[str] | None = None):
    """One panel per metric (at most three side by side, within the text column), one line
    per model, the metric's name on the y-axis; the best epoch is marked with a dot."""
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(COLUMN_INCHES, 2.7 * rows + 0.3),
                             squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(metrics):]:
        ax.remove()
    for ax, metric, title in zip(axes, metrics, titles or metrics):
        for name, h in histories.items():
            epochs = h.column("epoch")
            line, = ax.plot(epochs, h.column(metric), marker=".", label=name)
            ax.plot([h.best_epoch], [h.best[metric]], "o", color=line.get_color(), ms=8, alpha=0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(title.replace("_", " "))
    axes[len(metrics) - 1].legend()
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
    for (i, j), v in np.ndenumerate(m):
        if np.isfinite(v):  # dark text on light cells, light text on dark ones
            r, g, b, _ = im.cmap(im.norm(v))
            light = 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="black" if light else "white")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
    ax.figure.tight_layout()
    return ax


#: the fields that describe the user; the others describe the movie
USER_FIELDS = ("user_id", "age", "gender", "occupation", "zip")


def user_item_order(names: Sequence[str]) -> list[int]:
    """Positions of ``names`` reordered: user fields first (in :data:`USER_FIELDS` order),
    then the item fields in their own order."""
    names = list(names)
    user = [names.index(f) for f in USER_FIELDS if f in names]
    return user + [i for i in range(len(names)) if i not in user]


def pair_heatmap(matrix, names: Sequence[str], title: str = "", ax=None,
                 cmap: str = "viridis", fmt: str = "{:.2f}"):
    """A field-pair map drawn the same way in every chapter: ``matrix`` is ``(F, F)`` with
    the value of pair ``(i, j)`` at ``[i, j]`` or ``[j, i]`` (NaN or a symmetric copy
    elsewhere); fields are ordered user block, then item block, each pair is shown once
    (above the diagonal) and a line separates the user x user, user x item and item x item
    blocks."""
    m = np.array(matrix, dtype=float)
    if m.ndim != 2 or m.shape != (len(names), len(names)):
        raise ValueError(f"matrix must be (F, F) with F = {len(names)} names, got {m.shape}")
    m = np.where(np.isnan(m), m.T, m)  # one triangle given: mirror it
    order = user_item_order(names)
    m = m[np.ix_(order, order)]
    m = np.where(np.triu(np.ones_like(m, dtype=bool), k=1), m, np.nan)
    labels = [names[i] for i in order]
    ax = heatmap(m[:-1, 1:], labels[:-1], labels[1:], title=title, cmap=cmap, fmt=fmt, ax=ax)
    n_user = sum(f in USER_FIELDS for f in names)
    if 0 < n_user < len(names):
        ax.axhline(n_user - 0.5, color="white", lw=2)   # below: item x item pairs
        ax.axvline(n_user - 1.5, color="white", lw=2)   # left: user x user pairs
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
