"""Factorization machines (Rendle, 2010) and field-aware FMs (Juan et al., 2016)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import FeaturesEmbedding, FeaturesLinear, FMInteraction, _Pairs
from .base import CTRModel


class FM(CTRModel):
    """``logit = b + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j``, pairs in O(F D).

    ``{"fields": (B, F) long[, "values": (B, F) float]} -> (B,)`` logits.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16):
        super().__init__()
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.fm = FMInteraction(reduce_sum=True)

    def forward(self, batch):
        fields, values = self.fields_of(batch), self.values_of(batch)
        e = self.embedding(fields, values)  # (B, F, D)
        return (self.linear(fields, values) + self.fm(e)).squeeze(-1)


class FFM(CTRModel, _Pairs):
    """Field-aware FM: feature ``i`` keeps one vector per *other field*.

    ``logit = b + sum_i w_i x_i + sum_{i<j} <v_{i, f(j)}, v_{j, f(i)}> x_i x_j``. One table
    of width ``F * D`` holds, for each feature, its ``F`` field-specific vectors: ``n F D``
    pair parameters against FM's ``n D``, and ``O(F^2 D)`` work per row.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 4):
        super().__init__()
        self.num_fields_ = len(field_dims)
        self.embed_dim = embed_dim
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, self.num_fields_ * embed_dim)
        self._init_pairs(self.num_fields_)

    def field_vectors(self, batch) -> torch.Tensor:
        """``(B, F, F, D)``: ``[b, i, j]`` is feature ``i``'s vector for partner field ``j`` (times ``x_i``)."""
        e = self.embedding(self.fields_of(batch), self.values_of(batch))
        return e.view(e.shape[0], self.num_fields_, self.num_fields_, self.embed_dim)

    def forward(self, batch):
        v = self.field_vectors(batch)
        rows, cols = self.rows, self.cols
        pairs = (v[:, rows, cols] * v[:, cols, rows]).sum(dim=(1, 2))  # (B,)
        return self.linear(self.fields_of(batch), self.values_of(batch)).squeeze(-1) + pairs
