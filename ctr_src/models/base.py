"""What every model shares: a batch dict in, ``(B,)`` logits out."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..layers import (_OffsetTable, batch_fields, check_index_range,
                      check_values)


class CTRModel(nn.Module):
    """Base class: ``model(batch) -> (B,)`` logits; ``predict_proba`` applies the sigmoid.

    Models return **logits** and are trained with ``BCEWithLogitsLoss``, which fuses the
    sigmoid into the loss in a numerically stable way. Never apply a sigmoid inside
    ``forward`` *and* use ``BCEWithLogitsLoss`` -- that double sigmoid squeezes every
    prediction into (0.5, 0.73) and quietly ruins logloss.
    """

    #: the batch entries ``forward`` reads; the trainer gathers only these (and the label)
    input_keys: tuple[str, ...] = ("fields", "values")

    def fields_of(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch_fields(batch)

    @staticmethod
    def values_of(batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """Optional real values ``(B, F)`` that scale each field (default: all ones)."""
        return batch.get("values")

    def check_inputs(self, data: Mapping[str, torch.Tensor], name: str = "data") -> None:
        """Validate a whole data set's indices once (``fit``, ``evaluate``, ``predict`` do).

        Checks ``data["fields"]`` against the vocabulary sizes of the model's field tables
        (``embedding``, ``linear``) in one vectorised pass (a model with other index inputs
        extends it) and raises ``IndexError`` naming the column, the
        row and the value otherwise; ``data["values"]``, if present, must be
        a float tensor of finite numbers (``ValueError`` naming the column
        and the row). After it, the per-batch scans of the layers are
        redundant: the trainer runs the batches inside
        :func:`ctr_src.layers.skip_index_checks`. A model called directly keeps checking
        every batch.
        """
        tables = [getattr(self, a, None) for a in ("embedding", "linear")]
        for dims in {tuple(t.field_dims) for t in tables if isinstance(t, _OffsetTable)}:
            check_index_range(batch_fields(data), dims, f"{name}['fields']")
        if "values" in data and "values" in self.input_keys:
            check_values(data["values"], f"{name}['values']")

    @torch.no_grad()
    def predict_proba(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Click probabilities ``(B,)`` (eval mode is the caller's business)."""
        return torch.sigmoid(self(batch))
