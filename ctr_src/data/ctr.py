"""MovieLens-100K framed as click-through-rate data.

Every rating becomes one *impression*; its label is 1 when the rating is 4 or 5
("the user liked what was shown") and 0 otherwise -- 55.375 % positives.

The default feature set has eight categorical **fields**:

=================  ===========================================================
``user_id``         943 users
``item_id``         1,682 movies
``age``             7 buckets: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+
``gender``          M / F
``occupation``      21 occupations
``zip``             first character of the zip code
``decade``          release decade of the movie (``unknown`` when missing)
``genre``           the movie's first genre (GroupLens order)
=================  ===========================================================

:class:`FieldEncoder` maps each field's values to indices ``1 .. n`` and keeps index
``0`` for ``<unk>``: values it has not seen **and** values it saw fewer than
``min_count`` times. :func:`load_ctr` fits it on the **training split only** with
``min_count=2`` (:data:`DEFAULT_MIN_COUNT`): a movie first rated in the test period, or
rated once in training, is ``<unk>`` -- whose embedding is therefore trained on the rare
values of the training data instead of staying at its random initialisation. The
mapping is invertible for every value in the vocabulary, so plots can show names rather
than numbers. ``field_dims[f]`` is the size of field ``f``'s vocabulary including
``<unk>``.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .movielens import MovieLens, load_movielens
from .tensors import TensorData

UNKNOWN = "<unk>"
AGE_BUCKETS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
_AGE_EDGES = (18, 25, 35, 45, 50, 56)
DEFAULT_FIELDS = ("user_id", "item_id", "age", "gender", "occupation", "zip", "decade", "genre")
POSITIVE_RATING = 4
DEFAULT_SEED = 2024
#: values seen fewer times than this in the training split map to ``<unk>`` (index 0)
DEFAULT_MIN_COUNT = 2


def age_bucket(age: int) -> str:
    """The MovieLens-1M age groups: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+."""
    return AGE_BUCKETS[int(np.searchsorted(_AGE_EDGES, age, side="right"))]


def impressions(ml: MovieLens | None = None) -> pd.DataFrame:
    """One row per rating with the raw value of every candidate field, the label and time.

    Rows follow the canonical ratings order (by user, then item).
    """
    ml = ml or load_movielens()
    df = ml.ratings.merge(ml.users, on="user_id", how="left", validate="many_to_one")
    df = df.merge(ml.items, on="item_id", how="left", validate="many_to_one")
    out = pd.DataFrame({
        "user_id": df["user_id"].astype("int64"),
        "item_id": df["item_id"].astype("int64"),
        "age": df["age"].map(age_bucket),
        "gender": df["gender"],
        "occupation": df["occupation"],
        "zip": df["zip_code"].str[0],
        "decade": df["release_year"].map(lambda y: "unknown" if pd.isna(y) else f"{int(y) // 10 * 10}s"),
        "genre": df["genres"].str.split("|").str[0],
        "rating": df["rating"].astype("int64"),
        "label": (df["rating"] >= POSITIVE_RATING).astype("int64"),
        "timestamp": df["timestamp"].astype("int64"),
    })
    return out


def _sorted_values(name: str, values: pd.Series, min_count: int = 1) -> list:
    if min_count > 1:
        counts = values.value_counts(dropna=False)
        values = pd.Series(counts.index[counts.to_numpy() >= min_count], dtype=values.dtype)
    uniq = pd.unique(values).tolist()  # Python scalars, not NumPy ones
    if name == "age":
        return [a for a in AGE_BUCKETS if a in set(uniq)]
    try:
        return sorted(uniq)
    except TypeError:
        return sorted(uniq, key=str)


@dataclass
class FieldEncoder:
    """Invertible value <-> index maps, one per field; index 0 is ``<unk>``."""

    fields: list[str]
    vocab: dict[str, list] = field(default_factory=dict)
    min_count: int = 1

    @classmethod
    def fit(cls, table: pd.DataFrame, fields: Sequence[str] = DEFAULT_FIELDS,
            min_count: int = 1) -> "FieldEncoder":
        """The vocabulary of each field of ``table``: every value that occurs at least
        ``min_count`` times gets an index ``1 .. n`` (sorted), all others map to 0.

        Fit it on training rows only, so that validation and test values never seen in
        training are ``<unk>``, as they would be in production.
        """
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"fit needs a pandas DataFrame, got {type(table).__name__}")
        if (not isinstance(min_count, (int, np.integer)) or isinstance(min_count, bool)
                or min_count < 1):
            raise ValueError(f"min_count must be an int >= 1 (1 keeps every value), got {min_count!r}")
        missing = [f for f in fields if f not in table.columns]
        if missing:
            raise ValueError(f"unknown field(s) {missing}; the table has {list(table.columns)}")
        enc = cls(list(fields), min_count=int(min_count))
        for f in fields:
            enc.vocab[f] = [UNKNOWN] + _sorted_values(f, table[f], int(min_count))
        enc._index = {f: {v: i for i, v in enumerate(enc.vocab[f])} for f in fields}
        return enc

    @property
    def field_dims(self) -> list[int]:
        return [len(self.vocab[f]) for f in self.fields]

    def index(self, field_name: str, value) -> int:
        """The index of ``value`` in ``field_name`` (0 if unseen)."""
        self._check_field(field_name)
        return self._index[field_name].get(value, 0)

    def encode(self, table: pd.DataFrame) -> np.ndarray:
        """``(N, F)`` int64 indices of the rows of ``table`` (unseen values -> 0)."""
        cols = []
        for f in self.fields:
            if f not in table.columns:
                raise ValueError(f"table lacks field {f!r}")
            mapping = self._index[f]
            cols.append(np.fromiter((mapping.get(v, 0) for v in table[f]), dtype=np.int64, count=len(table)))
        return np.stack(cols, axis=1) if cols else np.zeros((len(table), 0), dtype=np.int64)

    def decode(self, field_name: str, index):
        """The original value(s) behind index(es) of ``field_name``."""
        self._check_field(field_name)
        vocab = self.vocab[field_name]
        if np.ndim(index) == 0:
            return vocab[int(index)]
        return [vocab[int(i)] for i in np.asarray(index).reshape(-1)]

    def decode_rows(self, fields: np.ndarray) -> pd.DataFrame:
        """Turn an ``(N, F)`` index array back into a table of values."""
        fields = np.asarray(fields)
        return pd.DataFrame({f: self.decode(f, fields[:, j]) for j, f in enumerate(self.fields)})

    def _check_field(self, name: str) -> None:
        if name not in self.vocab:
            raise KeyError(f"unknown field {name!r}; the fields are {self.fields}")


# ----------------------------------------------------------------------------- splits

def random_split(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint train/valid/test row indices from a seeded permutation of ``range(n)``."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    return (np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_valid]),
            np.sort(perm[n_train + n_valid:]))


def temporal_split(users: np.ndarray, timestamps: np.ndarray,
                   fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   tiebreak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user split in time: each user's last impressions go to test, the ones
    before them to validation, the rest to train.

    Each user with ``n`` impressions gives ``max(1, round(f_test * n))`` to test and as many
    (by ``f_valid``) to validation, taken in order of (timestamp, ``tiebreak``); users
    with fewer than 3 impressions go wholly to train.
    """
    users = np.asarray(users)
    timestamps = np.asarray(timestamps)
    tiebreak = np.arange(len(users)) if tiebreak is None else np.asarray(tiebreak)
    order = np.lexsort((tiebreak, timestamps, users))
    u_sorted = users[order]
    cuts = np.flatnonzero(u_sorted[1:] != u_sorted[:-1]) + 1
    train, valid, test = [], [], []
    for idx in np.split(order, cuts):
        n = len(idx)
        if n < 3:
            train.append(idx)
            continue
        n_test = max(1, int(round(fractions[2] * n)))
        n_valid = max(1, int(round(fractions[1] * n)))
        train.append(idx[: n - n_test - n_valid])
        valid.append(idx[n - n_test - n_valid: n - n_test])
        test.append(idx[n - n_test:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    return cat(train), cat(valid), cat(test)


# ----------------------------------------------------------------------------- bundle

@dataclass
class CTRData:
    """MovieLens-100K as CTR data: the raw table, its encoding and three splits.

    ``train``, ``valid``, ``test`` are :class:`TensorData` with ``"fields"`` ``(N, F)`` long,
    ``"label"`` ``(N,)`` float, ``"user"`` ``(N,)`` long (raw user id, for GAUC) and
    ``"row"`` ``(N,)`` long (the row of :attr:`table`, for interpretation).
    """

    table: pd.DataFrame
    encoder: FieldEncoder
    fields: np.ndarray
    train: TensorData
    valid: TensorData
    test: TensorData
    split: str

    @property
    def field_names(self) -> list[str]:
        return list(self.encoder.fields)

    @property
    def field_dims(self) -> list[int]:
        return self.encoder.field_dims

    def to(self, device) -> "CTRData":
        """A copy (of the same class) whose three splits live on ``device``."""
        return dataclasses.replace(self, train=self.train.to(device), valid=self.valid.to(device),
                                   test=self.test.to(device))

    def summary(self) -> pd.DataFrame:
        rows = []
        for name in ("train", "valid", "test"):
            part = getattr(self, name)
            rows.append({"split": name, "impressions": len(part),
                         "positive rate": float(part["label"].float().mean())})
        return pd.DataFrame(rows).set_index("split")


def tensors_for(table: pd.DataFrame, fields: np.ndarray, index: np.ndarray) -> TensorData:
    """The :class:`TensorData` of rows ``index`` of the encoded table."""
    index = np.asarray(index, dtype=np.int64)
    return TensorData(
        fields=torch.from_numpy(np.ascontiguousarray(fields[index])),
        label=torch.from_numpy(table["label"].to_numpy()[index].astype(np.float32)),
        user=torch.from_numpy(table["user_id"].to_numpy()[index].astype(np.int64)),
        row=torch.from_numpy(index.copy()),
    )


def load_ctr(split: str = "random", seed: int = DEFAULT_SEED,
             fields: Sequence[str] = DEFAULT_FIELDS,
             fractions: Sequence[float] = (0.8, 0.1, 0.1),
             min_count: int = DEFAULT_MIN_COUNT,
             device=None, data_dir=None, download: bool | None = None) -> CTRData:
    """MovieLens-100K as CTR data, split, then encoded by a vocabulary of the training rows.

    ``split="random"`` (default: 80/10/10, seed 2024) or ``"temporal"`` (per user, in time).
    The :class:`FieldEncoder` is fitted on the training split only: a value seen fewer
    than ``min_count`` times there (default 2), or not at all, is ``<unk>`` (index 0).
    The data is fetched on first use (``download`` as in
    :func:`~ctr_src.data.movielens.load_movielens`).
    """
    table = impressions(load_movielens(data_dir, download=download))
    if split == "random":
        parts = random_split(len(table), fractions, seed)
    elif split == "temporal":
        parts = temporal_split(table["user_id"].to_numpy(), table["timestamp"].to_numpy(),
                               fractions, tiebreak=table["item_id"].to_numpy())
    else:
        raise ValueError(f"unknown split {split!r}; use 'random' or 'temporal'")
    if len(parts[0]) == 0:
        raise ValueError(f"the training split is empty (fractions={tuple(fractions)}): the "
                         "vocabulary is fitted on training rows; give train a positive share")
    encoder = FieldEncoder.fit(table.iloc[parts[0]], fields, min_count=min_count)
    encoded = encoder.encode(table)
    data = CTRData(table, encoder, encoded, *(tensors_for(table, encoded, p) for p in parts), split=split)
    return data.to(device) if device is not None else data


# ----------------------------------------------------------------------------- hand-crafted crosses

DEFAULT_CROSSES = (("gender", "genre"), ("age", "genre"))
CROSS_SEPARATOR = "\u00d7"  # the multiplication sign: "gender×genre", "F×Drama"


@dataclass
class CrossedCTRData(CTRData):
    """:class:`CTRData` whose splits also hold ``"cross"`` ``(N, C)`` long: the indices of
    ``C`` hand-crafted cross features (see :func:`add_crosses`).

    ``cross_encoder`` maps each cross's values (e.g. ``"F×Drama"``) to indices ``1 .. n``,
    ``0`` being ``<unk>`` (a combination never seen in training).
    """

    cross_encoder: FieldEncoder | None = None

    @property
    def cross_names(self) -> list[str]:
        return list(self.cross_encoder.fields)

    @property
    def cross_dims(self) -> list[int]:
        return self.cross_encoder.field_dims


def add_crosses(data: CTRData, pairs: Sequence[Sequence[str]] = DEFAULT_CROSSES
                ) -> tuple[CrossedCTRData, list[int]]:
    """Wide & Deep's hand-crafted *cross-product* features, one per pair of columns.

    For a pair ``("gender", "genre")`` each impression gets the value ``"F×Drama"`` (its
    gender and its genre joined by ``×``): a new categorical field that is 1 exactly when
    both conditions hold. The values are read from ``data.table`` (split rows are found
    through each split's ``"row"`` tensor) and encoded with a :class:`FieldEncoder` fitted
    on the **training rows only** (with the ``min_count`` of ``data.encoder``), so a
    combination first seen in validation or test, or too rare in training, maps to ``0``
    (``<unk>``), as it would in production.

    Returns ``(crossed, cross_dims)``: a copy of ``data`` whose ``train``, ``valid`` and
    ``test`` also hold ``"cross"`` ``(N, C)`` long (``C = len(pairs)``), and the vocabulary
    size of each cross (``<unk>`` included), to build ``WideAndDeep(..., cross_dims=...)``.
    ``data`` itself is left unchanged.
    """
    if isinstance(pairs, (str, bytes)) or not len(pairs):
        raise ValueError(f"pairs must be a non-empty sequence of (column, column) pairs, got {pairs!r}")
    table = data.table
    names, columns = [], {}
    for pair in pairs:
        if isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise ValueError(f"each cross is a pair of two column names, e.g. ('gender', 'genre'); "
                             f"got {pair!r}")
        a, b = pair
        missing = [c for c in (a, b) if c not in table.columns]
        if missing:
            raise ValueError(f"cannot cross {pair!r}: unknown column(s) {missing}; "
                             f"the table has {list(table.columns)}")
        if a == b:
            raise ValueError(f"cannot cross a column with itself: {pair!r}")
        name = f"{a}{CROSS_SEPARATOR}{b}"
        if name in columns:
            raise ValueError(f"the cross {name!r} is listed twice")
        names.append(name)
        columns[name] = table[a].astype(str) + CROSS_SEPARATOR + table[b].astype(str)
    crosses = pd.DataFrame(columns, index=table.index)
    train_rows = data.train["row"].cpu().numpy()
    encoder = FieldEncoder.fit(crosses.iloc[train_rows], names,
                               min_count=data.encoder.min_count)
    codes = encoder.encode(crosses)  # (N_table, C): every row of the table

    def attach(part: TensorData) -> TensorData:
        rows = part["row"].cpu().numpy()
        cross = torch.from_numpy(np.ascontiguousarray(codes[rows])).to(part.device)
        return TensorData(dict(part.tensors, cross=cross))

    crossed = CrossedCTRData(data.table, data.encoder, data.fields, attach(data.train),
                             attach(data.valid), attach(data.test), data.split, encoder)
    return crossed, crossed.cross_dims
