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


def test_monitor_gauc_picks_the_best_epoch_by_validation_gauc():
    valid = toy_data(seed=1)
    differ = 0
    for seed in range(8):  # several runs: in some the best epochs by AUC and GAUC differ
        utils.seed_everything(seed)
        m = models.build("fm", field_dims=DIMS, embed_dim=4)
        h = train.fit(m, toy_data(), valid, epochs=10, batch_size=32, lr=0.5, patience=10,
                      monitor="gauc", progress=False)
        gaucs = h.column("valid_gauc")
        assert h.best_epoch == int(np.argmax(gaucs)) + 1
        assert train.evaluate(m, valid, gauc=True)["gauc"] == pytest.approx(max(gaucs), abs=1e-12)
        differ += np.argmax(gaucs) != np.argmax(h.column("valid_auc"))
    assert differ  # so the check above tells GAUC from AUC monitoring
    with pytest.raises(ValueError, match="monitor"):
        train.fit(m, toy_data(), valid, monitor="loss", progress=False)


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


# --- the trainer fails loudly and loses nothing ---------------------------------------------

class Faulty(torch.nn.Module):
    """Wraps a model; on its ``at``-th training forward call it returns NaN logits or raises
    ``error``; with ``eval_nan_from`` its eval-mode (validation) scores turn NaN from that
    eval call on."""

    def __init__(self, inner, at=None, error=None, eval_nan_from=None):
        super().__init__()
        self.inner, self.at, self.error, self.eval_nan_from = inner, at, error, eval_nan_from
        self.train_calls = self.eval_calls = 0

    def forward(self, batch):
        out = self.inner(batch)
        if self.training:
            self.train_calls += 1
            if self.train_calls == self.at:
                if self.error is not None:
                    raise self.error
                return out * float("nan")
        else:
            self.eval_calls += 1
            if self.eval_nan_from is not None and self.eval_calls >= self.eval_nan_from:
                return out * float("nan")
        return out


def fm_model(seed=0, **faults):
    utils.seed_everything(seed)
    return Faulty(models.build("fm", field_dims=DIMS, embed_dim=4), **faults)


def weights(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def assert_weights_equal(m, expected):
    got = m.state_dict()
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.isfinite(got[k].float()).all(), k
        assert torch.equal(got[k], v), k


FIT = dict(batch_size=64, lr=0.05, seed=7, progress=False)  # 600 rows -> 10 batches per epoch


def without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def with_labels(data, label):
    return TensorData({**data.tensors, "label": label})


def test_labels_outside_0_1_are_rejected_naming_the_data_set():
    m = models.build("lr", field_dims=DIMS)
    before = weights(m)
    d = toy_data()
    twos = with_labels(d, torch.full((len(d),), 2.0))
    with pytest.raises(ValueError, match=r"train has 600 of 600 labels .*2\.0.*binarise") as info:
        train.fit(m, twos, toy_data(seed=1), **FIT)
    assert "valid" not in str(info.value)
    with pytest.raises(ValueError, match=r"^valid has 600 of 600 labels .*2\.0"):
        train.fit(m, d, twos, **FIT)
    assert_weights_equal(m, before)  # nothing trained


@pytest.mark.parametrize("which", ["train", "valid"])
def test_a_nan_or_inf_label_is_rejected(which):
    for bad in (float("nan"), float("inf")):
        sets = {"train": toy_data(), "valid": toy_data(seed=1)}
        y = sets[which]["label"].clone()
        y[17] = bad
        sets[which] = with_labels(sets[which], y)
        with pytest.raises(ValueError, match=rf"^{which} has 1 of 600 labels .*{bad}"):
            train.fit(models.build("lr", field_dims=DIMS), sets["train"], sets["valid"], **FIT)


def test_evaluate_rejects_bad_labels_and_nonfinite_scores():
    utils.seed_everything(0)
    m = models.build("lr", field_dims=DIMS)
    d = toy_data(100)
    with pytest.raises(ValueError, match=r"data has 100 of 100 labels .*2\.0"):
        train.evaluate(m, with_labels(d, torch.full((100,), 2.0)))
    y = d["label"].clone()
    y[3] = float("nan")
    with pytest.raises(ValueError, match=r"data has 1 of 100 labels .*nan"):
        train.evaluate(m, with_labels(d, y))
    # integer and boolean 0/1 labels are fine
    ref = train.evaluate(m, d)
    assert train.evaluate(m, with_labels(d, d["label"].long())) == ref
    assert train.evaluate(m, with_labels(d, d["label"].bool())) == ref
    with torch.no_grad():
        next(m.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="scores on data are not all finite: 100 of 100"):
        train.evaluate(m, d)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_divergence_in_first_epoch_raises_and_restores_prefit_weights(mode):
    utils.seed_everything(0)
    m = models.build("fm", field_dims=DIMS, embed_dim=4).train(mode == "train")
    before = weights(m)
    with pytest.raises(train.TrainingDiverged) as info:
        train.fit(m, toy_data(), toy_data(seed=1), epochs=3, batch_size=64, lr=1e30,
                  progress=False)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.epoch == 1 and err.batch is not None and err.batch >= 1
    assert not np.isfinite(err.loss)
    msg = str(err)
    assert f"epoch 1, batch {err.batch} of 10" in msg and "learning rate" in msg
    assert "lr=1e+30" in msg and "clip" in msg
    assert len(err.history) == 0
    if hasattr(err, "add_note"):  # Python 3.11+: the traceback says what was restored
        assert "restored the weights the model had before fit" in " ".join(err.__notes__)
    assert_weights_equal(m, before)
    assert m.training == (mode == "train")


def test_divergence_in_a_later_epoch_restores_the_best_epochs_weights():
    ref = fm_model()
    h1 = train.fit(ref, toy_data(), toy_data(seed=1), epochs=1, **FIT)
    m = fm_model(at=13)  # the 3rd batch of epoch 2 returns NaN logits
    with pytest.raises(train.TrainingDiverged, match=r"loss is nan in epoch 2, batch 3 of 10") \
            as info:
        train.fit(m, toy_data(), toy_data(seed=1), epochs=5, **FIT)
    assert_weights_equal(m, weights(ref))  # epoch 1's weights, not those of epoch 2, batch 2
    assert not m.training
    err = info.value
    assert (err.epoch, err.batch) == (2, 3) and np.isnan(err.loss)
    # the history of the finished epoch travels with the exception
    assert without_seconds(err.history) == without_seconds(h1)
    assert err.history.best_epoch == 1


def test_nonfinite_validation_scores_raise_training_diverged():
    # validation scores turn NaN from the 3rd evaluation on (epoch 3), losses stay finite
    ref = fm_model()
    h2 = train.fit(ref, toy_data(), toy_data(seed=1), epochs=2, patience=5, **FIT)
    m = fm_model(eval_nan_from=3)
    with pytest.raises(train.TrainingDiverged, match="after epoch 3 the validation scores") as info:
        train.fit(m, toy_data(), toy_data(seed=1), epochs=5, patience=5, **FIT)
    assert "contains NaN or infinite values" not in str(info.value)
    assert info.value.epoch == 3 and info.value.batch is None
    assert info.value.history.best_epoch == h2.best_epoch
    m.eval_nan_from = None
    assert_weights_equal(m, weights(ref))


@pytest.mark.parametrize("error", [RuntimeError("boom in forward"), KeyboardInterrupt()],
                         ids=["RuntimeError", "KeyboardInterrupt"])
def test_an_error_in_the_model_restores_weights_and_propagates(error):
    # in epoch 1: back to the weights before fit, and to the mode the model was in
    m = fm_model(at=4, error=error)
    m.eval()
    before = weights(m)
    with pytest.raises(type(error)) as info:
        train.fit(m, toy_data(), toy_data(seed=1), epochs=3, **FIT)
    assert info.value is error
    assert len(info.value.history) == 0
    assert_weights_equal(m, before)
    assert not m.training
    # in epoch 3: back to the best of the two finished epochs, as a 2-epoch fit gives
    ref = fm_model()
    h2 = train.fit(ref, toy_data(), toy_data(seed=1), epochs=2, patience=5, **FIT)
    m = fm_model(at=25, error=error)
    with pytest.raises(type(error)) as info:
        train.fit(m, toy_data(), toy_data(seed=1), epochs=5, patience=5, **FIT)
    assert info.value.history.best_epoch == h2.best_epoch and len(info.value.history) == 2
    assert_weights_equal(m, weights(ref))
    assert not m.training


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_label_checks_and_restore_on_cuda():
    d = toy_data().to("cuda")
    y = d["label"].clone()
    y[5] = float("nan")
    with pytest.raises(ValueError, match=r"^train has 1 of 600 labels .*nan"):
        train.fit(models.build("lr", field_dims=DIMS).cuda(), with_labels(d, y), d, **FIT)
    m = fm_model(at=13).cuda()
    with pytest.raises(train.TrainingDiverged, match="epoch 2, batch 3"):
        train.fit(m, d, toy_data(seed=1), epochs=3, **FIT)
    assert all(torch.isfinite(p).all() for p in m.parameters())
