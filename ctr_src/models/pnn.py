"""Product-based neural networks (Qu et al., ICDM 2016): IPNN, OPNN and PNN*."""

from __future__ import annotations

from typing import Sequence

import torch

from ..layers import MLP, FeaturesEmbedding, InnerProduct, OuterProduct
from .base import CTRModel


class PNN(CTRModel):
    """Embeddings -> product layer -> MLP.

    The product layer emits the linear signals ``l_z`` (the ``F`` embeddings concatenated,
    ``F D`` numbers) and the quadratic signals ``l_p`` (``P = F (F - 1) / 2`` inner products,
    ``P`` kernel-reduced outer products, or both, pairs ``i < j`` row-major). The first hidden
    layer ``ReLU(W_z z + W_p p + b)`` is one linear layer on ``[z, p]``.

    * ``product``: ``"inner"`` (IPNN), ``"outer"`` (OPNN) or ``"both"`` (PNN*);
    * ``kernel``: the outer-product kernel, ``"mat"``, ``"vec"`` or ``"num"``
      (see :class:`~ctr_src.layers.OuterProduct`; ignored by IPNN).

    ``{"fields": (B, F) long[, "values": (B, F) float]} -> (B,)`` logits.

    **Real values** (``batch["values"]``, default 1) scale the vectors,
    ``e_i = v_i x_i``: ``l_z`` (the MLP's first input block) holds ``v_i x_i``
    and every product carries ``x_i x_j``. There is no linear part. Qu et al.
    (2016), Sec. III, embed one-hot categorical fields only,
    ``f_i = W_0^i x[start_i : end_i]``; the same product with a real value in
    place of the 1 is the scaling used here (the paper does not discuss
    continuous fields).
    :meth:`signals` returns the product layer's output and :attr:`slices` where each
    block of it lies: ``"z"``, then ``"inner"`` and/or ``"outer"``.
    """

    PRODUCTS = ("inner", "outer", "both")

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, mlp_dims: Sequence[int] = (64, 32),
                 dropout: float = 0.0, product: str = "inner", kernel: str = "mat"):
        super().__init__()
        if product not in self.PRODUCTS:
            raise ValueError(f"unknown product {product!r}; choose one of {self.PRODUCTS}")
        f = len(field_dims)
        if f < 2:
            raise ValueError(f"a product layer needs at least 2 fields, got field_dims={list(field_dims)}")
        p = f * (f - 1) // 2
        self.product = product
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.inner = InnerProduct(f) if product in ("inner", "both") else None
        self.outer = OuterProduct(f, embed_dim, kernel) if product in ("outer", "both") else None
        self.slices: dict[str, slice] = {"z": slice(0, f * embed_dim)}
        width = f * embed_dim
        for name, layer in (("inner", self.inner), ("outer", self.outer)):
            if layer is not None:
                self.slices[name] = slice(width, width + p)
                width += p
        self.mlp = MLP(width, mlp_dims, dropout)

    def signals(self, batch) -> torch.Tensor:
        """The product layer's output ``[l_z, l_p]``: ``(B, F D + P)`` (``+ 2P`` for both)."""
        e = self.embedding(self.fields_of(batch), self.values_of(batch))  # (B, F, D)
        parts = [e.flatten(1)]
        if self.inner is not None:
            parts.append(self.inner(e))
        if self.outer is not None:
            parts.append(self.outer(e))
        return torch.cat(parts, dim=1)

    def forward(self, batch):
        """``{"fields": (B, F) long, ...} -> (B,)`` logits."""
        return self.mlp(self.signals(batch)).squeeze(-1)
