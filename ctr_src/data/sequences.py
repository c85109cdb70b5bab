"""Behaviour histories for the Deep Interest Network.

For every impression -- user ``u`` shown movie ``i`` at time ``t`` -- the *behaviour history*
is the list of movies ``u`` rated **positively** (label 1) **strictly before** ``t``:

* **equal timestamps are not history.** MovieLens stores ratings to the second and users
  often rate a batch of films in the same second; their order inside that second is unknown,
  so none of them counts as having happened before the others. This also guarantees that
  an impression's own movie is never part of its own history;
* the history keeps the **most recent** ``max_len`` such movies, oldest first, and is padded
  on the right to length ``max_len``. A boolean mask (``True`` = real position) says which
  positions are real; the padded positions hold index 0 but the **mask**, not the index,
  marks them, so a model must ignore them whatever they hold;
* movies the encoder does not know (index 0, ``<unk>``) are left out *before* the window is
  taken, so the window holds up to ``max_len`` known movies;
* an impression with no earlier positive rating has an **empty history**: all-false mask.

Every position carries one index per *sequence field* -- by default the movie
(``item_id``) and its genre (``genre``) -- so ``history`` is ``(N, L, S)`` with ``S = 2``.
The indices are those of the fields in the encoder, so history entries share their
embedding rows with the candidate movie and its genre.

:func:`load_din` puts it together with the per-user temporal split of
:func:`~ctr_src.data.ctr.temporal_split` (each user's last impressions are the test set,
the ones before them validation, the rest training), so no history and no training row
ever reach into a test impression's future.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .ctr import DEFAULT_FIELDS, DEFAULT_MIN_COUNT, DEFAULT_SEED, CTRData, FieldEncoder, load_ctr, tensors_for
from .tensors import TensorData

DEFAULT_MAX_LEN = 20
DEFAULT_SEQ_FIELDS = ("item_id", "genre")
_REQUIRED = ("user_id", "item_id", "timestamp", "label")


@dataclass
class Histories:
    """Behaviour histories of the rows of a table (one per impression).

    * ``history``: ``(N, L, S)`` int64 -- per position, the index of the past movie in each
      sequence field (``fields``), 0 at padded positions;
    * ``mask``: ``(N, L)`` bool -- ``True`` at real positions; real positions come first;
    * ``rows``: ``(N, L)`` int64 -- the table row of each past rating, ``-1`` at padding
      (use it to check timestamps, or to look the movies up).
    """

    history: np.ndarray
    mask: np.ndarray
    rows: np.ndarray
    fields: tuple[str, ...]

    @property
    def max_len(self) -> int:
        return self.mask.shape[1]

    @property
    def lengths(self) -> np.ndarray:
        """Number of real positions per impression, ``(N,)``."""
        return self.mask.sum(1)

    def __len__(self) -> int:
        return self.mask.shape[0]


def _check_table(table: pd.DataFrame) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a CTRData or a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks column(s) {missing}; a history needs {list(_REQUIRED)} "
                         f"(build it with ctr_src.data.impressions)")
    labels = table["label"].to_numpy()
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("column 'label' must hold 0/1 labels")


def _encode_column(encoder: FieldEncoder, name: str, values: pd.Series) -> np.ndarray:
    """Indices of one field's values (0 for values the encoder has not seen)."""
    inverse, uniques = pd.factorize(values, use_na_sentinel=False)
    lookup = np.fromiter((encoder.index(name, v) for v in uniques), dtype=np.int64, count=len(uniques))
    return lookup[inverse] if len(values) else np.zeros(0, dtype=np.int64)


def build_histories(source: CTRData | pd.DataFrame, max_len: int = DEFAULT_MAX_LEN,
                    encoder: FieldEncoder | None = None,
                    seq_fields: Sequence[str] = DEFAULT_SEQ_FIELDS) -> Histories:
    """The behaviour history of every row of ``source`` (see the module docstring).

    ``source`` is a :class:`~ctr_src.data.CTRData` (its ``table`` and ``encoder`` are used)
    or an impressions table with columns ``user_id``, ``item_id``, ``timestamp``, ``label``
    and the ``seq_fields``; a table needs an ``encoder`` that knows the ``seq_fields``.
    The first sequence field names the item: a past rating whose item it encodes as 0
    (unknown) is not part of any history. Runs in vectorised NumPy (no loop over users).
    """
    if isinstance(source, CTRData):
        table, encoder = source.table, encoder or source.encoder
    else:
        table = source
    _check_table(table)
    if encoder is None:
        raise ValueError("a plain table needs the encoder that gives the field indices: "
                         "build_histories(table, encoder=data.encoder)")
    if not isinstance(max_len, (int, np.integer)) or isinstance(max_len, bool) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    seq_fields = tuple(seq_fields)
    if not seq_fields:
        raise ValueError("seq_fields must name at least the item field, e.g. ('item_id',)")
    for f in seq_fields:
        if f not in encoder.fields:
            raise ValueError(f"sequence field {f!r} is not a field of the encoder ({encoder.fields})")
        if f not in table.columns:
            raise ValueError(f"the table lacks the sequence field {f!r}")

    n = len(table)
    codes = np.stack([_encode_column(encoder, f, table[f]) for f in seq_fields], axis=1)

    users = table["user_id"].to_numpy()
    times = table["timestamp"].to_numpy().astype(np.int64)
    if n and times.min() < 0:
        raise ValueError("timestamps must be non-negative (seconds since the epoch)")
    # One sortable key per rating: users apart, then time. Users are ranked 0..U-1 first so
    # the key cannot overflow whatever the raw ids are.
    _, user_rank = np.unique(users, return_inverse=True)
    span = int(times.max()) + 1 if n else 1
    key = user_rank.astype(np.int64) * span + times
    # the candidate history entries: positive ratings of known items, sorted by (user, time, row)
    pos = np.flatnonzero((table["label"].to_numpy() == 1) & (codes[:, 0] != 0))
    pos = pos[np.lexsort((pos, key[pos]))]
    pos_key = key[pos]
    # end: how many entries come strictly before (user, t) -- side="left" leaves out equal times;
    # start: where this user's entries begin.
    end = np.searchsorted(pos_key, key, side="left")
    start = np.searchsorted(pos_key, user_rank.astype(np.int64) * span, side="left")
    length = np.minimum(end - start, max_len)
    first = end - length  # the window is the last `length` entries before `end`
    offsets = np.arange(max_len)
    mask = offsets[None, :] < length[:, None]
    take = np.where(mask, first[:, None] + offsets[None, :], 0)
    rows = np.where(mask, pos[take] if len(pos) else -1, -1).astype(np.int64)
    history = np.where(mask[..., None], codes[np.maximum(rows, 0)], 0).astype(np.int64)
    return Histories(history=history, mask=mask, rows=rows, fields=seq_fields)


@dataclass
class DINData(CTRData):
    """MovieLens-100K with behaviour histories, split in time per user.

    A :class:`~ctr_src.data.CTRData` (``field_dims``, ``encoder``, ``table``, ``train``,
    ``valid``, ``test``, ``to``) whose splits also carry ``"history"`` ``(N, L, S)`` long and
    ``"history_mask"`` ``(N, L)`` bool. ``seq_fields`` are the positions of the sequence
    fields among the fields -- pass them to the model:
    ``models.build("din", field_dims=data.field_dims, seq_fields=data.seq_fields)``.
    """

    histories: Histories
    seq_fields: tuple[int, ...]

    @property
    def max_len(self) -> int:
        return self.histories.max_len

    def summary(self) -> pd.DataFrame:
        out = super().summary()
        lengths = {name: getattr(self, name)["history_mask"].sum(1).float() for name in out.index}
        out["mean history length"] = [float(lengths[n].mean()) for n in out.index]
        out["empty histories"] = [float((lengths[n] == 0).float().mean()) for n in out.index]
        return out


def with_histories(data: CTRData, max_len: int = DEFAULT_MAX_LEN,
                   seq_fields: Sequence[str] = DEFAULT_SEQ_FIELDS) -> DINData:
    """Add behaviour histories to every split of ``data`` (best with ``split="temporal"``)."""
    hist = build_histories(data, max_len, seq_fields=seq_fields)
    parts = []
    for part in (data.train, data.valid, data.test):
        index = part["row"].cpu().numpy()
        td = tensors_for(data.table, data.fields, index)
        parts.append(TensorData(dict(td.tensors,
                                     history=torch.from_numpy(hist.history[index]),
                                     history_mask=torch.from_numpy(hist.mask[index]))))
    positions = tuple(data.encoder.fields.index(f) for f in seq_fields)
    train, valid, test = parts
    return DINData(data.table, data.encoder, data.fields, train, valid, test, data.split,
                   histories=hist, seq_fields=positions)


def load_din(max_len: int = DEFAULT_MAX_LEN, seq_fields: Sequence[str] = DEFAULT_SEQ_FIELDS,
             fields: Sequence[str] = DEFAULT_FIELDS, fractions: Sequence[float] = (0.8, 0.1, 0.1),
             seed: int = DEFAULT_SEED, min_count: int = DEFAULT_MIN_COUNT, device=None,
             data_dir=None, download: bool | None = None) -> DINData:
    """MovieLens-100K for DIN: the temporal split with a history of ``max_len`` per impression.

    The vocabulary is that of the training split (``min_count`` as in
    :func:`~ctr_src.data.load_ctr`); a movie it maps to ``<unk>`` is never part of a history.
    The data is fetched on first use (``download`` as in :func:`~ctr_src.data.load_ctr`).
    """
    missing = [f for f in seq_fields if f not in fields]
    if missing:
        raise ValueError(f"sequence field(s) {missing} must also be among the fields {list(fields)}")
    data = load_ctr(split="temporal", seed=seed, fields=fields, fractions=fractions,
                    min_count=min_count, data_dir=data_dir, download=download)
    out = with_histories(data, max_len, seq_fields)
    return out.to(device) if device is not None else out


__all__ = ["Histories", "DINData", "build_histories", "with_histories", "load_din",
           "DEFAULT_MAX_LEN", "DEFAULT_SEQ_FIELDS"]
