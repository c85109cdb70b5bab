"""MovieLens-100K: canonical tables, both routes, corrupt input, CTR framing, splits."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from ctr_src.data import ctr, movielens
from ctr_src.data.movielens import GENRES, DataError


# ----------------------------------------------------------------------------- canonical tables

def test_canonical_tables_shapes_and_checksums(ml):
    assert len(ml.ratings) == 100_000 and len(ml.users) == 943 and len(ml.items) == 1_682
    assert list(ml.ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    for name in movielens.TABLES:
        digest = movielens._sha256(movielens.canonical_csv(getattr(ml, name)))
        assert digest == movielens.SHA256[name]
    assert ml.ratings["rating"].between(1, 5).all()
    assert ml.ratings[["user_id", "item_id"]].duplicated().sum() == 0
    assert set(ml.ratings["user_id"]) == set(ml.users["user_id"])
    assert set(ml.ratings["item_id"]) <= set(ml.items["item_id"])


def test_label_rate_is_55_375_percent(ml):
    assert (ml.ratings["rating"] >= 4).sum() == 55_375


def test_items_known_rows(ml):
    items = ml.items.set_index("item_id")
    assert items.loc[1, "title"] == "Toy Story"
    assert items.loc[1, "release_year"] == 1995
    assert items.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert items.loc[267, "title"] == "unknown" and pd.isna(items.loc[267, "release_year"])
    genres = {g for gs in items["genres"] for g in gs.split("|")}
    assert genres <= set(GENRES)


# ----------------------------------------------------------------------------- GroupLens route

def grouplens_zip(ml, rows=None) -> bytes:
    """ml-100k.zip in GroupLens' layout, rebuilt from canonical tables."""
    ratings = ml.ratings if rows is None else ml.ratings.iloc[:rows]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", ratings.sample(frac=1.0, random_state=0)
                    .to_csv(sep="\t", header=False, index=False))
        zf.writestr("ml-100k/u.user", ml.users.to_csv(sep="|", header=False, index=False))
        lines = []
        for r in ml.items.itertuples():
            year = "" if pd.isna(r.release_year) else str(int(r.release_year))
            title = r.title if not year else f"{r.title} ({year})"
            if r.item_id == 1412:  # GroupLens marks this video release "(1995) (V)"
                title += " (V)"
            if r.item_id in (1128, 1201, 1635):  # three titles end in a space
                title += " "
            date = f"01-Jan-{year}" if year else ""
            flags = ["1" if g in r.genres.split("|") else "0" for g in GENRES]
            lines.append("|".join([str(r.item_id), title, date, "", "http://example/"] + flags))
        zf.writestr("ml-100k/u.item", ("\n".join(lines) + "\n").encode("latin-1"))
        zf.writestr("ml-100k/README", "test archive")
    return buf.getvalue()


def test_grouplens_route_ends_in_the_same_canonical_tables(ml, tmp_path):
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(grouplens_zip(ml))
    target = movielens.fetch("grouplens", data_dir=tmp_path / "cache", url=archive.as_uri(), verbose=False)
    manifest = json.loads((target / "MANIFEST.json").read_text())
    assert manifest["sha256"] == movielens.SHA256
    assert manifest["source"].startswith("grouplens")
    again = movielens.load_movielens(tmp_path / "cache")
    pd.testing.assert_frame_equal(again.items, ml.items)


def test_grouplens_parser_small_archive(ml):
    tables = movielens.tables_from_grouplens_zip(grouplens_zip(ml, rows=50))
    assert len(tables["ratings"]) == 50
    assert tables["ratings"]["user_id"].is_monotonic_increasing
    items = tables["items"].set_index("item_id")
    # Latin-1 titles decode, "(year)" is dropped, the release year comes from the date
    assert items.loc[543, "title"] == ml.items.set_index("item_id").loc[543, "title"]
    assert "é" in items.loc[543, "title"]
    assert items.loc[2, "genres"] == "Action|Adventure|Thriller"
    assert items.loc[1412, "title"] == "Land Before Time III: The Time of the Great Giving"
    assert items.loc[1412, "release_year"] == 1995
    assert items.loc[1128, "title"] == "Heidi Fleiss: Hollywood Madam"


def test_split_title_rules():
    split = movielens.split_title
    assert split("Toy Story (1995)") == ("Toy Story", 1995)
    assert split("Seven (Se7en) (1995)") == ("Seven (Se7en)", 1995)
    assert split("Land Before Time III: The Time of the Great Giving (1995) (V)") == (
        "Land Before Time III: The Time of the Great Giving", 1995)
    assert split("Heidi Fleiss: Hollywood Madam (1995) ") == ("Heidi Fleiss: Hollywood Madam", 1995)
    assert split("unknown") == ("unknown", None)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_content"])
def test_corrupt_download_fails_clearly_and_leaves_no_cache(ml, tmp_path, damage):
    raw = grouplens_zip(ml)
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = b"<html>not a zip</html>"
    else:  # a valid archive whose content is not MovieLens-100K
        raw = grouplens_zip(ml, rows=1000)
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(raw)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        movielens.fetch("grouplens", data_dir=cache, url=archive.as_uri(), verbose=False)
    msg = str(info.value)
    assert ("fetch" in msg) or ("expected" in msg)
    leftovers = list(cache.iterdir()) if cache.exists() else []
    assert leftovers == [], f"half-written cache left behind: {leftovers}"


def test_unreachable_grouplens_is_a_connection_error(tmp_path):
    with pytest.raises(ConnectionError):
        movielens.fetch("grouplens", data_dir=tmp_path, url=(tmp_path / "missing.zip").as_uri(), verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_and_corrupt_cache_messages(ml, tmp_path):
    with pytest.raises(DataError, match="python -m ctr_src.data fetch"):
        movielens.load_movielens(tmp_path)
    movielens.write_cache({"ratings": ml.ratings, "users": ml.users, "items": ml.items}, tmp_path, "test")
    ratings = tmp_path / "ml-100k" / "ratings.csv"
    ratings.write_bytes(ratings.read_bytes()[:-100])
    with pytest.raises(DataError, match="--force"):
        movielens.load_movielens(tmp_path)


def test_refetch_replaces_a_corrupt_cache(ml, tmp_path):
    movielens.write_cache({"ratings": ml.ratings, "users": ml.users, "items": ml.items}, tmp_path, "test")
    (tmp_path / "ml-100k" / "users.csv").write_text("broken")
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(grouplens_zip(ml))
    movielens.fetch("grouplens", data_dir=tmp_path, url=archive.as_uri(), verbose=False)
    assert len(movielens.load_movielens(tmp_path).users) == 943
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k", "ml-100k.zip"]


def test_recbole_parser_on_a_small_wheel(tmp_path):
    buf = io.BytesIO()
    p = movielens.RECBOLE_PREFIX + "ml-100k."
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(p + "inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n2\t267\t4\t5\n1\t1\t3\t7\n")
        zf.writestr(p + "user", "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                                "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\tT8H1N\n")
        zf.writestr(p + "item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                "1\tToy Story\t1995\tAnimation Children's Comedy\n267\tunkonwn\tunkonwn\tunknown\n")
    t = movielens.tables_from_recbole_wheel(buf.getvalue())
    assert t["ratings"].values.tolist() == [[1, 1, 3, 7], [2, 267, 4, 5]]
    assert t["users"]["zip_code"].tolist() == ["85711", "T8H1N"]
    items = t["items"].set_index("item_id")
    assert items.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert items.loc[267, "title"] == "unknown" and pd.isna(items.loc[267, "release_year"])


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match="auto"):
        movielens.fetch("kaggle")


# ----------------------------------------------------------------------------- CTR framing

def test_default_fields_and_encoding_round_trip(ctr):
    assert ctr.field_names == ["user_id", "item_id", "age", "gender", "occupation", "zip", "decade", "genre"]
    # vocabulary sizes (+1 for <unk>): 943 users, 7 age buckets, 2 genders, 21 occupations --
    # every one of them occurs at least twice in the training split; movies do not
    assert ctr.field_dims[:1] + ctr.field_dims[2:5] == [944, 8, 3, 22]
    assert ctr.field_dims[1] < 1683
    decoded = ctr.encoder.decode_rows(ctr.fields)
    raw = ctr.table[ctr.field_names].reset_index(drop=True)
    known = ctr.fields != 0
    # every value the encoder knows decodes to exactly the raw value
    for j, f in enumerate(ctr.field_names):
        pd.testing.assert_series_equal(decoded[f][known[:, j]], raw[f][known[:, j]],
                                       check_dtype=False, check_names=False)
        assert (decoded[f][~known[:, j]] == "<unk>").all()
    assert ctr.encoder.index("occupation", "astronaut") == 0
    assert ctr.encoder.decode("age", ctr.encoder.index("age", "25-34")) == "25-34"


def test_vocabulary_is_that_of_the_training_rows(ctr):
    from ctr_src.data.ctr import DEFAULT_MIN_COUNT
    assert ctr.encoder.min_count == DEFAULT_MIN_COUNT == 2
    train_rows = ctr.train["row"].numpy()
    for f in ctr.field_names:
        counts = ctr.table[f].iloc[train_rows].value_counts()
        expected = set(counts.index[counts >= DEFAULT_MIN_COUNT].tolist())
        assert set(ctr.encoder.vocab[f][1:]) == expected, f
    # a movie never rated in training is <unk> wherever it appears
    items = ctr.table["item_id"]
    unseen = set(items.iloc[ctr.test["row"].numpy()]) - set(items.iloc[train_rows])
    assert unseen  # the default split has such movies
    test_items = ctr.test["fields"][:, 1].numpy()
    test_raw = items.iloc[ctr.test["row"].numpy()].to_numpy()
    assert (test_items[np.isin(test_raw, list(unseen))] == 0).all()
    # ... and <unk> occurs in training (rare movies), so its embedding is trained
    assert (ctr.train["fields"][:, 1] == 0).sum() > 0


def test_encoder_min_count_and_unseen_values():
    table = pd.DataFrame({"a": ["x", "x", "y", "z", "z", "z"], "b": [1, 2, 2, 3, 3, 3]})
    enc = ctr.FieldEncoder.fit(table, ["a", "b"], min_count=2)
    assert enc.vocab["a"] == ["<unk>", "x", "z"] and enc.vocab["b"] == ["<unk>", 2, 3]
    assert enc.field_dims == [3, 3]
    new = pd.DataFrame({"a": ["x", "y", "w", "z"], "b": [3, 1, 9, 2]})
    codes = enc.encode(new)
    assert codes.tolist() == [[1, 2], [0, 0], [0, 0], [2, 1]]  # rare y, unseen w -> 0
    assert enc.decode_rows(codes)["a"].tolist() == ["x", "<unk>", "<unk>", "z"]
    assert ctr.FieldEncoder.fit(table, ["a"]).vocab["a"] == ["<unk>", "x", "y", "z"]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="min_count"):
            ctr.FieldEncoder.fit(table, ["a"], min_count=bad)
    assert ctr.FieldEncoder.fit(table.iloc[:0], ["a"]).vocab["a"] == ["<unk>"]
    with pytest.raises(ValueError, match="unknown field"):
        ctr.FieldEncoder.fit(table, ["c"])


def test_age_buckets():
    assert [ctr.age_bucket(a) for a in (7, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 73)] == [
        "<18", "<18", "18-24", "18-24", "25-34", "25-34", "35-44", "35-44", "45-49", "45-49",
        "50-55", "50-55", "56+", "56+"]


def test_random_split_disjoint_complete_reproducible():
    a = ctr.random_split(1000, seed=2024)
    b = ctr.random_split(1000, seed=2024)
    c = ctr.random_split(1000, seed=7)
    assert [len(p) for p in a] == [800, 100, 100]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    union = np.concatenate(a)
    assert len(np.unique(union)) == 1000


def test_default_split_sizes_and_rows(ctr):
    assert (len(ctr.train), len(ctr.valid), len(ctr.test)) == (80_000, 10_000, 10_000)
    rows = [set(getattr(ctr, s)["row"].tolist()) for s in ("train", "valid", "test")]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    r = ctr.test["row"].numpy()
    assert np.array_equal(ctr.test["fields"].numpy(), ctr.fields[r])
    assert np.array_equal(ctr.test["label"].numpy(), ctr.table["label"].to_numpy()[r])


def test_temporal_split_is_per_user_and_in_time(ctr):
    users = ctr.table["user_id"].to_numpy()
    ts = ctr.table["timestamp"].to_numpy()
    from ctr_src.data.ctr import temporal_split
    tr, va, te = temporal_split(users, ts)
    assert len(tr) + len(va) + len(te) == len(users)
    df = pd.DataFrame({"u": users, "t": ts})
    last_train = df.iloc[tr].groupby("u")["t"].max()
    first_valid = df.iloc[va].groupby("u")["t"].min()
    last_valid = df.iloc[va].groupby("u")["t"].max()
    first_test = df.iloc[te].groupby("u")["t"].min()
    assert (last_train.loc[first_valid.index] <= first_valid).all()
    assert (last_valid.loc[first_test.index] <= first_test).all()
    assert set(df.iloc[te]["u"]) == set(users)  # every user has test impressions


def test_tensordata_batches_cover_every_row_once():
    from ctr_src.data import TensorData
    d = TensorData(fields=torch.arange(10).view(10, 1), label=torch.arange(10).float())
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    seen = torch.cat([b["fields"][:, 0] for b in d.batches(3, shuffle=True, generator=g1)])
    again = torch.cat([b["fields"][:, 0] for b in d.batches(3, shuffle=True, generator=g2)])
    assert sorted(seen.tolist()) == list(range(10)) and torch.equal(seen, again)
    assert [len(b["label"]) for b in d.batches(4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="rows"):
        TensorData(fields=torch.zeros(3, 2), label=torch.zeros(4))


# ----------------------------------------------------------------------------- fetch on first use

@pytest.fixture
def fake_fetch(ml, monkeypatch):
    """``movielens.fetch`` replaced by a local one that writes the canonical tables (no
    network); records every call. The real cache in data/ is never touched."""
    calls = []

    def fetch(source="auto", data_dir=None, force=False, url=None, verbose=True):
        calls.append(movielens.cache_dir(data_dir))
        return movielens.write_cache({"ratings": ml.ratings, "users": ml.users, "items": ml.items},
                                     data_dir, source="test")

    monkeypatch.setattr(movielens, "fetch", fetch)
    return calls


def test_load_movielens_fetches_on_first_use_with_a_message(ml, fake_fetch, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTR_DATA_DIR", str(tmp_path / "cache"))
    got = movielens.load_movielens()
    assert fake_fetch == [tmp_path / "cache"]
    out = capsys.readouterr().out
    assert "MovieLens-100K is not in" in out and "fetching it now" in out
    assert "python -m ctr_src.data fetch" in out
    pd.testing.assert_frame_equal(got.ratings, ml.ratings)
    movielens.load_movielens()  # cached now: no second fetch, nothing printed
    assert len(fake_fetch) == 1 and capsys.readouterr().out == ""


def test_load_ctr_and_load_din_fetch_on_first_use(fake_fetch, tmp_path, monkeypatch):
    from ctr_src.data import load_ctr
    from ctr_src.data.sequences import load_din
    monkeypatch.setenv("CTR_DATA_DIR", str(tmp_path / "a"))
    assert len(load_ctr().train) == 80_000
    assert fake_fetch == [tmp_path / "a"]
    din = load_din(data_dir=tmp_path / "b", download=True)
    assert fake_fetch == [tmp_path / "a", tmp_path / "b"] and len(din.train) > 0


def test_first_use_offline_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("could not download https://files.grouplens.org/...: no route")

    monkeypatch.setattr(movielens, "fetch", offline)
    monkeypatch.setenv("CTR_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(movielens.DataUnavailableError) as info:
        movielens.load_movielens()
    assert isinstance(info.value, DataError) and isinstance(info.value, ConnectionError)
    msg = str(info.value)
    for part in ("could not be downloaded", "offline", "no route", "python -m ctr_src.data fetch",
                 "CTR_DATA_DIR", str(tmp_path / "cache")):
        assert part in msg, part
    assert not (tmp_path / "cache" / movielens.CACHE_NAME).exists()


def test_a_named_data_dir_is_only_read_unless_download_is_asked(ml, fake_fetch, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="python -m ctr_src.data fetch"):
        movielens.load_movielens(tmp_path / "mine")
    assert fake_fetch == []
    monkeypatch.setenv("CTR_DATA_DIR", str(tmp_path / "default"))
    with pytest.raises(DataError):
        movielens.load_movielens(download=False)
    assert fake_fetch == []
    assert len(movielens.load_movielens(tmp_path / "mine", download=True).users) == 943
    assert fake_fetch == [tmp_path / "mine"]


def test_first_use_keeps_the_checksums(ml, fake_fetch, tmp_path, monkeypatch):
    """A corrupt cache is reported with the fix, not silently fetched again or trusted."""
    monkeypatch.setenv("CTR_DATA_DIR", str(tmp_path))
    movielens.load_movielens()
    items = tmp_path / movielens.CACHE_NAME / "items.csv"
    items.write_bytes(items.read_bytes().replace(b"Toy Story", b"Toy Storm"))
    with pytest.raises(DataError, match="SHA-256"):
        movielens.load_movielens()
    assert len(fake_fetch) == 1
