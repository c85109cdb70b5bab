"""Logistic regression on one-hot fields."""

from __future__ import annotations

from typing import Sequence

from ..layers import FeaturesLinear
from .base import CTRModel


class LR(CTRModel):
    """``logit = b + sum_i w_i x_i``: a weight per feature (an embedding of width 1).

    ``{"fields": (B, F) long[, "values": (B, F) float]} -> (B,)`` logits.

    **Real values**: field ``i``'s value ``x_i`` (``batch["values"][:, i]``,
    default 1, the one-hot case) multiplies its weight, ``w_i x_i`` -- logistic
    regression on the feature vector ``x``, one-hot entries and real numbers
    alike. There is no vector and no MLP to scale.
    """

    def __init__(self, field_dims: Sequence[int]):
        super().__init__()
        self.linear = FeaturesLinear(field_dims)

    def forward(self, batch):
        """``{"fields": (B, F) long[, "values": (B, F)]} -> (B,)`` logits."""
        return self.linear(self.fields_of(batch), self.values_of(batch)).squeeze(-1)
