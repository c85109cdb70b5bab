"""Repeatable runs: no accumulating scatters in the backward, and what ``seed_everything`` sets.

A gather whose indices repeat (``e.index_select(1, rows)``, ``e[:, rows]``) has an
accumulating scatter as its backward: ``index_add``, which sums with atomic additions on CUDA,
or ``index_put(accumulate=True)``, which may on a multi-threaded CPU. Atomic additions land in
a varying order, so gradients change in the last bits from run to run. CI has no GPU, so the
property is checked on the *structure* of the autograd graph: every gather-type node must read
each slot at most once. ``tests/test_gpu.py`` checks the outcome (bit-identical gradients)
where a GPU is present.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from ctr_src import layers, models, utils
from conftest import random_fields

DIMS = [7, 9, 4, 5, 3]
KERNELS = ("mat", "vec", "num")

# backward nodes of operations that *scatter with accumulation in the forward pass*: never wanted
SCATTERING = {"IndexAddBackward0", "ScatterAddBackward0", "PutBackward0", "IndexReduceBackward0",
              "ScatterReduceBackward0", "EmbeddingBagBackward0"}


def _has_repeats(keys: torch.Tensor) -> bool:
    """Whether some row of ``keys`` (N, k) occurs twice."""
    return keys.shape[0] != torch.unique(keys, dim=0).shape[0]


def accumulating_nodes(out: torch.Tensor) -> list[str]:
    """Names of the nodes in ``out``'s autograd graph whose backward sums into shared slots.

    Allowed: ``EmbeddingBackward0`` (``nn.Embedding``'s CUDA backward sums duplicate rows in a
    fixed order, deterministic without any flag) and gathers whose indices never repeat.
    """
    bad, seen, stack = [], set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(nxt for nxt, _ in fn.next_functions)
        name = type(fn).__name__
        if name in SCATTERING:
            bad.append(name)
        elif name == "IndexSelectBackward0":
            if _has_repeats(fn._saved_index.reshape(-1, 1)):
                bad.append(name)
        elif name == "GatherBackward0":  # repeats along `dim`, for fixed other coordinates
            idx = fn._saved_index.movedim(fn._saved_dim, -1).sort(dim=-1).values
            if bool((idx[..., 1:] == idx[..., :-1]).any()):
                bad.append(name)
        elif name == "IndexBackward0":  # advanced indexing: the index tuples must be unique
            idx = [i for i in fn._saved_indices if i is not None]
            idx = [c for i in idx for c in (i.nonzero().unbind(1) if i.dtype == torch.bool else (i,))]
            idx = torch.broadcast_tensors(*idx)
            if _has_repeats(torch.stack([i.reshape(-1) for i in idx], 1)):
                bad.append(name)
        elif name == "IndexPutBackward0" and getattr(fn, "_saved_accumulate", True):
            bad.append(name)
    return sorted(bad)


# ----------------------------------------------------------------------------- the checker itself

def test_checker_flags_gathers_with_repeated_indices():
    e = torch.randn(2, 4, 3, requires_grad=True)
    rows, cols = layers.pair_indices(4)
    assert accumulating_nodes((e.index_select(1, rows) * e.index_select(1, cols)).sum()) == \
        ["IndexSelectBackward0", "IndexSelectBackward0"]
    assert accumulating_nodes(e[:, rows].sum()) == ["IndexBackward0"]
    assert accumulating_nodes(torch.gather(e, 1, rows.view(1, -1, 1).expand(2, -1, 3)).sum()) == ["GatherBackward0"]
    assert accumulating_nodes(torch.zeros(5, 3).index_add(0, rows[:4], e[0]).sum()) == ["IndexAddBackward0"]
    # unique indices are fine: each slot of the gradient is written once
    flat = rows * 4 + cols
    assert accumulating_nodes(e.flatten(1).index_select(1, flat).sum()) == []
    assert accumulating_nodes(e[:, rows, cols.remainder(3)].sum()) == []
    assert accumulating_nodes(e[e > 0].sum()) == []


# ----------------------------------------------------------------------------- the layers

def _layers():
    yield "InnerProduct", layers.InnerProduct(5)
    yield "InnerProduct(lazy)", layers.InnerProduct()
    for kind in KERNELS:
        yield f"OuterProduct-{kind}", layers.OuterProduct(5, 4, kernel=kind)
    yield "AttentionalInteraction", layers.AttentionalInteraction(4, 3, dropout=0.2, num_fields=5)
    yield "AttentionalInteraction(uniform)", layers.AttentionalInteraction(4, uniform=True)
    yield "FMInteraction", layers.FMInteraction()
    yield "FMInteraction(vector)", layers.FMInteraction(reduce_sum=False)


@pytest.mark.parametrize("name, layer", list(_layers()), ids=[n for n, _ in _layers()])
def test_pair_layers_have_no_accumulating_scatter(name, layer):
    e = torch.randn(6, 5, 4, requires_grad=True)
    out = layer(e)
    assert accumulating_nodes(out.sum()) == [], name
    out.sum().backward()
    assert e.grad is not None and bool(e.grad.isfinite().all())


def test_activation_unit_and_dice_have_no_accumulating_scatter():
    unit = layers.ActivationUnit(4, (6,), activation="dice").train()
    h, t = torch.randn(3, 5, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    mask = torch.rand(3, 5) > 0.3
    mask[:, 0] = True
    assert accumulating_nodes(unit(h, t, mask).sum()) == []


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_models_have_no_accumulating_scatter(name):
    """The whole model, embeddings to logits, in training mode (dropout on)."""
    torch.manual_seed(0)
    model = models.build(name, field_dims=DIMS).train()
    n = 16
    g = torch.Generator().manual_seed(1)
    batch = {"fields": random_fields(DIMS, n, g), "history": torch.randint(0, 9, (n, 6), generator=g),
             "history_mask": torch.rand(n, 6, generator=g) > 0.3}
    assert accumulating_nodes(model(batch).sum()) == [], name


# ----------------------------------------------------------------------------- pair buffers

def test_pair_buffers_follow_the_module():
    """Selection matrices move and cast with the layer and are never saved."""
    layer = layers.OuterProduct(4, 3, kernel="vec").double()
    assert layer.sel_rows.dtype == torch.float64 and layer.rows.dtype == torch.long
    assert layer.flat.tolist() == [1, 2, 3, 6, 7, 11]  # i * F + j for the pairs i < j of F = 4
    assert set(layer.state_dict()) == {"kernel"}
    lazy = layers.InnerProduct()
    lazy(torch.randn(2, 4, 3, dtype=torch.float64))
    assert lazy.flat.tolist() == [1, 2, 3, 6, 7, 11] and lazy.num_fields == 4
    afm = layers.AttentionalInteraction(3)
    afm(torch.randn(2, 4, 3))
    assert afm.sel_rows.shape == (6, 4) and afm.sel_rows.dtype == torch.float32


# ----------------------------------------------------------------------------- seed_everything

@pytest.fixture
def restore_determinism():
    """Put the process-wide flags back as they were (``set_deterministic_debug_mode`` is
    ``use_deterministic_algorithms`` without its slow import of ``torch._inductor``)."""
    mode = torch.get_deterministic_debug_mode()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    yield
    torch.set_deterministic_debug_mode(mode)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def test_seed_everything_sets_the_flags(monkeypatch, restore_determinism):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.set_deterministic_debug_mode("default")
    utils.seed_everything(5)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert os.environ["PYTHONHASHSEED"] == "5"
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # warn, never raise
    assert torch.get_deterministic_debug_mode() == 1
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    # a setting the user made is kept
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    utils.seed_everything(5)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    with pytest.raises(TypeError, match="int"):
        utils.seed_everything(1.5)


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_models_run_under_strict_determinism_without_warnings(name, restore_determinism):
    """With ``warn_only=False`` an operation lacking a deterministic kernel would raise; on the
    CPU few do, so this is a weak check -- the graph test above is the strong one."""
    torch.set_deterministic_debug_mode("error")  # = use_deterministic_algorithms(True)
    torch.manual_seed(0)
    model = models.build(name, field_dims=DIMS).train()
    g = torch.Generator().manual_seed(2)
    batch = {"fields": random_fields(DIMS, 8, g), "history": torch.randint(0, 9, (8, 6), generator=g),
             "history_mask": torch.ones(8, 6, dtype=torch.bool)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(batch).sum().backward()


def _short_training(name: str, seed: int) -> list[torch.Tensor]:
    utils.seed_everything(seed)
    dims = [50, 40, 7, 2, 21, 10, 9, 18]
    model = models.build(name, field_dims=dims, **({} if name == "ffm" else {"dropout": 0.3}))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        batch = {"fields": random_fields(dims, 256, g), "history": torch.randint(0, 40, (256, 10), generator=g),
                 "history_mask": torch.rand(256, 10, generator=g) > 0.3}
        label = torch.randint(0, 2, (256,), generator=g).float()
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(batch), label).backward()
        out += [p.grad.clone() for p in model.parameters() if p.grad is not None]
        opt.step()
    return out + [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["ipnn", "opnn", "pnn", "afm", "ffm", "din"])
def test_seed_everything_makes_training_bit_identical_on_cpu(name, restore_determinism):
    """Same seed: the same dropout masks, gradients and weights, bit for bit."""
    a, b = _short_training(name, 3), _short_training(name, 3)
    assert len(a) == len(b)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = _short_training(name, 4)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
