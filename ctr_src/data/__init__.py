"""Data for the book: MovieLens-100K fetched, verified and framed as CTR data.

* :mod:`.movielens` -- download (GroupLens, else the recbole wheel on PyPI), verify, cache;
* :mod:`.ctr` -- fields, invertible encoding, random and temporal splits;
* :mod:`.tensors` -- in-memory tensors and the minibatch iterator;
* :mod:`.sequences` -- behaviour histories for DIN;
* :mod:`.criteo` -- your own logs in the Criteo format: a streaming, checked reader
  (``load_criteo``) and a synthetic Criteo-format file for tests (``write_synthetic``).

Fetch once with ``python -m ctr_src.data fetch``; ``load_ctr()``, ``load_din()`` and
``load_movielens()`` also fetch it on first use (with a message; offline, a clear error).
"""

from .criteo import CriteoData, CriteoFormatError, load_criteo, write_synthetic
from .ctr import (AGE_BUCKETS, DEFAULT_FIELDS, CTRData, FieldEncoder, age_bucket, impressions,
                  load_ctr, random_split, temporal_split)
from .movielens import DataError, DataUnavailableError, MovieLens, fetch, load_movielens
from .tensors import Batch, TensorData

__all__ = ["AGE_BUCKETS", "DEFAULT_FIELDS", "CTRData", "FieldEncoder", "age_bucket", "impressions",
           "load_ctr", "random_split", "temporal_split", "DataError", "DataUnavailableError",
           "MovieLens", "fetch", "load_movielens", "Batch", "TensorData",
           "CriteoData", "CriteoFormatError", "load_criteo", "write_synthetic"]
