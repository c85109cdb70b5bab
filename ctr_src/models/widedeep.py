"""Wide & Deep (Cheng et al., 2016)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..layers import (MLP, FeaturesEmbedding, FeaturesLinear, check_fields,
                      check_index_range)
from .base import CTRModel


class WideAndDeep(CTRModel):
    """``logit = wide + deep``, the two parts trained jointly.

    * *wide*: a linear model -- a weight per feature of the ``F`` fields and, if
      ``cross_dims`` is given, a weight per value of ``C`` hand-crafted cross features read
      from ``batch["cross"]`` ``(B, C) long`` (built by :func:`ctr_src.data.ctr.add_crosses`);
    * *deep*: an MLP on the concatenated field embeddings ``[e_1, ..., e_F]``.

    The wide part shares nothing with the deep part. ``{"fields": (B, F) long[, "cross":
    (B, C) long]} -> (B,)`` logits.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, mlp_dims: Sequence[int] = (64, 32),
                 dropout: float = 0.0, cross_dims: Sequence[int] | None = None):
        super().__init__()
        self.linear = FeaturesLinear(field_dims)
        self.cross = FeaturesLinear(cross_dims) if cross_dims else None
        if self.cross is not None:
            self.cross.bias.requires_grad_(False)  # stays 0: the fields' bias is enough
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.mlp = MLP(len(field_dims) * embed_dim, mlp_dims, dropout)

    input_keys = ("fields", "values", "cross")

    def check_inputs(self, data, name: str = "data") -> None:
        """:meth:`CTRModel.check_inputs`, and ``data["cross"]`` against ``cross_dims``."""
        super().check_inputs(data, name)
        if self.cross is not None and "cross" in data:
            check_index_range(data["cross"], self.cross.field_dims, f"{name}['cross']")

    def wide(self, batch) -> torch.Tensor:
        """The wide (linear) part: ``b + sum_i w_i x_i [+ sum_c w_c x_c]``, ``(B,)``."""
        out = self.linear(self.fields_of(batch), self.values_of(batch)).squeeze(-1)
        if self.cross is not None:
            if "cross" not in batch:
                raise KeyError("this Wide & Deep model was built with cross_dims, but the batch has no "
                               "'cross' entry; build the data with ctr_src.data.ctr.add_crosses")
            check_fields(batch["cross"], self.cross.dims, name="cross")
            out = out + self.cross(batch["cross"]).squeeze(-1)
        return out

    def deep(self, batch) -> torch.Tensor:
        """The deep part ``MLP([e_1, ..., e_F])``: ``(B,)``."""
        e = self.embedding(self.fields_of(batch), self.values_of(batch))  # (B, F, D)
        return self.mlp(e.flatten(1)).squeeze(-1)

    def forward(self, batch) -> torch.Tensor:
        """``batch -> (B,)`` logits."""
        return self.wide(batch) + self.deep(batch)
