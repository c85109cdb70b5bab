"""The building blocks every model in the book is composed from.

Shapes use ``B`` for the batch, ``F`` for the number of fields, ``D`` for the embedding
size, ``P = F (F - 1) / 2`` for the number of field pairs and ``L`` for a history length.
Pairs are always the ``i < j`` pairs in row-major order -- ``(0, 1), (0, 2), ..., (0, F-1),
(1, 2), ...`` -- as returned by :func:`pair_indices`; they are built once and kept as
buffers, never rebuilt in ``forward``.

Gathering pairs and determinism: ``e.index_select(1, rows)`` or ``e[:, rows]`` repeats each
field ``F - 1`` times, so its backward sums several gradients into one slot with an
accumulating scatter -- ``index_add``, which adds atomically on CUDA, or
``index_put(accumulate=True)``, which may on a multi-threaded CPU (PyTorch lists both as
nondeterministic). Atomic additions land in a varying order, so the float rounding of the
gradient changes from run to run. The pair layers therefore never gather with repeated
indices: they read ``<e_i, e_j>`` off the Gram matrix ``e e^T`` at the *unique* positions
``i F + j`` (a gather whose backward writes every slot once), or build ``e_i`` and ``e_j`` for
all pairs with fixed 0/1 selection matrices (``S_rows @ e == e[:, rows]``, exactly), whose
backward is a matrix product. Both are deterministic without any global flag.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as nnf


# ----------------------------------------------------------------------------- checks

_CHECKS = threading.local()


@contextlib.contextmanager
def skip_index_checks():
    """Within this block the layers do not scan indices for out-of-range values.

    Every embedding layer checks at each call that each field's indices lie in
    ``[0, field_dims[f])``: a scan of the batch and a host sync, which costs a few
    percent of a small model's step (``benchmarks/peers.py --check-cost`` measures it).
    :func:`ctr_src.train.fit`, ``evaluate`` and ``predict`` validate a whole data set once
    at the boundary (:func:`check_index_range`) and then run their batches inside this
    block; the export functions use it because a data-dependent ``if`` cannot be traced.
    Shapes and dtypes are still checked. It applies to the current thread and nests.
    """
    depth = getattr(_CHECKS, "skip", 0)
    _CHECKS.skip = depth + 1
    try:
        yield
    finally:
        _CHECKS.skip = depth


def index_checks_enabled() -> bool:
    """False inside :func:`skip_index_checks` (on this thread)."""
    return not getattr(_CHECKS, "skip", 0)


def _first_bad(bad: torch.Tensor) -> tuple[int, int]:
    """``(row, column)`` of the first ``True`` of the first column that has one."""
    col = int(bad.any(0).nonzero()[0])
    return int(bad[:, col].nonzero()[0]), col


def check_index_range(fields: torch.Tensor, field_dims, name: str = "fields") -> None:
    """Raise ``IndexError`` naming the first bad column unless every index is in range.

    ``fields`` is ``(N, F)`` (a whole data set, scanned in one pass) and ``field_dims``
    the ``F`` vocabulary sizes; the message says where the offending value is.
    """
    dims = torch.as_tensor(list(field_dims) if not isinstance(field_dims, torch.Tensor)
                           else field_dims, device=fields.device)
    if fields.ndim != 2 or fields.shape[1] != dims.numel():
        raise ValueError(f"{name} must have shape (N, {dims.numel()}), got "
                         f"{tuple(fields.shape)}")
    bad = (fields < 0) | (fields >= dims)
    if bool(bad.any()):
        row, col = _first_bad(bad)
        raise IndexError(
            f"{name}: column {col} has an index outside [0, {int(dims[col])}) "
            f"(row {row}: {int(fields[row, col])}); indices are per field (the layer adds "
            f"the field offsets itself) -- encode new data with the training data's "
            f"encoder, which maps unseen values to index 0")


def check_fields(fields: torch.Tensor, field_dims: torch.Tensor | None = None, name: str = "fields") -> None:
    """Raise a clear error unless ``fields`` is a ``(B, F)`` integer tensor of valid indices.

    The range scan is skipped inside :func:`skip_index_checks` (the caller has validated
    the whole data set already); the type and shape checks never are.
    """
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
        if index_checks_enabled():
            check_index_range(fields, field_dims, name)


def check_values(values: torch.Tensor, name: str = "values") -> None:
    """Raise a clear error unless ``values`` is a float ``(B, F)`` tensor of
    finite numbers.

    The scan for NaN and inf is skipped inside :func:`skip_index_checks` (the
    caller has checked the whole data set, as
    :meth:`~ctr_src.models.CTRModel.check_inputs` does); the type check never
    is.
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, F), got "
                        f"{type(values).__name__}")
    if not values.is_floating_point():
        raise TypeError(f"{name} must hold real numbers (a float tensor), "
                        f"got {values.dtype}; convert with .float() (1.0 for "
                        f"a one-hot field)")
    if values.ndim != 2:
        raise ValueError(f"{name} must have shape (B, F), got "
                         f"{tuple(values.shape)}")
    if not index_checks_enabled():
        return
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        row, col = _first_bad(bad)
        raise ValueError(
            f"{name}: column {col} has a non-finite value (row {row}: "
            f"{float(values[row, col])}); a real value scales its field's "
            f"vector, so NaN or inf spreads to the logit -- fill missing "
            f"values before training (e.g. 1.0 and a field index that marks "
            f"them missing, as ctr_src.data.load_criteo does)")


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


def pair_selectors(num_fields: int, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 matrices ``S_rows``, ``S_cols`` of shape ``(P, F)`` with ``S_rows @ e == e[:, rows]``.

    Row ``p`` of ``S_rows`` is one-hot at ``rows[p]`` (of ``S_cols`` at ``cols[p]``), so for
    embeddings ``e`` of shape ``(B, F, D)`` the product ``S_rows @ e`` is ``(B, P, D)`` with
    ``e_i`` in the slot of every pair ``(i, j)`` -- exactly (a sum of one ``1 * e_i`` and zeros),
    for finite ``e``. Its backward ``S_rows^T @ grad`` is a matrix product, deterministic on
    CPU and CUDA, unlike the scatter behind ``e[:, rows]``.
    """
    rows, cols = pair_indices(num_fields)
    pos = torch.arange(rows.numel())
    sel_rows = torch.zeros(rows.numel(), num_fields, dtype=dtype, device=device)
    sel_cols = torch.zeros(rows.numel(), num_fields, dtype=dtype, device=device)
    sel_rows[pos, rows] = 1
    sel_cols[pos, cols] = 1
    return sel_rows, sel_cols


class _Pairs(nn.Module):
    """Mixin: pair indices as non-persistent buffers, built once for ``num_fields``.

    ``rows``, ``cols``: the ``(P,)`` pair indices; ``flat``: the unique positions
    ``rows * F + cols`` of the pairs in a flattened ``F x F`` matrix; with
    ``selectors=True`` also ``sel_rows``, ``sel_cols``: the ``(P, F)`` matrices of
    :func:`pair_selectors`. None of them is saved in the ``state_dict``.
    """

    def _init_pairs(self, num_fields: int | None, selectors: bool = False) -> None:
        self.num_fields = num_fields
        self._selectors = selectors
        empty = torch.zeros(0, dtype=torch.long)
        for name in ("rows", "cols", "flat"):
            self.register_buffer(name, empty.clone(), persistent=False)
        if selectors:
            for name in ("sel_rows", "sel_cols"):
                self.register_buffer(name, torch.zeros(0, 0), persistent=False)
        if num_fields is not None:  # otherwise built on the first forward, then kept
            self._build_pairs(num_fields, torch.device("cpu"), torch.get_default_dtype())

    def _build_pairs(self, num_fields: int, device: torch.device, dtype: torch.dtype) -> None:
        rows, cols = pair_indices(num_fields)
        self.rows, self.cols = rows.to(device), cols.to(device)
        self.flat = (rows * num_fields + cols).to(device)
        if self._selectors:
            self.sel_rows, self.sel_cols = pair_selectors(num_fields, dtype, device)

    def _pairs(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if e.ndim != 3:
            raise ValueError(f"expected embeddings of shape (B, F, D), got {tuple(e.shape)}")
        f = e.shape[1]
        if self.num_fields is None:
            self.num_fields = f
            self._build_pairs(f, e.device, e.dtype if e.is_floating_point() else torch.get_default_dtype())
        elif f != self.num_fields:
            raise ValueError(f"expected {self.num_fields} fields, got {f}")
        return self.rows, self.cols

    def _gram_pairs(self, e: torch.Tensor) -> torch.Tensor:
        """``<e_i, e_j>`` for the pairs: ``(B, F, D) -> (B, P)``, via the Gram matrix.

        ``e @ e^T`` is ``(B, F, F)``; the pairs sit at the unique flat positions ``i F + j``,
        so the gather's backward writes each slot once (no accumulation, nothing to race).
        """
        self._pairs(e)
        return (e @ e.transpose(1, 2)).flatten(1).index_select(1, self.flat)

    def _pair_vectors(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(e[:, rows], e[:, cols])``, each ``(B, P, D)``, via the selection matrices.

        A gather with repeated indices would do, but its backward is an accumulating scatter
        (nondeterministic on CUDA); ``S @ e`` has a matrix product as its backward. (With
        TF32 matrix products switched on -- off by default -- the selection rounds ``e`` to
        TF32 like every other matrix product in the model.)
        """
        self._pairs(e)
        sel_rows, sel_cols = self.sel_rows, self.sel_cols
        if sel_rows.dtype != e.dtype:  # e.g. a float64 input to a float32 layer
            sel_rows, sel_cols = sel_rows.to(e.dtype), sel_cols.to(e.dtype)
        return torch.matmul(sel_rows, e), torch.matmul(sel_cols, e)

    @property
    def num_pairs(self) -> int:
        return self.num_fields * (self.num_fields - 1) // 2


# ----------------------------------------------------------------------------- embeddings

class _CPULookup(torch.autograd.Function):
    """``weight[rows]`` whose backward sums with ``index_add_`` (CPU only).

    The forward is ``nn.Embedding``'s (an ``index_select``). PyTorch's CPU backward for
    ``nn.Embedding`` (``embedding_dense_backward``) splits the table among threads and has
    every thread scan all ``B F`` indices, adding one row at a time; ``index_add_`` adds the
    same gradient rows into a zeroed table in the same order -- row ``r`` receives
    ``((0 + g_1) + g_2) + ...`` over its occurrences in batch order either way, so the
    result is bit for bit the same (``tests/test_fast_paths.py`` checks it) -- several
    times faster (``benchmarks/peers.py`` shows what it does to a training epoch). On CUDA
    ``index_add_`` would add with atomics in a varying order, so CUDA keeps
    ``nn.Embedding``'s deterministic sort-based backward.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.num_rows = weight.shape[0]
        return nnf.embedding(rows, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        out = flat.new_zeros(ctx.num_rows, flat.shape[1])
        return out.index_add_(0, rows.reshape(-1), flat), None


def embedding_lookup(table: nn.Embedding, rows: torch.Tensor) -> torch.Tensor:
    """``table(rows)``, with a faster, bit-identical backward on the CPU (:class:`_CPULookup`).

    The plain ``nn.Embedding`` call is used wherever no gradient is needed, on CUDA, and
    under ``torch.compile``/TorchScript/export, which trace the standard operator.
    """
    w = table.weight
    if (w.device.type == "cpu" and w.requires_grad and torch.is_grad_enabled()
            and table.padding_idx is None and table.max_norm is None
            and not table.scale_grad_by_freq and not table.sparse
            and not torch.jit.is_scripting() and not torch.compiler.is_compiling()):
        return _CPULookup.apply(w, rows)
    return table(rows)


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
        out = embedding_lookup(self.embedding, self.rows(fields))
        if values is not None:
            check_values(values)
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
        if (index.numel() and index_checks_enabled()
                and (int(index.min()) < 0 or int(index.max()) >= self.field_dims[field])):
            raise IndexError(f"index outside [0, {self.field_dims[field]}) for field {field}")
        return embedding_lookup(self.embedding, index.long() + self.offsets[field])


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
    """Rendle's pairwise term in ``O(F D)``: ``sum_{i<j} <e_i, e_j>`` with ``e_i = v_i x_i``.

    By Rendle's lemma, ``sum_{i<j} <e_i, e_j> = 1/2 sum_d [(sum_i e_id)^2 - sum_i e_id^2]``:
    the square of the sum minus the sum of the squares, per latent dimension ``d``. With
    real-valued features the embedding layer has already scaled ``v_i`` by ``x_i``, so the
    second sum is ``sum_i v_id^2 x_i^2``.

    ``(B, F, D) -> (B, 1)``, or, with ``reduce_sum=False``, the bi-interaction vector
    ``sum_{i<j} e_i * e_j`` of shape ``(B, D)`` (before the sum over ``d``).
    """

    def __init__(self, reduce_sum: bool = True):
        super().__init__()
        if not isinstance(reduce_sum, bool):
            raise TypeError(f"reduce_sum must be True or False, got {reduce_sum!r}")
        self.reduce_sum = reduce_sum

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """``(B, F, D) -> (B, 1)`` or ``(B, D)``."""
        if not isinstance(e, torch.Tensor) or e.ndim != 3:
            shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise ValueError(f"FMInteraction expects embeddings of shape (B, F, D), got {shape}; "
                             f"embed the fields first (FeaturesEmbedding)")
        square_of_sum = e.sum(dim=1).pow(2)  # (B, D)
        sum_of_square = e.pow(2).sum(dim=1)  # (B, D)
        out = 0.5 * (square_of_sum - sum_of_square)
        return out.sum(dim=1, keepdim=True) if self.reduce_sum else out


class InnerProduct(_Pairs):
    """All pairwise inner products ``p_ij = <e_i, e_j>`` (IPNN): ``(B, F, D) -> (B, P)``.

    No parameters. ``num_fields`` fixes ``F`` up front (the pair indices are built once);
    left out, it is taken from the first input and then kept.
    """

    def __init__(self, num_fields: int | None = None):
        super().__init__()
        self._init_pairs(num_fields)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """``(B, F, D) -> (B, P)``, pairs ``i < j`` row-major."""
        # the i < j entries of the Gram matrix e e^T, read at unique positions: the same
        # numbers as (e[:, rows] * e[:, cols]).sum(-1), with a backward that is deterministic
        # on CUDA too (see the module docstring) -- and faster
        return self._gram_pairs(e)


class OuterProduct(_Pairs):
    """Outer products ``e_i e_j^T`` reduced by a learned kernel (OPNN): ``(B, F, D) -> (B, P)``.

    * ``kernel="mat"``: ``p_ij = e_i^T W_ij e_j = sum(W_ij * e_i e_j^T)``, a ``D x D`` matrix
      per pair (``P D^2`` parameters, ``O(P D^2)`` work per row);
    * ``kernel="vec"``: ``p_ij = sum_d w_ij[d] e_id e_jd``, a vector per pair -- a diagonal
      ``W_ij`` (``P D`` parameters);
    * ``kernel="num"``: ``p_ij = w_ij <e_i, e_j>``, a scalar per pair -- ``W_ij = w_ij I``
      (``P`` parameters).

    With ``W_ij = I`` (``"mat"``), ``w_ij = 1`` (``"vec"``) or ``w_ij = 1`` (``"num"``) every
    kernel gives :class:`InnerProduct`'s ``<e_i, e_j>``. The kernel is stored in
    ``self.kernel`` with shape ``(P, D, D)``, ``(P, D)`` or ``(P, 1)``.
    """

    KERNELS = ("mat", "vec", "num")

    def __init__(self, num_fields: int, embed_dim: int, kernel: str = "mat"):
        super().__init__()
        if kernel not in self.KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {self.KERNELS}")
        if not isinstance(num_fields, int) or isinstance(num_fields, bool):
            raise TypeError(f"num_fields must be an int (the kernel has one entry per pair), "
                            f"got {num_fields!r}")
        if not isinstance(embed_dim, int) or isinstance(embed_dim, bool) or embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        self._init_pairs(num_fields, selectors=kernel != "num")
        self.kernel_type = kernel
        self.embed_dim = embed_dim
        p = self.num_pairs
        shape = {"mat": (p, embed_dim, embed_dim), "vec": (p, embed_dim), "num": (p, 1)}[kernel]
        self.kernel = nn.Parameter(torch.empty(shape))
        bound = 1.0 / math.sqrt(embed_dim)
        nn.init.uniform_(self.kernel, -bound, bound)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """``(B, F, D) -> (B, P)``, pairs ``i < j`` row-major."""
        self._pairs(e)
        if e.shape[-1] != self.embed_dim:
            raise ValueError(f"OuterProduct was built for embed_dim={self.embed_dim}, got "
                             f"embeddings of size {e.shape[-1]}")
        if self.kernel_type == "num":  # w_ij <e_i, e_j>
            return self._gram_pairs(e) * self.kernel.squeeze(-1)
        # e_i and e_j of every pair, (B, P, D) each (deterministic backward, see _Pairs)
        ei, ej = self._pair_vectors(e)
        if self.kernel_type == "vec":  # sum_d w_ij[d] e_id e_jd
            return (ei * ej * self.kernel).sum(dim=-1)
        # "mat": e_i^T (W_ij e_j), with W_ij e_j formed for every pair: (B, P, D)
        wej = torch.einsum("pde,bpe->bpd", self.kernel, ej)
        return (ei * wej).sum(dim=-1)


class AttentionalInteraction(_Pairs):
    """AFM's attention-based pooling of pairwise interactions (Xiao et al., 2017).

    With ``e_i = v_i x_i`` (``(B, F, D)``) and the pairs ``i < j`` in the row-major order of
    :func:`pair_indices` (``(0, 1), (0, 2), ..., (F-2, F-1)``, ``P = F (F - 1) / 2`` of them):

    * pair-wise interaction: ``u_ij = e_i * e_j`` (element-wise), ``(B, P, D)``;
    * attention score: ``a'_ij = h^T ReLU(W u_ij + b)``, with ``W`` ``(A, D)``, ``b`` ``(A,)``
      (``self.attention``) and ``h`` ``(A,)`` (``self.projection``, no bias);
    * weights: ``a_ij = softmax`` of the scores **over the P pairs** of each row;
    * output: ``sum_ij a_ij u_ij``, ``(B, D)``.

    Call ``layer(e)`` for ``(B, D)``; ``layer(e, return_attention=True)`` for
    ``((B, D), (B, P))``; ``layer.weights(e)`` for the weights alone (every row sums to 1).
    ``uniform=True`` is AFM *without* attention: ``a_ij = 1 / P`` and no attention
    parameters at all. Dropout (rate ``dropout``) acts on the pairwise interactions that
    are pooled -- not on the weights, which always sum to 1 -- and is off in ``eval()``.
    """

    def __init__(self, embed_dim: int, attention_dim: int = 16, dropout: float = 0.0,
                 num_fields: int | None = None, uniform: bool = False):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("attention_dim", attention_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout is a rate in [0, 1), got {dropout!r}")
        self._init_pairs(num_fields, selectors=True)
        self.embed_dim = embed_dim
        self.uniform = bool(uniform)
        if self.uniform:  # no attention network: nothing to train, nothing to count
            self.attention = self.projection = None
        else:
            self.attention = nn.Linear(embed_dim, attention_dim)          # W, b
            self.projection = nn.Linear(attention_dim, 1, bias=False)     # h
        self.dropout = Dropout(float(dropout))

    def interactions(self, e: torch.Tensor) -> torch.Tensor:
        """The pair-wise interaction layer ``u_ij = e_i * e_j``: ``(B, F, D) -> (B, P, D)``."""
        if e.ndim == 3 and e.shape[-1] != self.embed_dim:
            raise ValueError(f"AttentionalInteraction was built for embed_dim={self.embed_dim}, "
                             f"got embeddings of shape {tuple(e.shape)}")
        ei, ej = self._pair_vectors(e)  # e[:, rows], e[:, cols], deterministic backward
        return ei * ej

    def scores(self, u: torch.Tensor) -> torch.Tensor:
        """Unnormalised scores ``a'_ij = h^T ReLU(W u_ij + b)``: ``(B, P, D) -> (B, P)``."""
        if self.uniform:
            return torch.zeros(u.shape[:2], dtype=u.dtype, device=u.device)
        return self.projection(torch.relu(self.attention(u))).squeeze(-1)

    def weights(self, e: torch.Tensor) -> torch.Tensor:
        """Attention over pairs: ``(B, F, D) -> (B, P)``, every row summing to 1."""
        return self._weights(self.interactions(e))

    def _weights(self, u: torch.Tensor) -> torch.Tensor:
        if self.uniform:
            return torch.full(u.shape[:2], 1.0 / u.shape[1], dtype=u.dtype, device=u.device)
        return torch.softmax(self.scores(u), dim=1)  # dim 1 = the P pairs, never a size-1 dim

    def forward(self, e: torch.Tensor, return_attention: bool = False):
        """``(B, F, D) -> (B, D)``; with ``return_attention=True`` also the ``(B, P)`` weights."""
        u = self.interactions(e)  # (B, P, D)
        a = self._weights(u)      # (B, P)
        out = (a.unsqueeze(-1) * self.dropout(u)).sum(dim=1)
        return (out, a) if return_attention else out


# ----------------------------------------------------------------------------- dropout

class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask costs a third as much (the same distribution, up to
    the rounding of ``p`` below).

    In training each element is kept with probability ``1 - p`` and scaled by the inverse of
    that probability; in ``eval()`` it is the identity. On the CPU PyTorch draws its mask
    with ``bernoulli_``, which spends two 32-bit draws of its Mersenne Twister and a double
    per element -- more time than the matrix products of a small MLP. Here one 32-bit draw
    gives two elements their 15 random bits each: an element is kept when its 15-bit number
    ``r`` (uniform on ``0 .. 32767``) is at least ``t = round(32768 p)``, and scaled by
    ``32768 / (32768 - t)``. So the drop rate is ``p`` rounded to a multiple of
    ``2^-15`` (0.2 becomes 0.20001, 0.5 stays 0.5) and the layer is unbiased exactly:
    ``E[output] = input``. The masks are other random numbers than ``nn.Dropout``'s --
    like another seed, not another model -- drawn from the default CPU generator, so
    ``torch.manual_seed`` repeats them. On every other device (CUDA has a fast fused
    kernel) it is ``nn.Dropout``.
    """

    RESOLUTION = 1 << 15

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        t = round(self.p * self.RESOLUTION)
        if t >= self.RESOLUTION:  # p within 2^-16 of 1: everything dropped
            return x * 0.0
        n = x.numel()
        # random_ on int32 draws 31 uniform bits; as two int16 halves masked to 15 bits
        # each, both are uniform on 0 .. 32767 (on any byte order)
        words = torch.empty((n + 1) // 2, dtype=torch.int32).random_()
        r = words.view(torch.int16)[:n].view(x.shape).bitwise_and_(0x7FFF)
        mask = r.ge_(t).to(x.dtype).mul_(self.RESOLUTION / (self.RESOLUTION - t))
        return x * mask


# ----------------------------------------------------------------------------- MLP & activations

class Dice(nn.Module):
    """DIN's data-adaptive activation (Zhou et al., 2018).

    ``f(s) = p(s) s + (1 - p(s)) alpha s`` with ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))``,
    one ``alpha`` per channel (initialised to 0). In training ``E[s]`` and ``Var[s]`` are the
    minibatch's (per channel, over every row -- and over the real positions only of a
    ``(B, L, H)`` input when a ``(B, L)`` bool ``mask`` is given), and gradients flow through
    them as in batch normalisation; running averages (``running = (1 - momentum) running +
    momentum batch``, the variance unbiased) replace them in ``eval()``. A batch with a single
    real row has no variance: the running statistics are used then too.

    With the statistics fixed at ``E = 0``, ``Var = 1 - eps`` the gate is ``sigmoid(s)``; as
    ``Var -> 0`` it tends to a step at ``E`` and Dice to PReLU with its kink at ``E``.
    Input ``(B, H)`` or ``(B, L, H)``; output of the same shape.
    """

    def __init__(self, num_features: int, eps: float = 1e-8, momentum: float = 0.1):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.eps = eps
        self.momentum = momentum
        self.alpha = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, H)`` or ``(B, L, H)`` [+ ``(B, L)`` bool mask] -> same shape."""
        if x.shape[-1] != self.alpha.numel():
            raise ValueError(f"Dice was built for {self.alpha.numel()} features, got {x.shape[-1]}")
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:-1])):
            raise ValueError(f"mask must be a bool tensor of shape {tuple(x.shape[:-1])}, got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        if self.training:
            flat = x.reshape(-1, x.shape[-1])
            if mask is not None:
                flat = flat[mask.reshape(-1)]
            if flat.shape[0] > 1:
                mean = flat.mean(dim=0)
                var = flat.var(dim=0, unbiased=False)
                with torch.no_grad():
                    n = flat.shape[0]
                    self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                    self.running_var.lerp_((var.detach() * n / (n - 1)).to(self.running_var.dtype),
                                           self.momentum)
            else:  # a single real row has no batch statistics: use the running ones
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
    """PReLU with one slope per channel of the **last** dimension (``(..., H) -> (..., H)``).

    ``f(s) = s`` for ``s >= 0`` and ``a s`` otherwise (``a`` learned, initialised to ``init``).
    It takes the same ``mask`` argument as :class:`Dice` so the two are interchangeable, and
    ignores it (PReLU has no statistics that padding could disturb).
    """

    def __init__(self, num_features: int, init: float = 0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_features,), float(init)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(..., H) [+ mask, ignored] -> (..., H)``."""
        if x.shape[-1] != self.weight.numel():
            raise ValueError(f"ChannelPReLU was built for {self.weight.numel()} features, got {x.shape[-1]}")
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
                layers.append(Dropout(dropout))
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
    ``h``; hidden layers (``hidden_dims``) with PReLU or Dice; a linear output. The scores
    are **not** normalised here (DIN keeps their intensity). The ``mask`` only keeps padded
    positions out of Dice's batch statistics; the scores at padded positions are computed
    like any other and the *caller* must zero them (as :class:`~ctr_src.models.DIN` does).
    A position's score depends on its own item and the target only (in training, Dice's
    batch statistics also see the other real positions -- but not their order).
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
