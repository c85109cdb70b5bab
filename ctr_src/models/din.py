"""Deep Interest Network (Zhou et al., KDD 2018) and its base model.

A DIN batch carries, beside ``"fields"`` ``(B, F) long``:

* ``"history"``: ``(B, L)`` or ``(B, L, S)`` long -- per position, the index of a past item in
  each *sequence field* (``seq_fields``, e.g. the item and its genre). Entries are indices
  **of those fields** and share their embedding rows with the target;
* ``"history_mask"``: ``(B, L)`` bool -- ``True`` at real positions. The mask, not a magic
  id, decides what is padding: appending masked positions never changes the output.

The candidate (target) is read from ``fields[:, seq_fields]``: ``seq_fields`` (a model
argument) are the positions of the sequence fields among the fields, the item first.
``max_history`` (default 200) bounds ``L``; a longer history raises a ``ValueError`` that
says how to cut it. :mod:`ctr_src.data.sequences` builds such batches from MovieLens.

**Real values** (``batch["values"]``, optional): they scale the field vectors,
``e_i = v_i x_i``, which the MLP reads -- the candidate's vectors included, so
a value other than 1 on a sequence field also changes the attention's target;
the history's vectors are never scaled. There is no linear part. Zhou et al.
(2018) use categorical (one- and multi-hot) features only; the scaling is the
book's convention, not the paper's.

>>> import torch
>>> from ctr_src import models
>>> m = models.build("din", field_dims=[5, 9, 4], embed_dim=4, seq_fields=(1, 2))
>>> batch = {"fields": torch.tensor([[1, 3, 2]]), "history": torch.tensor([[[4, 1], [0, 0]]]),
...          "history_mask": torch.tensor([[True, False]])}
>>> m(batch).shape, m.attention(batch)[0, 1].item()
(torch.Size([1]), 0.0)
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..layers import MLP, ActivationUnit, FeaturesEmbedding, check_index_range
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

    input_keys = ("fields", "values", "history", "history_mask")

    def check_inputs(self, data, name: str = "data") -> None:
        """:meth:`CTRModel.check_inputs`, and the history's indices against their fields."""
        super().check_inputs(data, name)
        if "history" in data:
            hist = data["history"]
            hist = hist.unsqueeze(-1) if hist.ndim == 2 else hist
            if hist.ndim == 3 and hist.shape[-1] == len(self.seq_fields):
                dims = [self.embedding.field_dims[f] for f in self.seq_fields]
                check_index_range(hist.reshape(-1, len(dims)), dims, f"{name}['history']")

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

    def _pool(self, h, t, mask):  # pragma: no cover - defined by each model
        raise NotImplementedError

    def pooled(self, batch) -> torch.Tensor:
        """The user-interest vector the MLP receives for the history: ``(B, S D)``
        (``S`` sequence fields of ``D`` each), in the model's current mode."""
        _, h, t, mask = self.embed(batch)
        return self._pool(h, t, mask)


class DINBase(_SequenceModel):
    """The base model ("Embedding & MLP"): the history pooled by a masked **sum** (or mean),
    the same vector whatever the candidate.

    ``v_U = sum_j m_j e_j`` (``pooling="sum"``) or that sum divided by the number of real
    positions (``"mean"``; an empty history pools to zeros either way);
    ``logit = MLP([e_1, ..., e_F, v_U])`` with PReLU (or ``activation``) hidden layers.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, seq_fields: Sequence[int] = (1,),
                 mlp_dims: Sequence[int] = (80, 40), dropout: float = 0.0, pooling: str = "sum",
                 activation: str = "prelu", max_history: int = 200):
        super().__init__(field_dims, embed_dim, seq_fields, max_history)
        if pooling not in ("sum", "mean"):
            raise ValueError(f"unknown pooling {pooling!r}; use 'sum' or 'mean'")
        self.pooling = pooling
        self.mlp = MLP(self.num_fields * embed_dim + self.seq_dim, mlp_dims, dropout, activation=activation)

    def _pool(self, h, t, mask):
        v = h.masked_fill(~mask.unsqueeze(-1), 0.0).sum(1)
        if self.pooling == "mean":
            v = v / mask.sum(1, keepdim=True).clamp(min=1).to(v.dtype)
        return v

    def forward(self, batch):
        """``batch -> (B,)`` logits (see the module docstring for the batch)."""
        e, h, t, mask = self.embed(batch)
        return self.mlp(torch.cat([e.flatten(1), self._pool(h, t, mask)], dim=1)).squeeze(-1)


class DIN(_SequenceModel):
    """Deep Interest Network: the history pooled with weights that depend on the candidate.

    ``v_U(A) = sum_j m_j g(e_j, e_A) e_j`` over the positions ``j`` with mask ``m_j`` --
    **no softmax** by default, so the pooled vector keeps the intensity of the user's
    interest in ``A`` (``softmax=True`` normalises the weights over the real positions
    instead; an empty history then pools to zeros too).
    ``logit = MLP([e_1, ..., e_F, v_U(A)])``; the activation unit ``g`` and the MLP use
    ``activation`` (``"dice"`` or ``"prelu"``).

    Build it through the registry like every model:
    ``models.build("din", field_dims=data.field_dims, seq_fields=data.seq_fields)``, where
    ``seq_fields`` are the positions among the fields of the target item (first) and of any
    other per-position attribute of the history (e.g. its genre): ``(1,)`` = item only,
    ``(1, 7)`` = item and genre with :data:`~ctr_src.data.DEFAULT_FIELDS`.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, seq_fields: Sequence[int] = (1,),
                 mlp_dims: Sequence[int] = (80, 40), attention_dims: Sequence[int] = (36,),
                 dropout: float = 0.0, activation: str = "dice", softmax: bool = False,
                 max_history: int = 200):
        super().__init__(field_dims, embed_dim, seq_fields, max_history)
        if activation not in ("dice", "prelu"):
            raise ValueError(f"DIN uses activation 'dice' or 'prelu', got {activation!r}")
        self.softmax = bool(softmax)
        self.unit = ActivationUnit(self.seq_dim, attention_dims, activation)
        self.mlp = MLP(self.num_fields * embed_dim + self.seq_dim, mlp_dims, dropout, activation=activation)

    def _weights(self, h, t, mask):
        scores = self.unit(h, t, mask)  # (B, L) raw g(e_j, e_A)
        if self.softmax:
            # padded positions get -inf; an all-padded row is softmaxed over zeros and then
            # masked to zero, so no NaN appears, forward or backward.
            empty = ~mask.any(dim=1, keepdim=True)
            scores = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
            scores = torch.softmax(scores, dim=1)
        return torch.where(mask, scores, torch.zeros_like(scores))

    def _pool(self, h, t, mask):
        return (self._weights(h, t, mask).unsqueeze(-1) * h).sum(1)

    def forward(self, batch):
        """``batch -> (B,)`` logits (see the module docstring for the batch)."""
        e, h, t, mask = self.embed(batch)
        return self.mlp(torch.cat([e.flatten(1), self._pool(h, t, mask)], dim=1)).squeeze(-1)

    @torch.no_grad()
    def attention(self, batch) -> torch.Tensor:
        """The weights over the history, ``(B, L)``: ``g(e_j, e_A)`` (or its softmax) at real
        positions, exactly 0 at padded ones.

        Computed in eval mode (Dice uses its running statistics and leaves them alone);
        the model's mode is restored afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            _, h, t, mask = self.embed(batch)
            return self._weights(h, t, mask)
        finally:
            self.train(was_training)
