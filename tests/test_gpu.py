"""CUDA: every model gives the CPU's answer on the GPU, and training runs there.

Skipped cleanly on machines without a GPU (CI has none); run on a GPU machine with
``pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch

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
