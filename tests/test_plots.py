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
