"""The yardstick every learned model must beat: a user's and an item's positive rate."""

from __future__ import annotations

from typing import Sequence

import torch

from .base import CTRModel


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


class MeanBaseline(CTRModel):
    """``logit = logit(r_u) + logit(r_i) - logit(r)``: no training, only counting.

    ``r`` is the positive rate of the training rows, ``r_u`` that of user ``u`` and ``r_i``
    that of item ``i``, each shrunk towards ``r`` by ``prior`` pseudo-impressions,
    ``r_u = (clicks_u + prior * r) / (impressions_u + prior)``, so a user with few
    impressions gets a rate close to the average. In odds, the user's and the item's
    deviations from the average multiply -- the additive logit model that logistic
    regression on ``user_id`` and ``item_id`` would learn, estimated by counting instead
    of by gradient descent. Index 0 (``<unk>``) is a user or item like any other.

    Build it with :meth:`from_counts` from training data; it has no trainable parameters.
    ``{"fields": (B, F) long} -> (B,)`` logits; ``batch["values"]`` is
    ignored.
    """

    def __init__(self, field_dims: Sequence[int], user_field: int = 0, item_field: int = 1,
                 prior: float = 10.0):
        super().__init__()
        for name, f in (("user_field", user_field), ("item_field", item_field)):
            if not 0 <= f < len(field_dims):
                raise ValueError(f"{name}={f} is not a field position (there are {len(field_dims)})")
        if user_field == item_field:
            raise ValueError("user_field and item_field must differ")
        if not prior > 0:
            raise ValueError(f"prior must be > 0 pseudo-impressions, got {prior}")
        self.user_field, self.item_field, self.prior = user_field, item_field, float(prior)
        self.register_buffer("user_logit", torch.zeros(field_dims[user_field], dtype=torch.float64))
        self.register_buffer("item_logit", torch.zeros(field_dims[item_field], dtype=torch.float64))
        self.register_buffer("base_logit", torch.zeros((), dtype=torch.float64))

    @classmethod
    def from_counts(cls, field_dims: Sequence[int], train, user_field: int = 0,
                    item_field: int = 1, prior: float = 10.0) -> "MeanBaseline":
        """Count the clicks of ``train`` (a TensorData with ``fields`` and ``label``)."""
        model = cls(field_dims, user_field, item_field, prior)
        fields, y = train["fields"].cpu(), train["label"].cpu().double()
        if len(y) == 0:
            raise ValueError("train is empty: nothing to count")
        rate = y.mean().clamp(1e-6, 1 - 1e-6)
        model.base_logit.fill_(float(_logit(rate)))
        for col, table in ((user_field, model.user_logit), (item_field, model.item_logit)):
            idx = fields[:, col]
            n = torch.bincount(idx, minlength=len(table)).double()
            clicks = torch.bincount(idx, weights=y, minlength=len(table))
            table.copy_(_logit((clicks + prior * rate) / (n + prior)))
        return model

    def forward(self, batch) -> torch.Tensor:
        """``batch -> (B,)`` logits (float32, like every other model)."""
        f = self.fields_of(batch)
        out = (self.user_logit[f[:, self.user_field]] + self.item_logit[f[:, self.item_field]]
               - self.base_logit)
        return out.float()
