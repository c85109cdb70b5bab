"""In-memory tensors and a minibatch iterator.

A dataset is a :class:`TensorData`: a dict of tensors that share their first
dimension (``"fields"``, ``"label"``, and for DIN ``"history"``, ``"history_mask"``,
``"target"`` ...). Minibatches are slices of those tensors on whatever device the
data was moved to: no per-row Python objects, no DataLoader workers.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import numpy as np
import torch

Batch = dict[str, torch.Tensor]


class TensorData:
    """A named set of equally long tensors, held in memory.

    >>> d = TensorData(fields=torch.zeros(5, 3, dtype=torch.long), label=torch.ones(5))
    >>> len(d), d["fields"].shape
    (5, torch.Size([5, 3]))
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor] | None = None, **kw: torch.Tensor):
        tensors = dict(tensors or {}, **kw)
        if not tensors:
            raise ValueError("TensorData needs at least one tensor")
        self.tensors: dict[str, torch.Tensor] = {}
        n = None
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                t = torch.as_tensor(np.asarray(t))
            if t.ndim == 0:
                raise ValueError(f"tensor {name!r} is a scalar; every tensor needs a first (row) dimension")
            if n is None:
                n = t.shape[0]
            elif t.shape[0] != n:
                raise ValueError(f"tensor {name!r} has {t.shape[0]} rows, expected {n} like the others")
            self.tensors[name] = t
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def keys(self):
        return self.tensors.keys()

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    def to(self, device) -> "TensorData":
        """A copy with every tensor on ``device`` (no copy if already there)."""
        return TensorData({k: v.to(device) for k, v in self.tensors.items()})

    def subset(self, index) -> "TensorData":
        """Rows ``index`` (a slice, index array or boolean mask) of every tensor."""
        if not isinstance(index, slice):
            index = torch.as_tensor(np.asarray(index) if not isinstance(index, torch.Tensor) else index)
            index = index.to(self.device)
        return TensorData({k: v[index] for k, v in self.tensors.items()})

    def batch(self, index=None) -> Batch:
        """The rows ``index`` (all rows if ``None``) as a plain ``dict[str, Tensor]``."""
        if index is None:
            return dict(self.tensors)
        return self.subset(index).tensors

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None,
                keys: Iterable[str] | None = None,
                shard: tuple[int, int] | None = None) -> Iterator[Batch]:
        """Yield minibatches (dicts of tensors) of at most ``batch_size`` rows.

        With ``shuffle=True`` the rows are permuted with ``generator`` (a CPU
        ``torch.Generator``), so the order is reproducible from its seed; each batch is
        gathered by index from the tensors where they are (on the GPU, on the GPU).
        ``keys`` limits the batches to those tensors (the ones a model reads), sparing
        the gathers of the rest; unknown keys are ignored.

        ``shard=(rank, world_size)`` yields, of every batch, only the
        ``rank``-th of ``world_size`` contiguous parts (``torch.tensor_split``:
        sizes differ by at most one row, and a part is empty when the batch has
        fewer rows than ``world_size``). The batches are those of
        ``shard=None`` (the same permutation from the same generator seed), so
        the parts of all the ranks put together are the one-process batch:
        data-parallel training's split.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        tensors = self.tensors if keys is None else {
            k: v for k, v in self.tensors.items() if k in set(keys)}
        if shard is not None:
            rank, world = shard
            if not (isinstance(world, int) and isinstance(rank, int)
                    and 0 <= rank < world):
                raise ValueError(
                    f"shard must be (rank, world_size) with 0 <= rank < "
                    f"world_size, got {shard!r}")
        if shuffle:
            perm = torch.randperm(self.n, generator=generator).to(self.device)
        for start in range(0, self.n, batch_size):
            if shuffle:
                idx = perm[start:start + batch_size]
            elif shard is not None:
                idx = torch.arange(start, min(start + batch_size, self.n),
                                   device=self.device)
            else:  # contiguous rows: views, no gather
                idx = slice(start, start + batch_size)
            if shard is not None:
                idx = idx.tensor_split(world)[rank]
            yield {k: v[idx] for k, v in tensors.items()}

    def num_batches(self, batch_size: int) -> int:
        return (self.n + batch_size - 1) // batch_size

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
                          for k, v in self.tensors.items())
        return f"TensorData(n={self.n}, {parts}, device={self.device})"
