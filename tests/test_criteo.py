"""The Criteo-format reader, on files the tests generate (never real Criteo data)."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
import zlib
from collections import Counter

import numpy as np
import pytest
import torch

from ctr_src import models, train, utils
from ctr_src.data import CriteoFormatError, load_criteo, write_synthetic
from ctr_src.data import criteo

# hand-written edge cases: empty fields, negatives, x <= 2, big values, upper-case hex
EDGE_LINES = [
    "1\t" + "\t" * 12 + "\t" + "\t" * 25,                         # everything empty
    "0\t-3\t-1\t0\t1\t2\t3\t8\t100\t123456\t\t7\t\t2\t"
    + "\t".join(["0000000A", "ffffffff", "", "68fd1e64"] + ["1"] * 22),
    "1\t5\t-2\t\t\t\t\t\t\t\t\t\t\t999999999\t" + "\t".join(["abc"] * 26),
]


def reference_rows(path):
    """The literal per-line reading of the format: one dict per impression."""
    opener = gzip.open if str(path).endswith(".gz") else open
    rows = []
    with opener(path, "rt") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            ints = [int(v) if v else None for v in cols[1:14]]
            rows.append({
                "label": int(cols[0]),
                "bucket": [criteo.MISSING if x is None else
                           (f"x={x}" if x <= 2 else f"b{math.floor(math.log(x) ** 2)}")
                           for x in ints],
                "value": [1.0 if x is None else math.log1p(max(x, 0)) for x in ints],
                "present": [x is not None for x in ints],
                "cat": [int(v, 16) if v else None for v in cols[14:]],
            })
    return rows


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A synthetic file with the hand-written edge lines appended."""
    path = tmp_path_factory.mktemp("criteo") / "synthetic.txt"
    write_synthetic(path, 600, seed=3)
    with open(path, "a") as f:
        f.write("\n".join(EDGE_LINES) + "\n")
    return path


@pytest.fixture(scope="module")
def synth_gz(synth):
    gz = synth.with_name("synthetic.txt.gz")
    gz.write_bytes(gzip.compress(synth.read_bytes()))
    return gz


def all_train(path, **kw):
    return load_criteo(path, split="sequential", fractions=(1.0, 0.0, 0.0), **kw)


def tensors_equal(a, b):
    return all(torch.equal(getattr(a, s)[k], getattr(b, s)[k])
               for s in ("train", "valid", "test") for k in getattr(a, s).keys())


# ----------------------------------------------------------------------------- values

def test_round_trip_against_reference(synth):
    ref = reference_rows(synth)
    data = all_train(synth, dense="both", min_count=1)
    t = data.train
    assert len(t) == len(ref) == 603
    assert data.field_names == ([f"I{k}" for k in range(1, 14)]
                                + [f"I{k}_value" for k in range(1, 14)]
                                + [f"C{k}" for k in range(1, 27)])
    assert t["label"].tolist() == [r["label"] for r in ref]
    fields, values = t["fields"].numpy(), t["values"].numpy()
    enc = data.encoder
    for i, r in enumerate(ref):
        assert [enc.decode(f"I{k + 1}", fields[i, k]) for k in range(13)] == r["bucket"]
        assert fields[i, 13:26].tolist() == [int(p) for p in r["present"]]
        np.testing.assert_allclose(values[i, 13:26], r["value"], rtol=1e-6)
        assert (values[i, :13] == 1).all() and (values[i, 26:] == 1).all()
        cats = [enc.decode(f"C{k + 1}", fields[i, 26 + k]) for k in range(26)]
        assert cats == [criteo.MISSING if c is None else format(c, "08x") for c in r["cat"]]
    # the edge lines: negatives and x <= 2 are their own buckets, hex compared as numbers
    assert [enc.decode(f"I{k + 1}", fields[601, k]) for k in range(9)] == [
        "x=-3", "x=-1", "x=0", "x=1", "x=2", "b1", "b4", "b21", "b137"]
    assert enc.decode("C1", fields[601, 26]) == "0000000a"
    assert (fields[600, 13:26] == 0).all() and (values[600, 13:26] == 1).all()


def test_bucket_function_matches_reader():
    assert [criteo.bucket(x) for x in (None, -5, 0, 2, 3, 20, 10**6)] == [
        "<missing>", "x=-5", "x=0", "x=2", "b1", "b8", "b190"]


def test_dense_modes_and_values_tensor(synth):
    bucket = all_train(synth, min_count=1)
    value = all_train(synth, dense="value", min_count=1)
    assert bucket.dense == "bucket" and "values" not in bucket.train
    assert len(bucket.field_dims) == 39 and len(value.field_dims) == 39
    assert value.field_dims[:13] == [2] * 13 and value.train["values"].shape == (603, 39)
    with pytest.raises(ValueError, match="dense"):
        load_criteo(synth, dense="log")


def test_gz_equals_plain(synth, synth_gz):
    assert tensors_equal(load_criteo(synth, dense="both"), load_criteo(synth_gz, dense="both"))


def test_max_rows(synth):
    data = all_train(synth, max_rows=50, min_count=1)
    assert len(data.train) == 50 and data.train["row"].tolist() == list(range(50))
    assert data.train["label"].tolist() == [r["label"] for r in reference_rows(synth)[:50]]


@pytest.mark.parametrize("chunk_size", [1, 7])
def test_chunk_size_does_not_change_the_result(synth, chunk_size):
    whole = load_criteo(synth, dense="both", chunk_size=10**6)
    assert tensors_equal(whole, load_criteo(synth, dense="both", chunk_size=chunk_size))


# ----------------------------------------------------------------------------- vocabulary

def test_min_count_is_fitted_on_training_rows_only(synth):
    min_count = 5
    data = load_criteo(synth, min_count=min_count)
    ref = reference_rows(synth)
    train_rows = data.train["row"].tolist()
    for k in (0, 5, 25):  # C1 (small vocabulary), C6, C26
        counts = Counter(ref[r]["cat"][k] for r in train_rows)
        col = 13 + k
        for part in (data.train, data.valid, data.test):
            for row, idx in zip(part["row"].tolist(), part["fields"][:, col].tolist()):
                assert (idx == 0) == (counts[ref[row]["cat"][k]] < min_count)
        assert data.field_dims[col] == 1 + sum(c >= min_count for c in counts.values())
    # the vocabulary would differ if it were fitted on every row
    everything = all_train(synth, min_count=min_count)
    assert everything.field_dims != data.field_dims


HASH_SCRIPT = """
import json, sys, zlib
from ctr_src.data import load_criteo
d = load_criteo(sys.argv[1], hash_size=97)
print(json.dumps([zlib.crc32(d.train["fields"].numpy().tobytes()), d.field_dims]))
"""


def test_hashing_is_stable_across_processes_and_within_hash_size(synth):
    data = load_criteo(synth, hash_size=97)
    fields = data.train["fields"].numpy()
    assert data.field_dims[13:] == [97] * 26
    assert fields[:, 13:].min() >= 0 and fields[:, 13:].max() < 97
    ref = reference_rows(synth)
    for row, idx in zip(data.train["row"].tolist(), fields[:, 13:].tolist()):
        assert idx == [0 if c is None else 1 + zlib.crc32(c.to_bytes(8, "little")) % 96
                       for c in ref[row]["cat"]]
    out = subprocess.run([sys.executable, "-c", HASH_SCRIPT, str(synth)], check=True,
                         capture_output=True, text=True,
                         env={"PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1",
                              "PATH": "/usr/bin:/bin"}).stdout
    checksum, dims = json.loads(out)
    assert checksum == zlib.crc32(fields.tobytes()) and dims == data.field_dims


# ----------------------------------------------------------------------------- splits

def test_split_is_deterministic_and_disjoint(synth):
    a, b = load_criteo(synth), load_criteo(synth)
    assert tensors_equal(a, b)
    rows = [set(p["row"].tolist()) for p in (a.train, a.valid, a.test)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    assert set().union(*rows) == set(range(603))
    assert [len(r) for r in rows] == [482, 60, 61]
    other = load_criteo(synth, seed=7)
    assert set(other.train["row"].tolist()) != rows[0]
    seq = load_criteo(synth, split="sequential")
    assert seq.train["row"].tolist() == list(range(482))
    assert seq.test["row"].tolist() == list(range(542, 603))


# ----------------------------------------------------------------------------- bad input

GOOD = EDGE_LINES[1]


# kind -> (column to replace, its bad text, the message); None: drop the last column
BAD = {
    "columns": (None, None, "expected 40 tab-separated columns"),
    "integer": (3, "1.5", "column I3 must be an integer"),
    "minus": (5, "-", "column I5 must be an integer"),
    "hex": (20, "68fd1g64", "column C7 must be hexadecimal"),
    "label": (0, "2", "the label must be 0 or 1"),
    "long-hex": (14, "f" * 16, "more than 15 hex digits"),
}


def _bad(kind: str) -> tuple[str, str]:
    column, text, message = BAD[kind]
    cols = GOOD.split("\t")
    if column is None:
        cols = cols[:-1]
    else:
        cols[column] = text
    return "\t".join(cols), message


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_line_names_file_line_and_problem(tmp_path, kind, gz):
    bad, message = _bad(kind)
    text = "\n".join([GOOD] * 9 + [bad] + [GOOD] * 3) + "\n"
    path = tmp_path / ("bad.txt.gz" if gz else "bad.txt")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    with pytest.raises(CriteoFormatError, match=message) as info:
        load_criteo(path, chunk_size=4)
    assert info.value.line == 10 and f"{path}, line 10:" in str(info.value)
    assert len(load_criteo(path, max_rows=9, min_count=1).train) == 7  # before it: fine


def test_truncated_gz_raises(synth_gz, tmp_path):
    cut = tmp_path / "cut.txt.gz"
    blob = synth_gz.read_bytes()
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CriteoFormatError, match="truncated or corrupt gzip"):
        load_criteo(cut)


def test_empty_file_and_bad_arguments(tmp_path, synth):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(CriteoFormatError, match="no impressions"):
        load_criteo(empty)
    for kw in ({"min_count": 0}, {"hash_size": 1}, {"chunk_size": 0}, {"split": "time"}):
        with pytest.raises(ValueError):
            load_criteo(synth, **kw)


# ----------------------------------------------------------------------------- synthetic file

def test_write_synthetic_is_deterministic_and_has_the_hard_cases(tmp_path):
    a = write_synthetic(tmp_path / "a.txt", 400, seed=5)
    b = write_synthetic(tmp_path / "b.txt", 400, seed=5)
    assert a.read_bytes() == b.read_bytes()
    gz = write_synthetic(tmp_path / "a.txt.gz", 400, seed=5, gz=True)
    assert gzip.decompress(gz.read_bytes()) == a.read_bytes()
    assert gz.read_bytes() == write_synthetic(tmp_path / "c.gz", 400, seed=5, gz=True).read_bytes()
    ref = reference_rows(a)
    assert any(not all(r["present"]) for r in ref) and any(None in r["cat"] for r in ref)
    assert any(x.startswith("x=-") for r in ref for x in r["bucket"])
    assert not list(tmp_path.glob("*.tmp"))


def test_deepfm_trains_one_epoch_and_learns_the_signal(tmp_path):
    path = write_synthetic(tmp_path / "train.txt", 4000, seed=1)
    data = load_criteo(path, dense="both")
    utils.seed_everything(0)
    model = models.build("deepfm", field_dims=data.field_dims)
    history = train.fit(model, data.train, data.valid, epochs=1, lr=1e-2, batch_size=128,
                        progress=False)
    assert len(history) == 1 and history[0]["valid_auc"] > 0.58
    assert train.evaluate(model, data.test)["auc"] > 0.55
