"""Factorization machines (Rendle, 2010) and field-aware FMs (Juan et al., 2016).

Both read one-hot fields ``batch["fields"]`` ``(B, F) long`` and, optionally, real values
``batch["values"]`` ``(B, F) float``: field ``f`` then contributes the feature ``x_i`` with
value ``values[:, f]`` (default 1) to the linear term (``w_i x_i``) and to every pair
(``x_i x_j``), exactly as in the dense model equation.

**Real values, per model** (no MLP in any of them):

* FM: ``w_i x_i`` and ``<v_i, v_j> x_i x_j`` -- Rendle (2010), Sec. III-A,
  eq. (1), defines the model on a real-valued ``x`` (his Fig. 1 mixes
  one-hot and real-valued features). The embedding layer computes
  ``e_i = v_i x_i`` once, so the pair term is ``<e_i, e_j>``.
* FFM: ``w_i x_i`` and ``<v_{i,f(j)}, v_{j,f(i)}> x_i x_j`` -- Juan et al.
  (2016) write the pair term with ``x_{j1} x_{j2}`` and treat a numerical
  feature as a field with a real value (or discretise it). Whether their
  model keeps the linear term is from memory uncertain (LIBFFM has none);
  here it is the book's, like FM's.
* FwFM: ``w_i x_i`` and ``r_{f(i) f(j)} <v_i, v_j> x_i x_j`` -- Pan et al.
  (2018), Sec. 3, the FwFM equation.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..layers import FeaturesEmbedding, FeaturesLinear, FMInteraction, _Pairs
from .base import CTRModel


def _check_embed_dim(embed_dim) -> int:
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
        raise ValueError(f"embed_dim must be a positive int (the number of latent factors k), "
                         f"got {embed_dim!r}")
    return embed_dim


class FM(CTRModel):
    """``logit = w_0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j``, the pairs in O(F D).

    ``{"fields": (B, F) long[, "values": (B, F) float]} -> (B,)`` logits. Parameters: the
    first-order table ``linear`` (``n`` weights and the bias ``w_0``) and the latent vectors
    ``embedding`` (``n x D``), with ``n = sum(field_dims)``.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16):
        super().__init__()
        self.embed_dim = _check_embed_dim(embed_dim)
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.fm = FMInteraction(reduce_sum=True)

    def forward(self, batch):
        """``{"fields": (B, F) long[, "values": (B, F)]} -> (B,)`` logits."""
        fields, values = self.fields_of(batch), self.values_of(batch)
        e = self.embedding(fields, values)  # (B, F, D): e_i = v_i x_i
        return (self.linear(fields, values) + self.fm(e)).squeeze(-1)

    @torch.no_grad()
    def pair_terms(self, batch) -> torch.Tensor:
        """Every pair's contribution ``<v_i, v_j> x_i x_j``: ``(B, F, F)``, symmetric, zero
        diagonal; the sum over ``i < j`` is the model's pairwise term."""
        e = self.embedding(self.fields_of(batch), self.values_of(batch))
        g = torch.einsum("bid,bjd->bij", e, e)
        return g - torch.diag_embed(torch.diagonal(g, dim1=1, dim2=2))


class FFM(CTRModel, _Pairs):
    """Field-aware FM: feature ``i`` keeps one latent vector per field it may meet.

    ``logit = w_0 + sum_i w_i x_i + sum_{i<j} <v_{i, f(j)}, v_{j, f(i)}> x_i x_j``, where
    ``f(i)`` is the field of feature ``i``. One table of width ``F * D`` holds, for each of
    the ``n`` features, its ``F`` field-specific vectors: ``n F D`` pair parameters against
    FM's ``n D``, and ``O(F^2 D)`` work per row (no identity folds the pairs into ``O(F D)``,
    because the vector a feature uses changes with its partner).
    ``{"fields": (B, F) long[, "values": (B, F) float]} -> (B,)`` logits.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 4):
        super().__init__()
        self.embed_dim = _check_embed_dim(embed_dim)
        self._init_pairs(len(field_dims))  # sets self.num_fields and the i < j buffers
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, self.num_fields * embed_dim)

    def field_vectors(self, batch) -> torch.Tensor:
        """``(B, F, F, D)``: entry ``[b, i, g]`` is ``v_{i, g} x_i``, the vector feature ``i``
        (the value of field ``i`` in row ``b``) uses against field ``g``."""
        e = self.embedding(self.fields_of(batch), self.values_of(batch))
        return e.view(e.shape[0], self.num_fields, self.num_fields, self.embed_dim)

    def forward(self, batch):
        """``{"fields": (B, F) long[, "values": (B, F)]} -> (B,)`` logits."""
        v = self.field_vectors(batch)
        rows, cols = self.rows, self.cols
        pairs = (v[:, rows, cols] * v[:, cols, rows]).sum(dim=(1, 2))  # (B, P, D) -> (B,)
        return self.linear(self.fields_of(batch), self.values_of(batch)).squeeze(-1) + pairs

    @torch.no_grad()
    def pair_terms(self, batch) -> torch.Tensor:
        """Every pair's contribution ``<v_{i,f(j)}, v_{j,f(i)}> x_i x_j``: ``(B, F, F)``,
        symmetric, zero diagonal; the sum over ``i < j`` is the model's pairwise term."""
        v = self.field_vectors(batch)
        g = torch.einsum("bijd,bjid->bij", v, v)
        return g - torch.diag_embed(torch.diagonal(g, dim1=1, dim2=2))


class FwFM(CTRModel, _Pairs):
    """Field-weighted FM (Pan et al., WWW 2018): one learned weight per *field pair*.

    ``logit = w_0 + sum_i w_i x_i + sum_{i<j} r_{f(i) f(j)} <v_i, v_j> x_i x_j``: FM's pair
    term with a static, input-independent scalar ``r`` for each of the ``P = F (F - 1) / 2``
    field pairs (AFM's weights, by contrast, are recomputed for every row). ``r`` starts at
    1, so an untrained FwFM *is* the FM with the same tables (the paper does not fix the
    start; this is the book's choice). FM's ``O(F D)`` identity does not apply, because each
    pair is weighted differently: the pairs cost ``O(F^2 D)``, as in FFM, but with ``n D + P``
    pair parameters instead of FFM's ``n F D``.
    ``{"fields": (B, F) long[, "values": (B, F) float]} -> (B,)`` logits.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16):
        super().__init__()
        if len(field_dims) < 2:
            raise ValueError(f"FwFM needs at least 2 fields to form pairs, got "
                             f"{len(field_dims)}")
        self.embed_dim = _check_embed_dim(embed_dim)
        self._init_pairs(len(field_dims))  # sets self.num_fields and the i < j buffers
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.pair_weight = torch.nn.Parameter(torch.ones(len(self.rows)))

    def forward(self, batch):
        """``{"fields": (B, F) long[, "values": (B, F)]} -> (B,)`` logits."""
        fields, values = self.fields_of(batch), self.values_of(batch)
        e = self.embedding(fields, values)  # (B, F, D)
        # (B, P): <v_i, v_j> x_i x_j, read off the Gram matrix at the pairs' unique slots
        # (a gather whose backward never accumulates, unlike e[:, rows])
        dots = self._gram_pairs(e)
        return self.linear(fields, values).squeeze(-1) + dots @ self.pair_weight

    def field_pair_matrix(self) -> torch.Tensor:
        """``r`` as a symmetric ``(F, F)`` matrix with a zero diagonal."""
        w = self.pair_weight.detach()
        r = w.new_zeros(self.num_fields, self.num_fields)
        r = r.index_put((self.rows, self.cols), w)
        return r + r.T

    @torch.no_grad()
    def pair_terms(self, batch) -> torch.Tensor:
        """Every pair's contribution ``r_{f(i)f(j)} <v_i, v_j> x_i x_j``: ``(B, F, F)``,
        symmetric, zero diagonal; the sum over ``i < j`` is the model's pairwise term."""
        e = self.embedding(self.fields_of(batch), self.values_of(batch))
        return torch.einsum("bid,bjd->bij", e, e) * self.field_pair_matrix()
