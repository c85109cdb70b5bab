"""The shared plot helpers: the field-pair map puts every pair in the right cell."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ctr_src import plots  # noqa: E402
from ctr_src.data import DEFAULT_FIELDS  # noqa: E402


def test_user_item_order_puts_user_fields_first():
    order = plots.user_item_order(DEFAULT_FIELDS)
    assert [DEFAULT_FIELDS[i] for i in order] == [
        "user_id", "age", "gender", "occupation", "zip", "item_id", "decade", "genre"]
    assert sorted(order) == list(range(len(DEFAULT_FIELDS)))


@pytest.mark.parametrize("triangle", ["upper", "lower", "both"])
def test_pair_heatmap_shows_each_pair_once_in_its_cell(triangle):
    names = list(DEFAULT_FIELDS)
    F = len(names)
    value = {(i, j): 10 * i + j for i in range(F) for j in range(i + 1, F)}  # pair i<j
    m = np.full((F, F), np.nan)
    for (i, j), v in value.items():
        if triangle in ("upper", "both"):
            m[i, j] = v
        if triangle in ("lower", "both"):
            m[j, i] = v
    fig, ax = plt.subplots()
    plots.pair_heatmap(m, names, ax=ax, fmt="{:.0f}")
    shown = ax.images[0].get_array()
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    seen = set()
    for r, a in enumerate(rows):
        for c, b in enumerate(cols):
            v = shown[r, c]
            if np.ma.is_masked(v) or np.isnan(v):
                continue
            i, j = sorted((names.index(a), names.index(b)))
            assert v == value[i, j]
            seen.add((i, j))
    assert seen == set(value)  # every pair exactly once
    plt.close(fig)
    with pytest.raises(ValueError, match="F, F"):
        plots.pair_heatmap(np.zeros((3, 3)), names)


def test_learning_curves_fit_the_column_and_label_every_axis():
    from ctr_src.train import History

    h = History(records=[{"epoch": e, "train_loss": loss, "valid_auc": auc,
                          "valid_logloss": loss + 0.05}
                         for e, (loss, auc) in enumerate([(0.6, 0.70), (0.5, 0.75),
                                                          (0.45, 0.74)], 1)],
                best_epoch=2)
    for metrics in (["train_loss"], ["train_loss", "valid_auc"],
                    ["train_loss", "valid_auc", "valid_logloss"],
                    ["train_loss", "valid_auc", "valid_logloss", "train_loss"]):
        fig = plots.learning_curves({"m": h}, metrics)
        assert fig.get_size_inches()[0] <= plots.COLUMN_INCHES
        assert len(fig.axes) == len(metrics)
        assert [ax.get_ylabel() for ax in fig.axes] == [m.replace("_", " ") for m in metrics]
        assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
        plt.close(fig)


def test_book_style_is_applied_on_import():
    assert plt.rcParams["figure.dpi"] == plots.STYLE["figure.dpi"]
    assert plt.rcParams["font.size"] == plots.STYLE["font.size"]
