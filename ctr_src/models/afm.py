"""Attentional factorization machines (Xiao et al., IJCAI 2017)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import AttentionalInteraction, FeaturesEmbedding, FeaturesLinear
from .base import CTRModel


class AFM(CTRModel):
    """``logit = b + sum_i w_i x_i + p^T sum_{i<j} a_ij (v_i * v_j) x_i x_j``.

    ``attention=False`` uses ``a_ij = 1/P`` (the paper's "AFM without attention").
    :meth:`attention` returns the per-pair weights ``(B, P)`` of a batch, pairs in the
    order of ``layers.pair_indices(F)``.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, attention_dim: int = 16,
                 dropout: float = 0.0, attention: bool = True):
        super().__init__()
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.afm = AttentionalInteraction(embed_dim, attention_dim, dropout,
                                          num_fields=len(field_dims), uniform=not attention)
        self.p = nn.Linear(embed_dim, 1, bias=False)

    def forward(self, batch):
        fields, values = self.fields_of(batch), self.values_of(batch)
        pooled = self.afm(self.embedding(fields, values))  # (B, D)
        return (self.linear(fields, values) + self.p(pooled)).squeeze(-1)

    @torch.no_grad()
    def attention(self, batch) -> torch.Tensor:
        """Attention weights over field pairs: ``(B, P)``, each row sums to 1."""
        return self.afm.weights(self.embedding(self.fields_of(batch), self.values_of(batch)))
