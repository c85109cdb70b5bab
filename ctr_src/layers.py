"""The building blocks every model in the book is composed from.

Shapes use ``B`` for the batch, ``F`` for the number of fields, ``D`` for the embedding
size, ``P = F (F - 1) / 2`` for the number of field pairs and ``L`` for a history length.
Pairs are always the ``i < j`` pairs in row-major order -- ``(0, 1), (0, 2), ..., (0, F-1),
(1, 2), ...`` -- as returned by :func:`pair_indices`; they are built once and kept as
buffers, never rebuilt in ``forward``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as nnf


# ----------------------------------------------------------------------------- checks

def check_fields(fields: torch.Tensor, field_dims: torch.Tensor | None = None, name: str = "fields") -> None:
    """Raise a clear error unless ``fields`` is a ``(B, F)`` integer tensor of valid indices."""
    if not isinstance(fields, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, F), got {type(fields).__name__}")
    if fields.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold integer indices (torch.long), got {fields.dtype}; "
                        f"encode the raw values with FieldEncoder and call .long()")
    if fields.ndim != 2:
        raise ValueError(f"{name} must have shape (B, F), got {tuple(fields.shape)}; "
                         f"a single row needs .unsqueeze(0)")
    if field_dims is not None:
        if fields.shape[1] != field_dims.numel():
            raise ValueError(f"{name} has {fields.shape[1]} fields, the layer was built for "
                             f"{field_dims.numel()}")
        bad = (fields < 0) | (fields >= field_dims)
        if bool(bad.any()):
            col = int(bad.any(0).nonzero()[0])
            raise IndexError(f"{name}: column {col} has an index outside [0, {int(field_dims[col])}); "
                             f"indices are per field (the layer adds the field offsets itself)")


def batch_fields(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``batch["fields"]`` with a helpful error when the batch is not a dict of tensors."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"a model takes a batch dict {{'fields': (B, F) long, ...}}, got "
                        f"{type(batch).__name__}; wrap a tensor as {{'fields': x}}")
    if "fields" not in batch:
        raise KeyError(f"the batch has no 'fields' entry (keys: {sorted(batch)})")
    return batch["fields"]


def pair_indices(num_fields: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the ``i < j`` pairs, row-major: ``P = F (F - 1) / 2`` each."""
    if num_fields < 2:
        raise ValueError(f"pairs need at least 2 fields, got {num_fields}")
    rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
    return rows, cols


class _Pairs(nn.Module):
    """Mixin: pair indices as non-persistent buffers, built once for ``num_fields``."""

    def _init_pairs(self, num_fields: int | None) -> None:
        self.num_fields = num_fields
        if num_fields is not None:
            rows, cols = pair_indices(num_fields)
        else:  # built on the first forward, then kept
            rows = cols = torch.zeros(0, dtype=torch.long)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def _pairs(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if e.ndim != 3:
            raise ValueError(f"expected embeddings of shape (B, F, D), got {tuple(e.shape)}")
        f = e.shape[1]
        if self.num_fields is None:
            self.num_fields = f
            rows, cols = pair_indices(f)
            self.rows, self.cols = rows.to(e.device), cols.to(e.device)
        elif f != self.num_fields:
            raise ValueError(f"expected {self.num_fields} fields, got {f}")
        return self.rows, self.cols

    @property
    def num_pairs(self) -> int:
        return self.num_fields * (self.num_fields - 1) // 2


# ----------------------------------------------------------------------------- embeddings

class _OffsetTable(nn.Module):
    """One table for all fields; field ``f``'s index ``k`` is row ``offsets[f] + k``."""

    def __init__(self, field_dims: Sequence[int], width: int):
        super().__init__()
        field_dims = [int(d) for d in field_dims]
        if not field_dims or min(field_dims) < 1:
            raise ValueError(f"field_dims must be positive sizes, got {field_dims}")
        self.field_dims = field_dims
        self.embedding = nn.Embedding(sum(field_dims), width)
        offsets = torch.tensor([0] + field_dims[:-1], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets)
        self.register_buffer("dims", torch.tensor(field_dims, dtype=torch.long), persistent=False)

    def rows(self, fields: torch.Tensor) -> torch.Tensor:
        """Global table rows of per-field indices: ``(B, F) -> (B, F)``."""
        check_fields(fields, self.dims)
        return fields.long() + self.offsets

    def lookup(self, fields: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        out = self.embedding(self.rows(fields))
        if values is not None:
            if values.shape != fields.shape:
                raise ValueError(f"values must match fields' shape {tuple(fields.shape)}, got {tuple(values.shape)}")
            out = out * values.unsqueeze(-1).to(out.dtype)
        return out


class FeaturesEmbedding(_OffsetTable):
    """A ``D``-dimensional vector per feature: ``(B, F) long -> (B, F, D) float``.

    ``values`` (optional, ``(B, F)`` float) scales each field's vector: a real-valued field
    ``x_i`` contributes ``x_i v_i``; one-hot fields have value 1.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int):
        super().__init__(field_dims, embed_dim)
        self.embed_dim = embed_dim
        nn.init.xavier_uniform_(self.embedding.weight)

    def forward(self, fields: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, F) long [, (B, F) float] -> (B, F, D) float``."""
        return self.lookup(fields, values)

    def field_rows(self, field: int, index: torch.Tensor) -> torch.Tensor:
        """Vectors of indices of one field (any shape ``S``): ``S long -> S + (D,)``."""
        if not 0 <= field < len(self.field_dims):
            raise IndexError(f"field {field} out of range for {len(self.field_dims)} fields")
        if index.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"indices must be integer (torch.long), got {index.dtype}")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.field_dims[field]):
            raise IndexError(f"index outside [0, {self.field_dims[field]}) for field {field}")
        return self.embedding(index.long() + self.offsets[field])


class FeaturesLinear(_OffsetTable):
    """The first-order term ``b + sum_i w_i x_i``: ``(B, F) long -> (B, 1) float``.

    A weight per feature, stored as an embedding of width 1 -- exactly a linear layer on
    the one-hot encoding, without ever building the one-hot vector.
    """

    def __init__(self, field_dims: Sequence[int], output_dim: int = 1):
        super().__init__(field_dims, output_dim)
        nn.init.zeros_(self.embedding.weight)
        self.bias = nn.Parameter(torch.zeros(output_dim))

    def forward(self, fields: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, F) long [, (B, F) float] -> (B, 1) float``."""
        return self.lookup(fields, values).sum(dim=1) + self.bias


# ----------------------------------------------------------------------------- interactions

class FMInteraction(nn.Module):
    """Rendle's pairwise term in O(F D): ``sum_{i<j} <v_i x_i, v_j x_j>``.

    ``0.5 * sum_d [(sum_i e_id)^2 - sum_i e_id^2]`` with ``e_i = v_i x_i``.
    ``(B, F, D) -> (B, 1)``, or ``(B, D)`` (the bi-interaction vector) if ``reduce_sum=False``.
    """

    def __init__(self, reduce_sum: bool = True):
        super().__init__()
        self.reduce_sum = reduce_sum

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """``(B, F, D) -> (B, 1)`` or ``(B, D)``."""
        if e.ndim != 3:
            raise ValueError(f"FMInteraction expects (B, F, D), got {tuple(e.shape)}")
        square_of_sum = e.sum(dim=1).pow(2)
        sum_of_square = e.pow(2).sum(dim=1)
        out = 0.5 * (square_of_sum - sum_of_square)
        return out.sum(dim=1, keepdim=True) if self.reduce_sum else out


class InnerProduct(_Pairs):
    """All pairwise inner products ``p_ij = <e_i, e_j>``: ``(B, F, D) -> (B, P)``."""

    def __init__(self, num_fields: int | None = None):
        super().__init__()
        self._init_pairs(num_fields)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """``(B, F, D) -> (B, P)``, pairs ``i < j`` row-major."""
        rows, cols = self._pairs(e)
        return (e[:, rows] * e[:, cols]).sum(dim=-1)


class OuterProduct(_Pairs):
    """Outer products ``e_i e_j^T`` reduced by a learned kernel: ``(B, F, D) -> (B, P)``.

    * ``kernel="mat"``: ``p_ij = e_i^T W_ij e_j = sum(W_ij * e_i e_j^T)``, a ``D x D`` matrix per pair;
    * ``kernel="vec"``: ``p_ij = sum_d w_ij[d] e_id e_jd``, a vector per pair (a diagonal ``W_ij``);
    * ``kernel="num"``: ``p_ij = w_ij <e_i, e_j>``, a scalar per pair.
    """

    KERNELS = ("mat", "vec", "num")

    def __init__(self, num_fields: int, embed_dim: int, kernel: str = "mat"):
        super().__init__()
        if kernel not in self.KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {self.KERNELS}")
        self._init_pairs(num_fields)
        self.kernel_type = kernel
        p = self.num_pairs
        shape = {"mat": (p, embed_dim, embed_dim), "vec": (p, embed_dim), "num": (p, 1)}[kernel]
        self.kernel = nn.Parameter(torch.empty(shape))
        bound = 1.0 / math.sqrt(embed_dim)
        nn.init.uniform_(self.kernel, -bound, bound)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """``(B, F, D) -> (B, P)``, pairs ``i < j`` row-major."""
        rows, cols = self._pairs(e)
        ei, ej = e[:, rows], e[:, cols]  # (B, P, D)
        if self.kernel_type == "mat":
            return torch.einsum("bpd,pde,bpe->bp", ei, self.kernel, ej)
        return (ei * ej * self.kernel).sum(dim=-1)


class AttentionalInteraction(_Pairs):
    """AFM's attention-based pooling of pairwise interactions (Xiao et al., 2017).

    For every pair ``i < j``: ``u_ij = e_i * e_j`` (element-wise, ``e_i = v_i x_i``),
    a score ``a'_ij = h^T ReLU(W u_ij + b)``, weights ``a_ij = softmax over the P pairs``, and
    the output ``sum_ij a_ij u_ij``. ``(B, F, D) -> (B, D)``; with ``return_attention=True``
    also the weights ``(B, P)`` (each row sums to 1). ``uniform=True`` replaces the
    attention network by ``a_ij = 1 / P`` (AFM without attention). Dropout acts on the
    pairwise interactions that are pooled, as in the paper, and is off in ``eval()``.
    """

    def __init__(self, embed_dim: int, attention_dim: int = 16, dropout: float = 0.0,
                 num_fields: int | None = None, uniform: bool = False):
        super().__init__()
        self._init_pairs(num_fields)
        self.uniform = uniform
        self.attention = nn.Linear(embed_dim, attention_dim)
        self.projection = nn.Linear(attention_dim, 1, bias=False)  # h
        self.dropout = nn.Dropout(dropout)

    def weights(self, e: torch.Tensor) -> torch.Tensor:
        """Attention over pairs: ``(B, F, D) -> (B, P)``, rows summing to 1."""
        rows, cols = self._pairs(e)
        return self._weights(e[:, rows] * e[:, cols])

    def _weights(self, u: torch.Tensor) -> torch.Tensor:
        if self.uniform:
            return torch.full(u.shape[:2], 1.0 / u.shape[1], dtype=u.dtype, device=u.device)
        scores = self.projection(torch.relu(self.attention(u))).squeeze(-1)  # (B, P)
        return torch.softmax(scores, dim=1)

    def forward(self, e: torch.Tensor, return_attention: bool = False):
        """``(B, F, D) -> (B, D)`` [and ``(B, P)`` weights]."""
        rows, cols = self._pairs(e)
        u = e[:, rows] * e[:, cols]  # (B, P, D)
        a = self._weights(u)
        out = (a.unsqueeze(-1) * self.dropout(u)).sum(dim=1)
        return (out, a) if return_attention else out


# ----------------------------------------------------------------------------- MLP & activations

class Dice(nn.Module):
    """DIN's data-adaptive activation (Zhou et al., 2018).

    ``f(s) = p(s) s + (1 - p(s)) alpha s`` with ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))``.
    In training ``E[s]`` and ``Var[s]`` are the minibatch's (per channel, over every row --
    and every valid position of a ``(B, L, H)`` input when a ``mask`` is given); running
    averages (``momentum``) replace them in ``eval()``. With ``E = 0`` and ``Var -> inf``,
    ``p = 1/2``; with ``alpha = 0`` and a fixed ``p`` it is a soft ReLU gate.
    Input ``(B, H)`` or ``(B, L, H)``; output of the same shape.
    """

    def __init__(self, num_features: int, eps: float = 1e-8, momentum: float = 0.1):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.alpha = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, H)`` or ``(B, L, H)`` [+ ``(B, L)`` bool mask] -> same shape."""
        if x.shape[-1] != self.alpha.numel():
            raise ValueError(f"Dice was built for {self.alpha.numel()} features, got {x.shape[-1]}")
        if self.training:
            flat = x.reshape(-1, x.shape[-1])
            if mask is not None:
                flat = flat[mask.reshape(-1)]
            if flat.shape[0] > 1:
                mean = flat.mean(dim=0)
                var = flat.var(dim=0, unbiased=False)
                with torch.no_grad():
                    n = flat.shape[0]
                    self.running_mean.lerp_(mean.detach(), self.momentum)
                    self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
            else:  # a single valid row has no batch statistics: use the running ones
                mean, var = self.running_mean, self.running_var
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((x - mean) / torch.sqrt(var + self.eps))
        return p * x + (1 - p) * self.alpha * x


def activation_layer(name: str, width: int) -> nn.Module:
    """``"relu"``, ``"prelu"`` (one learned slope per channel), ``"dice"``, ``"sigmoid"`` or ``"tanh"``."""
    name = name.lower()
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return ChannelPReLU(width)
    if name == "dice":
        return Dice(width)
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; use relu, prelu, dice, sigmoid or tanh")


class ChannelPReLU(nn.Module):
    """PReLU with one slope per channel of the **last** dimension (``(..., H) -> (..., H)``)."""

    def __init__(self, num_features: int, init: float = 0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_features,), init))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.where(x >= 0, x, self.weight * x)


class MLP(nn.Module):
    """Fully connected layers: ``(B, input_dim) -> (B, output_dim)`` (or ``(B, hidden[-1])``).

    Each hidden layer is Linear -> [BatchNorm] -> activation -> Dropout. With
    ``output_dim=None`` the last hidden layer is the output.
    """

    def __init__(self, input_dim: int, hidden_dims: Sequence[int] = (64, 32), dropout: float = 0.0,
                 activation: str = "relu", batchnorm: bool = False, output_dim: int | None = 1):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden_dims:
            layers.append(nn.Linear(width, h))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(activation_layer(activation, h))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim))
            width = output_dim
        self.layers = nn.Sequential(*layers)
        self.input_dim = input_dim
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, input_dim) -> (B, output_dim)``."""
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"MLP expects (B, {self.input_dim}), got {tuple(x.shape)}")
        return self.layers(x)

    @property
    def output_layer(self) -> nn.Linear:
        return self.layers[-1]


class ActivationUnit(nn.Module):
    """DIN's local activation unit ``g(e_h, e_t)``: one score per history position.

    Input to a small MLP: ``[e_h, e_t, e_h - e_t, e_h * e_t]`` (``4 D``) for every position
    ``h``; hidden layers with PReLU or Dice; a linear output. The scores are **not**
    normalised here (DIN keeps their intensity); the model masks padding.
    ``(B, L, D), (B, D) [, (B, L) bool] -> (B, L)``.
    """

    def __init__(self, embed_dim: int, hidden_dims: Sequence[int] = (36,), activation: str = "dice"):
        super().__init__()
        widths = [4 * embed_dim, *hidden_dims]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(activation_layer(activation, b) for b in widths[1:])
        self.out = nn.Linear(widths[-1], 1)
        self.embed_dim = embed_dim

    def forward(self, history: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, D), (B, D) [, (B, L) bool] -> (B, L)`` raw scores."""
        if history.ndim != 3 or target.ndim != 2 or history.shape[-1] != target.shape[-1]:
            raise ValueError(f"expected history (B, L, D) and target (B, D), got "
                             f"{tuple(history.shape)} and {tuple(target.shape)}")
        t = target.unsqueeze(1).expand_as(history)
        x = torch.cat([history, t, history - t, history * t], dim=-1)
        for lin, act in zip(self.linears, self.activations):
            x = lin(x)
            x = act(x, mask) if isinstance(act, (Dice, ChannelPReLU)) else act(x)
        return self.out(x).squeeze(-1)
