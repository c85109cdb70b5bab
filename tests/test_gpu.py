"""CUDA: every model gives the CPU's answer on the GPU, and training runs there.

Skipped cleanly on machines without a GPU (CI has none); run on a GPU machine with
``pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

# cuBLAS reads its workspace setting at the process's first matrix product: set it while the
# tests are collected, before any of them runs on the GPU (seed_everything sets it too, but
# an earlier test may already have used cuBLAS by then)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from ctr_src import models, train, utils
from ctr_src.data import TensorData
from conftest import random_fields

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

DIMS = [7, 9, 4, 5]


def batch(n=32):
    g = torch.Generator().manual_seed(0)
    return {"fields": random_fields(DIMS, n, g), "history": torch.randint(0, 9, (n, 6), generator=g),
            "history_mask": torch.rand(n, 6, generator=g) > 0.3, "label": torch.randint(0, 2, (n,), generator=g).float()}


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_model_on_cuda_matches_cpu(name):
    utils.seed_everything(0)
    cpu = models.build(name, field_dims=DIMS).eval()
    gpu = copy.deepcopy(cpu).cuda()
    b = batch()
    out_cpu = cpu(b)
    out_gpu = gpu({k: v.cuda() for k, v in b.items()})
    assert out_gpu.device.type == "cuda"
    assert torch.allclose(out_cpu, out_gpu.cpu(), atol=1e-4, rtol=1e-4)


def test_fit_and_evaluate_on_cuda():
    utils.seed_everything(0)
    b = batch(512)
    data = TensorData(fields=b["fields"], label=b["label"], user=b["fields"][:, 0])
    model = models.build("deepfm", field_dims=DIMS).cuda()
    h = train.fit(model, data, data, epochs=2, progress=False)
    assert len(h) >= 1 and next(model.parameters()).device.type == "cuda"
    assert set(train.evaluate(model, data, gauc=True)) == {"auc", "logloss", "gauc"}


# ----------------------------------------------------------------------------- repeatability

BIG_DIMS = [50, 40, 7, 2, 21, 10, 9, 18]


def _two_steps(name, n, mode):
    """Two Adam steps from ``seed_everything(7)``: every gradient and the final weights."""
    utils.seed_everything(7)
    torch.set_deterministic_debug_mode(mode)
    kwargs = {} if name == "ffm" else {"dropout": 0.3}
    model = models.build(name, field_dims=BIG_DIMS, **kwargs).cuda().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(8)
    out = []
    for _ in range(2):
        b = {"fields": random_fields(BIG_DIMS, n, g), "history": torch.randint(0, 40, (n, 12), generator=g),
             "history_mask": torch.rand(n, 12, generator=g) > 0.3}
        label = torch.randint(0, 2, (n,), generator=g).float()
        b = {k: v.cuda() for k, v in b.items()}
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(b), label.cuda()).backward()
        out += [p.grad.detach().cpu().clone() for p in model.parameters() if p.grad is not None]
        opt.step()
    return out + [p.detach().cpu().clone() for p in model.parameters()]


@pytest.mark.parametrize("mode", ["default", "warn"])
@pytest.mark.parametrize("n", [256, 2048])  # embedding backward: <= 3072 and > 3072 looked-up rows
@pytest.mark.parametrize("name", ["ipnn", "opnn", "pnn", "afm", "ffm", "deepfm", "din"])
def test_training_on_cuda_is_bit_identical_from_the_same_seed(name, n, mode):
    """Same seed, same GPU: the same dropout masks, gradients and weights, bit for bit -- with
    deterministic algorithms on (``seed_everything``'s "warn") and, as the pair layers need no
    accumulating scatter, also with PyTorch's default (nondeterministic) kernels."""
    previous = torch.get_deterministic_debug_mode()
    try:
        runs = [_two_steps(name, n, mode) for _ in range(3)]
    finally:
        torch.set_deterministic_debug_mode(previous)
    for run in runs[1:]:
        assert len(run) == len(runs[0])
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0])), name


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_every_model_runs_under_strict_determinism_on_cuda(name):
    """``error`` mode raises for any CUDA operation without a deterministic kernel."""
    previous = torch.get_deterministic_debug_mode()
    try:
        utils.seed_everything(0)
        torch.set_deterministic_debug_mode("error")
        model = models.build(name, field_dims=DIMS).cuda().train()
        b = {k: v.cuda() for k, v in batch(64).items()}
        torch.nn.functional.binary_cross_entropy_with_logits(model(b), b["label"]).backward()
    finally:
        torch.set_deterministic_debug_mode(previous)


def test_seed_everything_configures_cuda():
    utils.seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    a = torch.nn.functional.dropout(torch.ones(1000, device="cuda"), 0.5)
    utils.seed_everything(0)
    assert torch.equal(a, torch.nn.functional.dropout(torch.ones(1000, device="cuda"), 0.5))


# ----------------------------------------------------------------------------- the fast paths

def test_cuda_keeps_the_standard_embedding_backward_and_dropout():
    """index_add_ and the 15-bit dropout mask are CPU-only: CUDA's own kernels are
    deterministic (embedding) and fast (fused dropout)."""
    from ctr_src import layers
    table = torch.nn.Embedding(20, 4).cuda()
    out = layers.embedding_lookup(table, torch.randint(0, 20, (8, 3), device="cuda"))
    assert "CPULookup" not in type(out.grad_fn).__name__
    drop = layers.Dropout(0.5).cuda().train()
    x = torch.ones(10_000, device="cuda")
    y = drop(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}  # nn.Dropout's exact 1 / (1 - p)
    assert train.adam(models.build("fm", field_dims=DIMS).cuda()).defaults["fused"]


@pytest.mark.parametrize("options", [dict(amp="bf16"), dict(compile=True),
                                     dict(amp="bf16", compile=True)])
def test_fast_path_trains_on_cuda(options):
    """Data on the device, bf16 autocast and torch.compile: training runs, the loss
    falls, and evaluation (eager, float32) scores every row."""
    utils.seed_everything(0)
    b = batch(3000)  # 3000 = 2 full batches of 1024 and a smaller last one
    data = TensorData(fields=b["fields"], label=b["label"])
    model = models.build("deepfm", field_dims=DIMS, dropout=0.1).cuda()
    h = train.fit(model, data, data, epochs=3, patience=5, progress=False, **options)
    assert h.records[-1]["train_loss"] < h.records[0]["train_loss"]
    assert len(train.predict(model, data)) == 3000
