"""Wide & Deep (Cheng et al., 2016)."""

from __future__ import annotations

import numbers
from typing import Sequence

import torch

from ..layers import (MLP, FeaturesEmbedding, FeaturesLinear, check_fields,
                      check_index_range)
from .base import CTRModel


def check_dense_fields(dense_fields, num_fields: int) -> list[int]:
    """``dense_fields`` as a list of distinct field positions in ``[0, F)``."""
    if isinstance(dense_fields, (str, bytes)) or not hasattr(
            dense_fields, "__iter__"):
        raise TypeError(f"dense_fields must be a sequence of field positions, "
                        f"e.g. (0, 3), got {dense_fields!r}")
    out = []
    for f in dense_fields:
        if isinstance(f, bool) or not isinstance(f, numbers.Integral):
            raise TypeError(f"dense_fields must hold int field positions, got "
                            f"{f!r} in {list(dense_fields)}")
        f = int(f)
        if not 0 <= f < num_fields:
            raise ValueError(f"dense_fields: {f} is not a field position; "
                             f"the model has {num_fields} fields, "
                             f"0..{num_fields - 1}")
        if f in out:
            raise ValueError(f"dense_fields names field {f} twice: "
                             f"{list(dense_fields)}; list each real-valued "
                             f"field once")
        out.append(f)
    return out


class WideAndDeep(CTRModel):
    """``logit = wide + deep``, the two parts trained jointly.

    * *wide*: a linear model -- a weight per feature of the ``F`` fields and, if
      ``cross_dims`` is given, a weight per value of ``C`` hand-crafted cross features read
      from ``batch["cross"]`` ``(B, C) long`` (built by :func:`ctr_src.data.ctr.add_crosses`);
    * *deep*: an MLP on the concatenated field embeddings ``[e_1, ..., e_F]``
      and, with ``dense_fields``, the raw values of those fields after them.

    The wide part shares nothing with the deep part. ``{"fields": (B, F) long[,
    "values": (B, F) float][, "cross": (B, C) long]} -> (B,)`` logits.

    **Real values** (``batch["values"]``, default 1 everywhere). Field ``i``'s
    value ``x_i`` enters the wide part as ``w_i x_i`` (Sec. 3.1: the wide part
    is ``w^T x + b`` on the raw input features and the crosses) and scales the
    field's vector, ``e_i = v_i x_i``, which the MLP reads. ``dense_fields``
    (default ``()``: none) names fields whose value is a real number (a count,
    a price); their raw values ``x_f`` are also concatenated to the MLP input,
    in the order given: ``[e_1, ..., e_F, x_{f_1}, ..., x_{f_K}]``, width
    ``F D + K``. This is the paper's deep input: "we concatenate all the
    embeddings together with the dense features" (Sec. 4.3 and Fig. 4;
    continuous features are normalised there to ``[0, 1]`` by their
    quantiles, Sec. 4.1 -- scaling is the data's business here, e.g. Criteo's
    ``log1p``). In the paper the continuous features are not embedded; here
    a field with a value still keeps its scaled vector *in addition*,
    because in ``ctr_src`` a real-valued field is also an index (Criteo's
    present/missing indicator, whose vector would be lost otherwise), and it
    keeps the ``e_i = v_i x_i`` that every other model reads. With
    ``dense_fields=()`` the model is exactly the one without the option (same
    parameters, same numbers). A model with ``dense_fields`` needs
    ``batch["values"]``.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, mlp_dims: Sequence[int] = (64, 32),
                 dropout: float = 0.0, cross_dims: Sequence[int] | None = None,
                 dense_fields: Sequence[int] = ()):
        super().__init__()
        self.dense_fields = check_dense_fields(dense_fields, len(field_dims))
        self.linear = FeaturesLinear(field_dims)
        self.cross = FeaturesLinear(cross_dims) if cross_dims else None
        if self.cross is not None:
            self.cross.bias.requires_grad_(False)  # stays 0: the fields' bias is enough
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        width = len(field_dims) * embed_dim + len(self.dense_fields)
        self.mlp = MLP(width, mlp_dims, dropout)
        # not in the state_dict: the architecture argument rebuilds it
        self.register_buffer("dense_index", torch.tensor(
            self.dense_fields, dtype=torch.long), persistent=False)

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

    def deep_input(self, batch) -> torch.Tensor:
        """The MLP's input ``[e_1, ..., e_F, x_{f_1}, ..., x_{f_K}]``:
        ``(B, F D + K)``, ``K = len(dense_fields)``."""
        values = self.values_of(batch)
        e = self.embedding(self.fields_of(batch), values)  # (B, F, D)
        x = e.flatten(1)
        if not self.dense_fields:
            return x
        if values is None:
            raise KeyError(f"this Wide & Deep model was built with "
                           f"dense_fields={self.dense_fields}, but the batch "
                           f"has no 'values' entry; load the data with its "
                           f"real values (e.g. load_criteo(path, "
                           f"dense='value')) or build the model with "
                           f"dense_fields=()")
        dense = values.index_select(1, self.dense_index).to(x.dtype)
        return torch.cat([x, dense], dim=1)

    def deep(self, batch) -> torch.Tensor:
        """The deep part ``MLP(deep_input)``: ``(B,)``."""
        return self.mlp(self.deep_input(batch)).squeeze(-1)

    def forward(self, batch) -> torch.Tensor:
        """``batch -> (B,)`` logits."""
        return self.wide(batch) + self.deep(batch)
