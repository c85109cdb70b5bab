"""The deep part alone (Embedding & MLP) and DeepFM (Guo et al., IJCAI 2017)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..layers import MLP, FeaturesEmbedding, FeaturesLinear, FMInteraction
from .base import CTRModel


class EmbeddingMLP(CTRModel):
    """``logit = MLP([e_1, ..., e_F])``: field embeddings concatenated into an MLP.

    The deep component of Wide & Deep and DeepFM on its own (FNN without the FM
    initialisation).
    ``{"fields": (B, F) long[, "values": (B, F) float]} -> (B,)`` logits.

    **Real values** (``batch["values"]``, default 1) scale the vectors the MLP
    reads, ``e_i = v_i x_i``; no raw value is concatenated and there is no
    linear part. FNN (Zhang et al., 2016) embeds categorical fields only;
    :class:`~ctr_src.models.WideAndDeep` (``dense_fields``) is the model whose
    paper feeds raw values to the MLP.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, mlp_dims: Sequence[int] = (64, 32),
                 dropout: float = 0.0):
        super().__init__()
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.mlp = MLP(len(field_dims) * embed_dim, mlp_dims, dropout)

    def forward(self, batch) -> torch.Tensor:
        """``batch -> (B,)`` logits."""
        e = self.embedding(self.fields_of(batch), self.values_of(batch))  # (B, F, D)
        return self.mlp(e.flatten(1)).squeeze(-1)


class DeepFM(CTRModel):
    """``logit = y_FM + y_DNN`` on **shared** embeddings.

    ``y_FM = b + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j``: the first-order weights
    ``w_i`` come from :class:`~ctr_src.layers.FeaturesLinear` (one per feature), the pairs
    from :class:`~ctr_src.layers.FMInteraction`; ``y_DNN = MLP([e_1, ..., e_F])`` reads the
    **same** vectors ``e_i = v_i x_i``, so both components train one embedding table.
    :meth:`components` returns the three terms separately.
    ``{"fields": (B, F) long[, "values": (B, F) float]} -> (B,)`` logits.

    **Real values** (``batch["values"]``, default 1): ``x_i`` enters the
    first-order term as ``w_i x_i``, the FM pairs as ``x_i x_j`` and the MLP
    through the scaled vectors ``e_i = v_i x_i`` -- no raw value is
    concatenated to the MLP input. Guo et al. (2017), Sec. 2.1: a continuous
    field is represented "as the value itself" in ``x``, the FM component is
    Rendle's equation on that ``x``, and the embedding layer maps each field's
    input through the shared latent vectors ``V``, i.e. ``e_i = V_i x_i`` (this
    last step is read off the paper's Fig. 4, which draws no continuous field
    explicitly). Some libraries (e.g. DeepCTR) instead concatenate raw
    dense values to the DNN input; that is their choice, not the paper's.

    ``shared_embedding=False`` is the ablation of the paper's central design choice: the
    FM part then reads a second table of its own (``fm_embedding``), as a Wide & Deep model
    whose wide part were an FM would.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, mlp_dims: Sequence[int] = (64, 32),
                 dropout: float = 0.0, shared_embedding: bool = True):
        super().__init__()
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.fm_embedding = None if shared_embedding else FeaturesEmbedding(field_dims, embed_dim)
        self.fm = FMInteraction(reduce_sum=True)
        self.mlp = MLP(len(field_dims) * embed_dim, mlp_dims, dropout)

    def components(self, batch) -> dict[str, torch.Tensor]:
        """``{"first_order", "fm", "mlp"}``, each ``(B,)``; their sum is the logit."""
        fields, values = self.fields_of(batch), self.values_of(batch)
        e = self.embedding(fields, values)  # (B, F, D), shared by the FM and the MLP
        e_fm = e if self.fm_embedding is None else self.fm_embedding(fields, values)
        return {"first_order": self.linear(fields, values).squeeze(-1),
                "fm": self.fm(e_fm).squeeze(-1),
                "mlp": self.mlp(e.flatten(1)).squeeze(-1)}

    def forward(self, batch) -> torch.Tensor:
        """``batch -> (B,)`` logits."""
        c = self.components(batch)
        return c["first_order"] + c["fm"] + c["mlp"]
