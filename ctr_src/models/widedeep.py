"""Wide & Deep (Cheng et al., 2016)."""

from __future__ import annotations

from typing import Sequence

from ..layers import MLP, FeaturesEmbedding, FeaturesLinear
from .base import CTRModel


class WideAndDeep(CTRModel):
    """``logit = wide + deep``.

    *wide*: a weight per feature of the fields and, if ``cross_dims`` is given, of the
    hand-crafted cross features in ``batch["cross"]`` ``(B, C) long`` (see
    :func:`ctr_src.data.ctr.add_crosses`); *deep*: an MLP on the concatenated embeddings
    of the fields.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, mlp_dims: Sequence[int] = (64, 32),
                 dropout: float = 0.0, cross_dims: Sequence[int] | None = None):
        super().__init__()
        self.linear = FeaturesLinear(field_dims)
        self.cross = FeaturesLinear(cross_dims) if cross_dims else None
        if self.cross is not None:
            self.cross.bias.requires_grad_(False)  # one bias is enough
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.mlp = MLP(len(field_dims) * embed_dim, mlp_dims, dropout)

    def wide(self, batch):
        """The wide (linear) part: ``(B,)``."""
        out = self.linear(self.fields_of(batch), self.values_of(batch)).squeeze(-1)
        if self.cross is not None:
            if "cross" not in batch:
                raise KeyError("this Wide & Deep model was built with cross_dims, but the batch has no "
                               "'cross' entry; build the data with ctr_src.data.ctr.add_crosses")
            out = out + self.cross(batch["cross"]).squeeze(-1)
        return out

    def deep(self, batch):
        """The deep part: ``(B,)``."""
        e = self.embedding(self.fields_of(batch), self.values_of(batch))
        return self.mlp(e.flatten(1)).squeeze(-1)

    def forward(self, batch):
        return self.wide(batch) + self.deep(batch)
