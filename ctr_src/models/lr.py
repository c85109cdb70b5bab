"""Logistic regression on one-hot fields."""

from __future__ import annotations

from typing import Sequence

from ..layers import FeaturesLinear
from .base import CTRModel


class LR(CTRModel):
    """``logit = b + sum_i w_i x_i``: a weight per feature (an embedding of width 1).

    ``batch["fields"]`` ``(B, F) long -> (B,)`` logits.
    """

    def __init__(self, field_dims: Sequence[int]):
        super().__init__()
        self.linear = FeaturesLinear(field_dims)

    def forward(self, batch):
        """``{"fields": (B, F) long[, "values": (B, F)]} -> (B,)`` logits."""
        return self.linear(self.fields_of(batch), self.values_of(batch)).squeeze(-1)
