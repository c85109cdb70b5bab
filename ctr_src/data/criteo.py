"""Your own logs in the Criteo Display Advertising Challenge format.

**The format.** One impression per line, 40 tab-separated columns: the label (``0`` or
``1``), the integer features ``I1 .. I13`` (counts; possibly empty, possibly negative) and
the categorical features ``C1 .. C26`` (hexadecimal hashes, e.g. ``68fd1e64``; possibly
empty). No header. Plain text or gzip (recognised by its magic bytes, not its name).

**Reading.** :func:`load_criteo` streams the file in chunks of ``chunk_size`` lines: it
never holds the raw text, only the parsed numbers (about 330 bytes per impression:
int64 codes, so ``max_rows`` is the knob for large files -- the full Kaggle ``train.txt``,
45 M rows, needs about 15 GB this way). Every line is checked; a malformed one (wrong
column count, a non-integer in an ``I`` column, a non-hex value in a ``C`` column, a label
that is not 0/1) raises :class:`CriteoFormatError` naming the file, the line number and
what is wrong; a truncated or corrupt ``.gz`` raises it too. Nothing is cached, so nothing
can be left half-written.

**Integer features** (``dense=``):

* ``"bucket"`` (default) -- the Kaggle winners' discretisation: ``x > 2`` goes to bucket
  ``floor(log(x)^2)`` (token ``"b<k>"``), every ``x <= 2`` (negatives included) is a bucket
  of its own (token ``"x=<x>"``), an empty value is the token ``"<missing>"``. Field
  ``I<k>``. Bounded inputs, no scale to tune, and what the strong published pipelines do.
* ``"value"`` -- a real-valued field ``I<k>_value`` with two indices: ``1`` (present) with
  value ``log1p(max(x, 0))`` (counts are heavy-tailed; the log keeps the scaled vectors in
  range, negatives are clipped to 0), and ``0`` (``<unk>``: missing) with value ``1.0``,
  so the missing indicator has a vector of its own that trains.
* ``"both"`` -- the 13 bucket fields and then the 13 value fields.

With ``"value"`` or ``"both"`` the splits carry ``"values"`` ``(N, F)`` float (1 for every
categorical field), which scales each field's vector as chapter 3 derives.

**Categorical features.** An empty value is the token ``"<missing>"``, a value like any
other. Hex values are compared as numbers (``"0A"`` is ``"a"``; at most 15 digits: the
Criteo files have 8). By default each field gets a vocabulary fitted on the **training
rows only**: values seen fewer than ``min_count`` times there (default 10, as is usual for
Criteo) or never seen map to ``<unk>`` (index 0), as :mod:`.ctr` does for MovieLens; the
same rule applies to the integer buckets. With ``hash_size=H`` a categorical field instead
has ``H`` indices: ``0`` for an empty value, ``1 + crc32(v) % (H - 1)`` otherwise, where
``v`` is the value as 8 little-endian bytes -- a stable hash (``zlib.crc32``, not Python's
salted ``hash``): the same index in every process, no vocabulary to fit or keep,
collisions instead of ``<unk>`` (``min_count`` is then not used for those fields).

**Split.** ``split="random"`` (default): a seeded permutation of the impressions,
80/10/10, via :func:`.ctr.random_split`; ``split="sequential"``: in file order, the first
80 % train, the next 10 % validation, the last 10 % test (the Kaggle file is in time order).

:func:`write_synthetic` writes a clearly synthetic Criteo-format file (empty fields,
negative counts and a learnable signal) for the tests and the appendix. No Criteo data
is ever committed.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import math
import os
import re
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .ctr import DEFAULT_SEED, UNKNOWN, FieldEncoder, random_split
from .movielens import DataError
from .tensors import TensorData

N_INT, N_CAT = 13, 26
N_COLUMNS = 1 + N_INT + N_CAT
INT_NAMES = tuple(f"I{k}" for k in range(1, N_INT + 1))
CAT_NAMES = tuple(f"C{k}" for k in range(1, N_CAT + 1))
MISSING = "<missing>"
DENSE_MODES = ("bucket", "value", "both")
#: values (and buckets) seen fewer times than this in the training rows map to ``<unk>``
DEFAULT_MIN_COUNT = 10
DEFAULT_CHUNK_SIZE = 100_000
MAX_HEX_DIGITS = 15  # int64 codes; the Criteo files use 8

_INT_RE = r"(-?[0-9]*)"
_HEX_RE = r"([0-9a-fA-F]{0,%d})" % MAX_HEX_DIGITS
_LINE = re.compile(rb"([01])" + (rb"\t" + _INT_RE.encode()) * N_INT
                   + (rb"\t" + _HEX_RE.encode()) * N_CAT + rb"\r?\n?", re.ASCII)
_INT_ONE = re.compile(rb"-?[0-9]+", re.ASCII)
_HEX_ONE = re.compile(rb"[0-9a-fA-F]+", re.ASCII)
_GZIP_MAGIC = b"\x1f\x8b"

# keys of the bucket fields: x <= 2 -> x; missing -> 3; x > 2 -> 4 + floor(log(x)^2)
_KEY_MISSING_INT = 3
_KEY_MISSING_CAT = -1


class CriteoFormatError(DataError):
    """A Criteo-format file has a malformed line, or is a truncated/corrupt gzip.

    ``path`` and ``line`` (1-based; ``None`` where no single line is at fault) say where.
    """

    def __init__(self, path, line: int | None, what: str):
        where = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {what}")
        self.path, self.line, self.what = str(path), line, what


# ----------------------------------------------------------------------------- transforms

def bucket(x: int | None) -> str:
    """The bucket token of one integer value (the per-value definition; the reader does the
    same thing vectorised): ``None`` -> ``"<missing>"``, ``x <= 2`` -> ``"x=<x>"``,
    ``x > 2`` -> ``"b<floor(log(x)^2)>"``."""
    if x is None:
        return MISSING
    if x <= 2:
        return f"x={x}"
    return f"b{math.floor(math.log(x) ** 2)}"


def _bucket_keys(ints: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Integer keys of the bucket tokens (same order of magnitude, disjoint ranges)."""
    keys = np.where(present, ints, _KEY_MISSING_INT)
    big = present & (ints > 2)
    if big.any():
        uniq, inv = np.unique(ints[big], return_inverse=True)
        # math.log per distinct value: the exact same floats as bucket() above
        b = np.fromiter((math.floor(math.log(int(u)) ** 2) for u in uniq), dtype=np.int64,
                        count=len(uniq))
        keys[big] = 4 + b[inv]
    return keys


def _bucket_token(key: int) -> str:
    if key == _KEY_MISSING_INT:
        return MISSING
    return f"x={key}" if key <= 2 else f"b{key - 4}"


def _cat_token(key: int) -> str:
    return MISSING if key == _KEY_MISSING_CAT else format(key, "08x")


def dense_value(x: int | None) -> float:
    """The real value of an integer feature: ``log1p(max(x, 0))``; ``1.0`` when missing."""
    return 1.0 if x is None else math.log1p(max(x, 0))


def hash_index(code: int, hash_size: int) -> int:
    """Index of a categorical value (as its integer) in a hashed field of ``hash_size``:
    ``1 + crc32(code as 8 little-endian bytes) % (hash_size - 1)``; 0 is kept for empty."""
    return 1 + zlib.crc32(int(code).to_bytes(8, "little")) % (hash_size - 1)


# ----------------------------------------------------------------------------- parsing

def _diagnose(line: bytes) -> str:
    """Why ``line`` does not match the format (only called on a bad line)."""
    cols = line.rstrip(b"\r\n").split(b"\t")
    if len(cols) != N_COLUMNS:
        return (f"expected {N_COLUMNS} tab-separated columns (label, I1-I13, C1-C26), "
                f"found {len(cols)}")
    if cols[0] not in (b"0", b"1"):
        return f"the label must be 0 or 1, found {cols[0]!r}"
    for name, v in zip(INT_NAMES, cols[1:1 + N_INT]):
        if v and not _INT_ONE.fullmatch(v):
            return f"column {name} must be an integer or empty, found {v!r}"
    for name, v in zip(CAT_NAMES, cols[1 + N_INT:]):
        if v and not _HEX_ONE.fullmatch(v):
            return f"column {name} must be hexadecimal or empty, found {v!r}"
        if len(v) > MAX_HEX_DIGITS:
            return f"column {name} has more than {MAX_HEX_DIGITS} hex digits: {v!r}"
    return f"unexpected characters in {line[:120]!r}"  # e.g. a stray byte after the last column


def _parse_chunk(lines: list[bytes], first_line: int, path):
    """Parse a list of raw lines into (labels, ints, int_present, cats) arrays."""
    n = len(lines)
    labels = np.empty(n, dtype=np.int8)
    ints = np.zeros((n, N_INT), dtype=np.int64)
    present = np.zeros((n, N_INT), dtype=bool)
    cats = np.full((n, N_CAT), _KEY_MISSING_CAT, dtype=np.int64)
    match = _LINE.fullmatch
    for r, line in enumerate(lines):
        m = match(line)
        if m is None:
            raise CriteoFormatError(path, first_line + r, _diagnose(line))
        g = m.groups()
        labels[r] = g[0] == b"1"
        for j in range(N_INT):
            v = g[1 + j]
            if v:
                if v == b"-":
                    raise CriteoFormatError(path, first_line + r,
                                            f"column {INT_NAMES[j]} must be an integer or "
                                            f"empty, found {v!r}")
                ints[r, j] = int(v)
                present[r, j] = True
        for j in range(N_CAT):
            v = g[1 + N_INT + j]
            if v:
                cats[r, j] = int(v, 16)
    return labels, ints, present, cats


def _open(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def read_criteo(path, max_rows: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Parse a Criteo-format file (plain or gzip) chunk by chunk.

    Returns ``(labels (N,) int8, ints (N, 13) int64, present (N, 13) bool,
    cats (N, 26) int64)``; an empty categorical value is ``-1``, a hex value its integer.
    """
    path = Path(path)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 0):
        raise ValueError(f"max_rows must be a non-negative int or None, got {max_rows!r}")
    parts = []
    done = 0
    try:
        with _open(path) as f:
            while max_rows is None or done < max_rows:
                want = chunk_size if max_rows is None else min(chunk_size, max_rows - done)
                lines = list(itertools.islice(f, want))
                if not lines:
                    break
                parts.append(_parse_chunk(lines, done + 1, path))
                done += len(lines)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CriteoFormatError(path, None, f"truncated or corrupt gzip file after {done} "
                                f"complete lines read ({type(exc).__name__}: {exc})") from exc
    if not parts:
        return (np.zeros(0, np.int8), np.zeros((0, N_INT), np.int64),
                np.zeros((0, N_INT), bool), np.zeros((0, N_CAT), np.int64))
    return tuple(np.concatenate(p) for p in zip(*parts))


# ----------------------------------------------------------------------------- bundle

@dataclass
class CriteoData:
    """Criteo-format data, encoded and split; trains with :func:`ctr_src.train.fit`.

    ``train``, ``valid``, ``test`` are :class:`TensorData` with ``"fields"`` ``(N, F)``
    long, ``"label"`` ``(N,)`` float, ``"row"`` ``(N,)`` long (the impression's 0-based
    position in the file) and, for ``dense="value"``/``"both"``, ``"values"`` ``(N, F)``
    float. ``encoder`` holds the vocabularies of the fields that have one (every field
    but the hashed ones), so ``encoder.decode("C3", i)`` gives the hex value back.
    """

    field_names: list[str]
    field_dims: list[int]
    encoder: FieldEncoder
    train: TensorData
    valid: TensorData
    test: TensorData
    split: str
    dense: str
    hash_size: int | None

    @property
    def value_fields(self) -> list[int]:
        """Positions of the real-valued fields (``I<k>_value``): ``[]`` for
        ``dense="bucket"``, ``0..12`` for ``"value"``, ``13..25`` for
        ``"both"`` -- e.g. :class:`~ctr_src.models.WideAndDeep`'s
        ``dense_fields``."""
        return [i for i, name in enumerate(self.field_names)
                if name.endswith("_value")]

    def to(self, device) -> "CriteoData":
        """A copy whose three splits live on ``device``."""
        return dataclasses.replace(self, train=self.train.to(device), valid=self.valid.to(device),
                                   test=self.test.to(device))

    def summary(self) -> pd.DataFrame:
        rows = [{"split": name, "impressions": len(getattr(self, name)),
                 "positive rate": float(getattr(self, name)["label"].float().mean())
                 if len(getattr(self, name)) else float("nan")}
                for name in ("train", "valid", "test")]
        return pd.DataFrame(rows).set_index("split")


def _fit_keys(train_keys: np.ndarray, min_count: int) -> np.ndarray:
    uniq, counts = np.unique(train_keys, return_counts=True)
    return uniq[counts >= min_count]  # sorted


def _encode_keys(keys: np.ndarray, kept: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(kept, keys)
    pos_c = np.minimum(pos, max(len(kept) - 1, 0))
    hit = (pos < len(kept)) & (kept[pos_c] == keys) if len(kept) else np.zeros(len(keys), bool)
    return np.where(hit, pos + 1, 0)


def load_criteo(path, *, dense: str = "bucket", min_count: int = DEFAULT_MIN_COUNT,
                hash_size: int | None = None, split: str = "random",
                fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = DEFAULT_SEED,
                max_rows: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                device=None) -> CriteoData:
    """Read, split and encode a Criteo-format file (see the module docstring).

    * ``dense``: ``"bucket"`` (default), ``"value"`` or ``"both"`` -- how ``I1 .. I13``
      become fields;
    * ``min_count``: training-row count below which a value is ``<unk>`` (default 10);
    * ``hash_size``: hash the categorical fields into this many indices each (default:
      a vocabulary per field);
    * ``split``: ``"random"`` (seeded permutation, ``seed``) or ``"sequential"`` (file
      order), by ``fractions``;
    * ``max_rows``: read at most this many impressions; ``chunk_size``: lines per chunk.
    """
    if dense not in DENSE_MODES:
        raise ValueError(f"dense must be one of {DENSE_MODES}, got {dense!r}")
    if (not isinstance(min_count, (int, np.integer)) or isinstance(min_count, bool)
            or min_count < 1):
        raise ValueError(f"min_count must be an int >= 1 (1 keeps every value), got {min_count!r}")
    if hash_size is not None and (not isinstance(hash_size, int) or hash_size < 2):
        raise ValueError(f"hash_size must be an int >= 2 or None, got {hash_size!r}")
    labels, ints, present, cats = read_criteo(path, max_rows=max_rows, chunk_size=chunk_size)
    n = len(labels)
    if n == 0:
        raise CriteoFormatError(path, None, "no impressions to read (empty file or max_rows=0)")
    if split == "random":
        parts = random_split(n, fractions, seed)
    elif split == "sequential":
        if (len(fractions) != 3 or any(f < 0 for f in fractions)
                or not np.isclose(sum(fractions), 1.0)):
            raise ValueError(f"fractions must be three non-negative numbers summing to 1, "
                             f"got {fractions}")
        n_train, n_valid = int(round(fractions[0] * n)), int(round(fractions[1] * n))
        rows = np.arange(n)
        parts = (rows[:n_train], rows[n_train:n_train + n_valid], rows[n_train + n_valid:])
    else:
        raise ValueError(f"unknown split {split!r}; use 'random' or 'sequential'")
    train_rows = parts[0]
    if len(train_rows) == 0:
        raise ValueError(f"the training split is empty ({n} rows, fractions={tuple(fractions)})")

    names, dims, columns, value_cols = [], [], [], []
    vocab: dict[str, list] = {}
    if dense in ("bucket", "both"):
        for j, name in enumerate(INT_NAMES):
            keys = _bucket_keys(ints[:, j], present[:, j])
            kept = _fit_keys(keys[train_rows], min_count)
            vocab[name] = [UNKNOWN] + [_bucket_token(int(k)) for k in kept]
            names.append(name), dims.append(len(kept) + 1)
            columns.append(_encode_keys(keys, kept)), value_cols.append(None)
    if dense in ("value", "both"):
        for j, name in enumerate(INT_NAMES):
            name = f"{name}_value"
            vocab[name] = [UNKNOWN, "present"]
            names.append(name), dims.append(2)
            columns.append(present[:, j].astype(np.int64))
            value_cols.append(np.where(present[:, j], np.log1p(np.maximum(ints[:, j], 0)), 1.0))
    for j, name in enumerate(CAT_NAMES):
        keys = cats[:, j]
        if hash_size is None:
            kept = _fit_keys(keys[train_rows], min_count)
            vocab[name] = [UNKNOWN] + [_cat_token(int(k)) for k in kept]
            names.append(name), dims.append(len(kept) + 1)
            columns.append(_encode_keys(keys, kept))
        else:
            uniq, inv = np.unique(keys, return_inverse=True)
            idx = np.fromiter((0 if u == _KEY_MISSING_CAT else hash_index(int(u), hash_size)
                               for u in uniq), dtype=np.int64, count=len(uniq))
            names.append(name), dims.append(hash_size)
            columns.append(idx[inv.reshape(-1)])
        value_cols.append(None)

    encoder = FieldEncoder([f for f in names if f in vocab], vocab, min_count=int(min_count))
    encoder._index = {f: {v: i for i, v in enumerate(vocab[f])} for f in encoder.fields}
    fields = np.stack(columns, axis=1).astype(np.int64)
    values = None
    if dense != "bucket":
        values = np.stack([np.ones(n) if v is None else v for v in value_cols],
                          axis=1).astype(np.float32)
    label = labels.astype(np.float32)

    def part(index: np.ndarray) -> TensorData:
        index = np.asarray(index, dtype=np.int64)
        t = {"fields": torch.from_numpy(np.ascontiguousarray(fields[index])),
             "label": torch.from_numpy(label[index]),
             "row": torch.from_numpy(index.copy())}
        if values is not None:
            t["values"] = torch.from_numpy(np.ascontiguousarray(values[index]))
        return TensorData(t)

    data = CriteoData(names, dims, encoder, *(part(p) for p in parts), split=split,
                      dense=dense, hash_size=hash_size)
    return data.to(device) if device is not None else data


# ----------------------------------------------------------------------------- synthetic data

def write_synthetic(path, n_rows: int, seed: int = 0, gz: bool = False) -> Path:
    """Write ``n_rows`` **synthetic** impressions in the Criteo format to ``path``.

    Nothing in it comes from Criteo: counts are drawn from geometric distributions
    (``I2`` also takes the values -1 .. -3, as in the real logs), hex values from a small
    Zipf-like vocabulary per field, and each column is empty with a probability of 5-45 %.
    The click probability depends on ``C1``, ``C2`` x ``C3`` (an interaction), ``I1`` and
    ``I3``, so a model has a signal to learn. Deterministic in ``seed``; ``gz=True``
    writes gzip (with a fixed timestamp, so the bytes are reproducible). The file is
    written to a temporary name and renamed into place.
    """
    if not isinstance(n_rows, int) or n_rows < 0:
        raise ValueError(f"n_rows must be a non-negative int, got {n_rows!r}")
    rng = np.random.default_rng(seed)
    path = Path(path)
    p_missing = rng.uniform(0.05, 0.45, size=N_COLUMNS - 1)
    ints = rng.geometric(rng.uniform(0.01, 0.3, size=N_INT), size=(n_rows, N_INT)) - 1
    ints[:, 1] = np.where(rng.random(n_rows) < 0.1, -rng.integers(1, 4, n_rows), ints[:, 1])
    sizes = rng.integers(3, 400, size=N_CAT)
    sizes[:3] = (20, 6, 6)
    hexes = [rng.integers(0, 2 ** 32, size=s) for s in sizes]
    cat_idx = np.stack([np.minimum(rng.zipf(1.3, n_rows) - 1, s - 1) for s in sizes], axis=1)
    effect_c1 = rng.normal(0, 1.5, size=sizes[0])
    effect_c23 = rng.normal(0, 1.0, size=(sizes[1], sizes[2]))
    logit = (-1.0 + effect_c1[cat_idx[:, 0]] + effect_c23[cat_idx[:, 1], cat_idx[:, 2]]
             + 0.6 * np.log1p(ints[:, 0]) - 0.4 * np.log1p(np.maximum(ints[:, 2], 0)))
    logit = logit - np.median(logit) - 0.7
    label = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)
    empty = rng.random((n_rows, N_COLUMNS - 1)) < p_missing
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") if gz else raw
            for r in range(n_rows):
                cols = [str(label[r])]
                cols += ["" if empty[r, j] else str(ints[r, j]) for j in range(N_INT)]
                cols += ["" if empty[r, N_INT + j] else format(hexes[j][cat_idx[r, j]], "08x")
                         for j in range(N_CAT)]
                out.write(("\t".join(cols) + "\n").encode("ascii"))
            if gz:
                out.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
