"""The trainer: reproducibility, early stopping with best-weights restore, registry, logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctr_src import metrics, models, train, utils
from ctr_src.data import TensorData
from conftest import random_fields

DIMS = [6, 5, 4]


def toy_data(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = random_fields(DIMS, n, g)
    logit = (x[:, 0] == 1).float() * 2 - (x[:, 1] == 2).float() * 1.5 + 0.3 * torch.randn(n, generator=g)
    y = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return TensorData(fields=x, label=y, user=x[:, 2], oracle=logit)


def test_same_seed_same_history():
    def once():
        utils.seed_everything(11)
        m = models.build("deepfm", field_dims=DIMS, embed_dim=4, mlp_dims=(8,), dropout=0.2)
        h = train.fit(m, toy_data(), toy_data(seed=1), epochs=4, batch_size=64, progress=False)
        return [(r["train_loss"], r["valid_auc"], r["valid_logloss"]) for r in h], m
    (h1, m1), (h2, m2) = once(), once()
    assert h1 == h2
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_early_stopping_restores_best_epoch_weights():
    utils.seed_everything(0)
    m = models.build("fm", field_dims=DIMS, embed_dim=4)
    valid = toy_data(seed=1)
    # a huge learning rate makes validation AUC wander, so the best epoch is rarely the last
    h = train.fit(m, toy_data(), valid, epochs=12, batch_size=32, lr=0.5, patience=3, progress=False)
    assert h.best_epoch == int(np.argmax(h.column("valid_auc"))) + 1
    assert train.evaluate(m, valid)["auc"] == pytest.approx(h.best["valid_auc"], abs=1e-12)
    if h.stopped_early:
        assert len(h) == h.best_epoch + 3


def test_training_lowers_loss_and_beats_chance():
    utils.seed_everything(0)
    m = models.build("lr", field_dims=DIMS)
    h = train.fit(m, toy_data(2000), toy_data(600, seed=1), epochs=8, lr=0.05, batch_size=128, progress=False)
    assert h.column("train_loss")[-1] < h.column("train_loss")[0]
    valid = toy_data(600, seed=1)
    oracle = metrics.auc(valid["label"], valid["oracle"])  # AUC of the true logits (with noise)
    assert h.best["valid_auc"] > oracle - 0.03
    assert h.best["valid_auc"] > 0.6


def test_predict_proba_is_sigmoid_of_logits_and_metrics_include_gauc():
    utils.seed_everything(0)
    m = models.build("fm", field_dims=DIMS, embed_dim=4)
    d = toy_data(100)
    logits = train.predict(m, d)
    assert logits.shape == (100,)
    assert np.allclose(train.predict_proba(m, d), torch.sigmoid(logits).numpy())
    out = train.evaluate(m, d, gauc=True)
    assert set(out) == {"auc", "logloss", "gauc"}


def test_registry_unknown_name_lists_known_ones():
    with pytest.raises(ValueError) as info:
        models.build("xgboost", field_dims=DIMS)
    for name in ("lr", "fm", "deepfm", "din"):
        assert name in str(info.value)


def test_every_model_returns_logits_of_shape_B():
    x = {"fields": random_fields(DIMS, 7), "history": torch.randint(0, 5, (7, 3)),
         "history_mask": torch.ones(7, 3, dtype=torch.bool)}
    for name in models.REGISTRY:
        utils.seed_everything(0)
        m = models.build(name, field_dims=DIMS)
        out = m(x)
        assert out.shape == (7,), name
        assert out.dtype == torch.float32, name


def test_fit_rejects_bad_input():
    m = models.build("lr", field_dims=DIMS)
    with pytest.raises(KeyError, match="label"):
        train.fit(m, TensorData(fields=random_fields(DIMS, 4)), toy_data(), progress=False)
    with pytest.raises(TypeError, match="TensorData"):
        train.fit(m, {"fields": 1}, toy_data(), progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_matches_cpu_closely():
    def run(device):
        utils.seed_everything(3)
        m = models.build("fm", field_dims=DIMS, embed_dim=4)
        h = train.fit(m, toy_data(), toy_data(seed=1), epochs=3, device=device, progress=False)
        return h.column("valid_auc")
    assert np.allclose(run("cpu"), run("cuda"), atol=1e-3)
