"""Deep Interest Network (Zhou et al., KDD 2018) and its base model.

A DIN batch carries, beside ``"fields"`` ``(B, F) long``:

* ``"history"``: ``(B, L)`` or ``(B, L, S)`` long -- per position, the index of a past item in
  each *sequence field* (``seq_fields``, e.g. the item and its genre). Entries are indices
  **of those fields** and share their embedding rows with the target;
* ``"history_mask"``: ``(B, L)`` bool -- ``True`` at real positions. The mask, not a magic
  id, decides what is padding: appending masked positions never changes the output.

The candidate (target) is read from ``fields[:, seq_fields]``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..layers import MLP, ActivationUnit, FeaturesEmbedding
from .base import CTRModel


class _SequenceModel(CTRModel):
    """Embeddings of the fields, the history and the target, shared between DIN and the base."""

    def __init__(self, field_dims: Sequence[int], embed_dim: int, seq_fields: Sequence[int],
                 max_history: int):
        super().__init__()
        self.seq_fields = [int(f) for f in seq_fields]
        if not self.seq_fields or any(not 0 <= f < len(field_dims) for f in self.seq_fields):
            raise ValueError(f"seq_fields must name fields 0..{len(field_dims) - 1}, got {seq_fields}")
        self.max_history = max_history
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.seq_dim = embed_dim * len(self.seq_fields)
        self.num_fields = len(field_dims)

    def embed(self, batch):
        """``(fields (B, F, D), history (B, L, S D), target (B, S D), mask (B, L) bool)``."""
        fields = self.fields_of(batch)
        for key in ("history", "history_mask"):
            if key not in batch:
                raise KeyError(f"a sequence model needs batch[{key!r}]; build the batch with "
                               f"ctr_src.data.sequences")
        hist, mask = batch["history"], batch["history_mask"]
        if hist.ndim == 2:
            hist = hist.unsqueeze(-1)
        if hist.ndim != 3 or hist.shape[-1] != len(self.seq_fields):
            raise ValueError(f"history must be (B, L) or (B, L, {len(self.seq_fields)}) for seq_fields "
                             f"{self.seq_fields}, got {tuple(batch['history'].shape)}")
        if hist.shape[0] != fields.shape[0] or tuple(mask.shape) != tuple(hist.shape[:2]):
            raise ValueError(f"history {tuple(hist.shape)}, history_mask {tuple(mask.shape)} and fields "
                             f"{tuple(fields.shape)} disagree on B or L")
        if mask.dtype != torch.bool:
            raise TypeError(f"history_mask must be torch.bool, got {mask.dtype}")
        if hist.shape[1] > self.max_history:
            raise ValueError(f"history of length {hist.shape[1]} exceeds max_history={self.max_history}; "
                             f"keep the most recent {self.max_history} (sequences.build_histories(max_len=...)) "
                             f"or build the model with a larger max_history")
        e = self.embedding(fields, self.values_of(batch))
        h = torch.cat([self.embedding.field_rows(f, hist[..., s]) for s, f in enumerate(self.seq_fields)], -1)
        t = e[:, self.seq_fields].flatten(1)
        return e, h, t, mask


class DINBase(_SequenceModel):
    """The base model: history pooled by a masked **sum** (or mean), whatever the candidate.

    ``logit = MLP([e_1, ..., e_F, pool(history)])``.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, seq_fields: Sequence[int] = (1,),
                 mlp_dims: Sequence[int] = (80, 40), dropout: float = 0.0, pooling: str = "sum",
                 activation: str = "prelu", max_history: int = 200):
        super().__init__(field_dims, embed_dim, seq_fields, max_history)
        if pooling not in ("sum", "mean"):
            raise ValueError(f"unknown pooling {pooling!r}; use 'sum' or 'mean'")
        self.pooling = pooling
        self.mlp = MLP(self.num_fields * embed_dim + self.seq_dim, mlp_dims, dropout, activation=activation)

    def pooled(self, batch) -> torch.Tensor:
        e, h, t, mask = self.embed(batch)
        m = mask.unsqueeze(-1).to(h.dtype)
        v = (h * m).sum(1)
        if self.pooling == "mean":
            v = v / m.sum(1).clamp(min=1.0)
        return e, v

    def forward(self, batch):
        e, v = self.pooled(batch)
        return self.mlp(torch.cat([e.flatten(1), v], dim=1)).squeeze(-1)


class DIN(_SequenceModel):
    """Deep Interest Network: the history pooled with weights that depend on the candidate.

    ``v_U(A) = sum_j g(e_j, e_A) e_j`` over real positions ``j`` -- **no softmax** by default,
    so the pooled vector keeps the intensity of the user's interest in ``A``
    (``softmax=True`` normalises the weights over the real positions instead).
    ``logit = MLP([e_1, ..., e_F, v_U(A)])`` with Dice or PReLU activations.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, seq_fields: Sequence[int] = (1,),
                 mlp_dims: Sequence[int] = (80, 40), attention_dims: Sequence[int] = (36,),
                 dropout: float = 0.0, activation: str = "dice", softmax: bool = False,
                 max_history: int = 200):
        super().__init__(field_dims, embed_dim, seq_fields, max_history)
        self.softmax = softmax
        self.unit = ActivationUnit(self.seq_dim, attention_dims, activation)
        self.mlp = MLP(self.num_fields * embed_dim + self.seq_dim, mlp_dims, dropout, activation=activation)

    def _weights(self, h, t, mask):
        scores = self.unit(h, t, mask)  # (B, L)
        if self.softmax:
            scores = scores.masked_fill(~mask, float("-inf"))
            w = torch.softmax(scores, dim=1)
            return torch.nan_to_num(w, nan=0.0)  # an empty history has no weights
        return scores * mask.to(scores.dtype)

    def forward(self, batch):
        e, h, t, mask = self.embed(batch)
        w = self._weights(h, t, mask)
        v = (w.unsqueeze(-1) * h).sum(1)
        return self.mlp(torch.cat([e.flatten(1), v], dim=1)).squeeze(-1)

    @torch.no_grad()
    def attention(self, batch) -> torch.Tensor:
        """Weights ``g(e_j, e_A)`` over the history: ``(B, L)``, zero at padded positions."""
        _, h, t, mask = self.embed(batch)
        return self._weights(h, t, mask)
