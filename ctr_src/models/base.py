"""What every model shares: a batch dict in, ``(B,)`` logits out."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..layers import batch_fields


class CTRModel(nn.Module):
    """Base class: ``model(batch) -> (B,)`` logits; ``predict_proba`` applies the sigmoid.

    Models return **logits** and are trained with ``BCEWithLogitsLoss``, which fuses the
    sigmoid into the loss in a numerically stable way. Never apply a sigmoid inside
    ``forward`` *and* use ``BCEWithLogitsLoss`` -- that double sigmoid squeezes every
    prediction into (0.5, 0.73) and quietly ruins logloss.
    """

    def fields_of(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch_fields(batch)

    @staticmethod
    def values_of(batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """Optional real values ``(B, F)`` that scale each field (default: all ones)."""
        return batch.get("values")

    @torch.no_grad()
    def predict_proba(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Click probabilities ``(B,)`` (eval mode is the caller's business)."""
        return torch.sigmoid(self(batch))
