"""Behaviour histories for DIN: no leakage, the window, equal timestamps, unknown ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctr_src import models
from ctr_src.data import FieldEncoder
from ctr_src.data.sequences import build_histories, load_din


@pytest.fixture(scope="module")
def din_data():
    return load_din(max_len=20)


def naive_history(table: pd.DataFrame, max_len: int, known: set) -> list[list[int]]:
    """Literal definition: per row, the user's positive known items strictly earlier in time,
    ordered by (time, row), the last ``max_len`` of them -- as table rows."""
    out = []
    for i in range(len(table)):
        u, t = table["user_id"].iat[i], table["timestamp"].iat[i]
        earlier = [j for j in range(len(table))
                   if table["user_id"].iat[j] == u and table["timestamp"].iat[j] < t
                   and table["label"].iat[j] == 1 and table["item_id"].iat[j] in known]
        earlier.sort(key=lambda j: (table["timestamp"].iat[j], j))
        out.append(earlier[-max_len:] if earlier else [])
    return out


def toy_table() -> pd.DataFrame:
    #            user item time label genre
    rows = [(7, 10, 100, 1, "a"),   # first rating of user 7: empty history
            (7, 11, 200, 1, "b"),   # history [10]
            (7, 12, 200, 1, "a"),   # same second as item 11: history still [10]
            (7, 13, 300, 0, "b"),   # history [10, 11, 12]
            (7, 14, 400, 1, "c"),   # 13 was disliked: history [10, 11, 12]
            (7, 99, 450, 1, "c"),   # item 99 will be unknown to the encoder
            (7, 15, 500, 1, "a"),   # history [.., 14] without 99
            (3, 10, 150, 1, "a"),   # another user: never sees user 7's past
            (3, 12, 50, 0, "a")]    # rows need not be sorted by time
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "label", "genre"])


def toy_encoder(table: pd.DataFrame) -> FieldEncoder:
    known = table[table["item_id"] != 99]
    return FieldEncoder.fit(known, ("user_id", "item_id", "genre"))


def test_toy_table_equal_times_dislikes_unknown_items_and_other_users():
    table = toy_table()
    enc = toy_encoder(table)
    h = build_histories(table, max_len=3, encoder=enc)
    items = [[enc.decode("item_id", i) for i, m in zip(h.history[r, :, 0], h.mask[r]) if m]
             for r in range(len(table))]
    assert items == [[], [10], [10], [10, 11, 12], [10, 11, 12], [11, 12, 14], [11, 12, 14], [], []]
    # max_len=3 keeps the most recent three; the padding sits on the right, index 0
    assert h.history.shape == (9, 3, 2) and h.mask.dtype == bool
    assert not h.mask[0].any() and (h.history[0] == 0).all() and (h.rows[0] == -1).all()
    assert h.mask[1].tolist() == [True, False, False] and (h.history[1, 1:] == 0).all()
    # the genre travels with the item
    genres = [enc.decode("genre", g) for g in h.history[3, :, 1]]
    assert genres == ["a", "b", "a"]


def test_longer_window_keeps_everything_and_rows_point_back():
    table = toy_table()
    enc = toy_encoder(table)
    h = build_histories(table, max_len=10, encoder=enc)
    assert h.lengths.tolist() == [0, 1, 1, 3, 3, 4, 4, 0, 0]
    real = h.rows[h.mask]
    assert (table["label"].to_numpy()[real] == 1).all()
    # rows and indices agree
    codes = enc.encode(table.assign(user_id=0))[:, 1]
    assert np.array_equal(h.history[..., 0][h.mask], codes[real])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 40), users=st.integers(1, 4), times=st.integers(1, 6),
       max_len=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_matches_the_literal_definition(n, users, times, max_len, seed):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"user_id": rng.integers(1, users + 1, n),
                          "item_id": rng.integers(1, 9, n),
                          "timestamp": rng.integers(0, times, n),  # many equal timestamps
                          "label": rng.integers(0, 2, n),
                          "genre": rng.choice(["x", "y"], n)})
    known_table = table[table["item_id"] != 8]  # item 8 stays unknown
    enc = FieldEncoder.fit(known_table if len(known_table) else table.iloc[:0], ("item_id", "genre"))
    h = build_histories(table, max_len=max_len, encoder=enc)
    expected = naive_history(table, max_len, set(known_table["item_id"]))
    for r in range(n):
        got = h.rows[r][h.mask[r]].tolist()
        assert got == expected[r]
        assert h.mask[r].tolist() == [True] * len(got) + [False] * (max_len - len(got))
    assert (h.history[~h.mask] == 0).all() and (h.rows[~h.mask] == -1).all()


def test_no_history_reaches_into_the_future(din_data):
    """Every history entry of every impression is an earlier positive rating of the same user."""
    table = din_data.table
    ts = table["timestamp"].to_numpy()
    users = table["user_id"].to_numpy()
    labels = table["label"].to_numpy()
    rows = din_data.histories.rows
    for name in ("train", "valid", "test"):
        part = getattr(din_data, name)
        r = part["row"].numpy()
        mask = part["history_mask"].numpy()
        assert np.array_equal(mask, din_data.histories.mask[r])
        hist_rows = rows[r]
        earlier = ts[np.maximum(hist_rows, 0)] < ts[r][:, None]
        assert earlier[mask].all(), f"{name}: a history entry is not strictly earlier than its target"
        assert (users[hist_rows[mask]] == np.repeat(users[r], mask.sum(1))).all()
        assert (labels[hist_rows[mask]] == 1).all()


def test_temporal_split_puts_each_users_future_in_valid_then_test(din_data):
    table = din_data.table
    ts = table["timestamp"].to_numpy()
    frame = pd.concat([pd.DataFrame({"user": d["user"].numpy(), "t": ts[d["row"].numpy()], "split": s})
                       for s, d in enumerate((din_data.train, din_data.valid, din_data.test))])
    g = frame.groupby(["user", "split"])["t"].agg(["min", "max"]).unstack()
    assert (g[("max", 0)] <= g[("min", 1)]).all() and (g[("max", 1)] <= g[("min", 2)]).all()
    assert len(frame) == len(table) and frame.groupby("user").ngroups == table["user_id"].nunique()


def test_load_din_tensors_and_fields(din_data):
    names = din_data.field_names
    assert din_data.seq_fields == (names.index("item_id"), names.index("genre"))
    for part in (din_data.train, din_data.valid, din_data.test):
        hist, mask = part["history"], part["history_mask"]
        assert hist.dtype == torch.long and mask.dtype == torch.bool
        assert hist.shape == (len(part), 20, 2) and mask.shape == (len(part), 20)
        # padded positions hold 0; every real movie is a known one
        assert (hist[~mask] == 0).all() and (hist[..., 0][mask] > 0).all()
        # a history genre is the genre of that history movie (as in the table)
        flat_items = hist[..., 0][mask]
        flat_genres = hist[..., 1][mask]
        fields = torch.from_numpy(din_data.fields)
        item_genre = torch.zeros(din_data.field_dims[1], dtype=torch.long)
        item_genre[fields[:, 1]] = fields[:, 7]
        assert torch.equal(item_genre[flat_items], flat_genres)
    # real positions come first
    m = din_data.train["history_mask"].int()
    assert (m[:, 1:] <= m[:, :-1]).all()
    # most test impressions have a full window, a few training ones are empty
    assert float(din_data.test["history_mask"].all(1).float().mean()) > 0.9
    assert 0 < float((~din_data.train["history_mask"].any(1)).float().mean()) < 0.1


def test_a_din_model_runs_on_the_batches(din_data):
    m = models.build("din", field_dims=din_data.field_dims, embed_dim=4, seq_fields=din_data.seq_fields)
    empty = torch.nonzero(~din_data.train["history_mask"].any(1)).squeeze(1)[:32]
    full = torch.nonzero(din_data.train["history_mask"].all(1)).squeeze(1)[:32]
    batch = din_data.train.batch(torch.cat([empty, full]))
    assert len(empty) == 32 and not batch["history_mask"][:32].any()
    out = m(batch)
    assert out.shape == (64,) and torch.isfinite(out).all()
    assert (m.attention(batch)[:32] == 0).all()


def test_bad_input_is_named():
    table = toy_table()
    enc = toy_encoder(table)
    with pytest.raises(ValueError, match="encoder"):
        build_histories(table)
    with pytest.raises(ValueError, match="max_len"):
        build_histories(table, max_len=0, encoder=enc)
    with pytest.raises(ValueError, match="timestamp"):
        build_histories(table.drop(columns="timestamp"), encoder=enc)
    with pytest.raises(ValueError, match="sequence field"):
        build_histories(table, encoder=enc, seq_fields=("item_id", "decade"))
    with pytest.raises(ValueError, match="label"):
        build_histories(table.assign(label=table["label"] * 5), encoder=enc)
    with pytest.raises(TypeError, match="DataFrame"):
        build_histories([1, 2, 3], encoder=enc)
    with pytest.raises(ValueError, match="among the fields"):
        load_din(seq_fields=("item_id", "title"))
