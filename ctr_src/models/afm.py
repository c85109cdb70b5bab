"""Attentional factorization machines (Xiao et al., IJCAI 2017)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import AttentionalInteraction, FeaturesEmbedding, FeaturesLinear
from .base import CTRModel


class AFM(CTRModel):
    """``logit = b + sum_i w_i x_i + p^T sum_{i<j} a_ij (v_i * v_j) x_i x_j``.

    The weights ``a_ij`` come from a one-layer attention network over the pair vectors and
    a softmax over the ``P = F (F - 1) / 2`` field pairs (:class:`~ctr_src.layers.AttentionalInteraction`).
    ``attention=False`` fixes ``a_ij = 1/P`` (the paper's "AFM without attention").
    ``{"fields": (B, F) long[, "values": (B, F) float]} -> (B,)`` logits.

    **Real values** (``batch["values"]``, default 1): ``x_i`` enters the linear
    part as ``w_i x_i`` and scales the vector, ``e_i = v_i x_i``, so each pair
    vector is ``(v_i * v_j) x_i x_j`` -- which the attention network scores as
    well -- as in Xiao et al. (2017), Sec. 2.1 (the embedding layer gives
    ``v_i x_i``; the model equation has ``sum_i w_i x_i``). No MLP.

    For interpretation, :meth:`attention` returns the weights ``(B, P)`` of a batch and
    :attr:`pairs` the field pair ``(i, j)`` behind each of the ``P`` columns
    (``i < j``, row-major: ``(0, 1), (0, 2), ..., (F-2, F-1)``).
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, attention_dim: int = 16,
                 dropout: float = 0.0, attention: bool = True):
        super().__init__()
        if len(field_dims) < 2:
            raise ValueError(f"AFM needs at least 2 fields to form pairs, got {len(field_dims)}")
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.afm = AttentionalInteraction(embed_dim, attention_dim, dropout,
                                          num_fields=len(field_dims), uniform=not attention)
        self.p = nn.Linear(embed_dim, 1, bias=False)

    def forward(self, batch):
        """``{"fields": (B, F) long[, "values": (B, F)]} -> (B,)`` logits."""
        fields, values = self.fields_of(batch), self.values_of(batch)
        pooled = self.afm(self.embedding(fields, values))  # (B, D)
        return (self.linear(fields, values) + self.p(pooled)).squeeze(-1)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The field pair ``(i, j)`` of each attention column, ``i < j`` row-major."""
        return list(zip(self.afm.rows.tolist(), self.afm.cols.tolist()))

    @torch.no_grad()
    def attention(self, batch) -> torch.Tensor:
        """Attention weights over field pairs: ``(B, P)``, each row sums to 1.

        Column ``k`` belongs to the field pair ``self.pairs[k]``. Dropout never touches the
        weights, so the result is the same in ``train()`` and ``eval()`` mode.
        """
        return self.afm.weights(self.embedding(self.fields_of(batch), self.values_of(batch)))
