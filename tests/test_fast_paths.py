"""The speed-ups of #15 change no number and drop no check.

* the CPU embedding backward (``index_add_``) is bit-identical to ``nn.Embedding``'s;
* ``fit``/``evaluate``/``predict`` validate a data set once and then skip the per-batch
  index scans, yet a bad index still fails before anything trains, naming row and column;
* a model called directly keeps checking every batch;
* ``train_epoch`` is the loop of ``fit`` (same weights after an epoch);
* the optional speed switches (``amp``, ``fused``, ``compile``) train and are checked.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ctr_src import layers, models, train
from ctr_src.data import TensorData
from ctr_src.utils import seed_everything

DIMS = [7, 5, 3, 4]


def _data(n=300, seed=0, dims=DIMS):
    g = torch.Generator().manual_seed(seed)
    fields = torch.stack([torch.randint(0, d, (n,), generator=g) for d in dims], 1)
    label = (torch.rand(n, generator=g) < 0.4).float()
    return TensorData(fields=fields, label=label)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("width", [1, 16])
def test_cpu_lookup_backward_is_bit_identical(threads, width):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        table = nn.Embedding(50, width)
        rows = torch.randint(0, 50, (512, 6))  # many duplicates
        grad = torch.randn(512, 6, width)
        fast = layers.embedding_lookup(table, rows)
        (fast * grad).sum().backward()
        g_fast = table.weight.grad.clone()
        table.weight.grad = None
        slow = table(rows)
        (slow * grad).sum().backward()
        assert torch.equal(fast, slow)
        assert torch.equal(g_fast, table.weight.grad)
        assert fast.grad_fn is not None and "CPULookup" in type(fast.grad_fn).__name__
    finally:
        torch.set_num_threads(old)


def test_lookup_uses_the_plain_operator_without_gradients():
    table = nn.Embedding(10, 3)
    rows = torch.tensor([[1, 2]])
    with torch.no_grad():
        assert layers.embedding_lookup(table, rows).grad_fn is None
    table.padding_idx = 0  # a feature _CPULookup does not implement
    out = layers.embedding_lookup(table, rows)
    assert "CPULookup" not in type(out.grad_fn).__name__


def test_skip_index_checks_skips_only_the_range_scan_and_nests():
    model = models.build("fm", field_dims=DIMS, embed_dim=4)
    bad = {"fields": torch.tensor([[7, 0, 0, 0]])}  # 7 is outside field 0's [0, 7)
    with pytest.raises(IndexError, match="column 0"):
        model(bad)
    with layers.skip_index_checks():
        with layers.skip_index_checks():
            assert not layers.index_checks_enabled()
        assert not layers.index_checks_enabled()
        with pytest.raises(TypeError, match="integer indices"):
            model({"fields": torch.zeros(1, 4)})  # dtype checks stay
    assert layers.index_checks_enabled()


def test_fit_validates_once_and_names_row_column_and_value():
    seed_everything(0)
    model = models.build("fm", field_dims=DIMS, embed_dim=4)
    before = [p.detach().clone() for p in model.parameters()]
    tr, va = _data(), _data(seed=1)
    tr.tensors["fields"][123, 2] = 3  # field 2 has 3 values: 0, 1, 2
    with pytest.raises(IndexError, match=r"column 2 .*\[0, 3\).*row 123: 3"):
        train.fit(model, tr, va, epochs=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    va.tensors["fields"][5, 0] = -1
    with pytest.raises(IndexError, match=r"valid\['fields'\]: column 0"):
        train.fit(model, _data(), va, epochs=1, progress=False)
    with pytest.raises(IndexError, match=r"data\['fields'\]: column 0"):
        train.evaluate(model, va)


def test_wide_deep_and_din_check_their_other_index_inputs():
    wd = models.build("wide_deep", field_dims=DIMS, embed_dim=4, cross_dims=[6])
    data = dict(_data(20).tensors, cross=torch.full((20, 1), 6))
    with pytest.raises(IndexError, match=r"train\['cross'\]"):
        wd.check_inputs(data, "train")
    din = models.build("din", field_dims=DIMS, embed_dim=4, seq_fields=[1])
    hist = torch.zeros(20, 3, dtype=torch.long)
    hist[4, 2] = 5  # field 1 has 5 values
    data = dict(_data(20).tensors, history=hist,
                history_mask=torch.ones(20, 3, dtype=torch.bool))
    with pytest.raises(IndexError, match=r"data\['history'\]: column 0 .*\[0, 5\)"):
        din.check_inputs(data)


def test_train_epoch_is_fits_loop():
    tr, va = _data(400), _data(100, seed=1)
    seed_everything(0)
    a = models.build("deepfm", field_dims=DIMS, embed_dim=4, mlp_dims=(8,), dropout=0.2)
    train.fit(a, tr, va, epochs=1, batch_size=64, seed=5, progress=False)
    seed_everything(0)
    b = models.build("deepfm", field_dims=DIMS, embed_dim=4, mlp_dims=(8,), dropout=0.2)
    opt = torch.optim.Adam(b.parameters(), lr=1e-3, fused=True)  # fit's default here
    loss = train.train_epoch(b, tr, opt, batch_size=64,
                             generator=torch.Generator().manual_seed(5))
    assert 0 < loss < 1
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("options", [dict(amp="bf16"), dict(fused=False)])
def test_speed_options_train(options):
    seed_everything(0)
    model = models.build("fm", field_dims=DIMS, embed_dim=4)
    h = train.fit(model, _data(), _data(seed=1), epochs=2, progress=False, **options)
    assert len(h) == 2 and all(r["train_loss"] > 0 for r in h)


def test_compile_runs_the_last_partial_batch_eagerly():
    calls = []

    class Counting(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, batch):
            calls.append(len(batch["label"]))
            return self.model(batch)

    seed_everything(0)
    model = models.build("fm", field_dims=DIMS, embed_dim=4)
    counted = Counting(model)
    opt = torch.optim.Adam(model.parameters())
    train.train_epoch(model, _data(300), opt, batch_size=128, step_model=counted)
    assert calls == [128, 128]  # the 44-row batch went to the eager model


def test_bad_amp_is_refused():
    with pytest.raises(ValueError, match="amp must be None or one of"):
        train.fit(models.build("fm", field_dims=DIMS), _data(), _data(), amp="int8",
                  progress=False)


def test_fit_uses_the_fused_adam_unless_told_otherwise(monkeypatch):
    seen = []
    real = torch.optim.Adam

    def spy(params, **kw):
        seen.append(kw.get("fused"))
        return real(params, **kw)

    monkeypatch.setattr(train.torch.optim, "Adam", spy)
    for fused in (None, False):
        train.fit(models.build("fm", field_dims=DIMS), _data(), _data(seed=1), epochs=1,
                  progress=False, fused=fused)
    assert seen == [True, False]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.2])
def test_dropout_keeps_1_minus_p_and_rescales(p):
    torch.manual_seed(0)
    layer = layers.Dropout(p)
    x = torch.ones(400_000)
    y = layer(x)
    kept = y != 0
    # 400k Bernoulli draws: the keep rate's standard error is below 0.0008
    assert abs(kept.float().mean().item() - (1 - p)) < 0.004
    t = round(p * 32768)  # the rate is p rounded to a multiple of 2^-15
    assert abs(t / 32768 - p) <= 2 ** -16
    assert torch.equal(y[kept], torch.full((int(kept.sum()),), 32768 / (32768 - t)))
    assert abs(y.mean().item() - 1) < 0.01  # unbiased
    x = torch.randn(50, 7, requires_grad=True)
    y = layer(x)
    y.sum().backward()  # the gradient is the same mask
    assert torch.equal(x.grad, (y != 0).float() * (32768 / (32768 - t)))
    layer.eval()
    assert torch.equal(layer(x), x)
    assert isinstance(layer, nn.Dropout) and torch.equal(layers.Dropout(0.0)(x), x)


def test_models_use_the_fast_dropout():
    for key, kw in (("deepfm", dict(dropout=0.2)), ("afm", dict(dropout=0.2))):
        m = models.build(key, field_dims=DIMS, **kw)
        drops = [mod for mod in m.modules() if isinstance(mod, nn.Dropout)]
        assert drops and all(type(d) is layers.Dropout for d in drops), key


def test_dropout_bits_are_uniform_and_reproducible():
    """Both int16 halves of a draw are used: neither half may be biased."""
    layer = layers.Dropout(0.5)
    torch.manual_seed(3)
    a = layer(torch.ones(200_001))  # odd: the last draw's second half is unused
    torch.manual_seed(3)
    assert torch.equal(a, layer(torch.ones(200_001)))
    even, odd = (a[0::2] != 0).float().mean(), (a[1::2] != 0).float().mean()
    assert abs(even - 0.5) < 0.005 and abs(odd - 0.5) < 0.005  # SE 0.0016
    assert torch.equal(layers.Dropout(1.0)(torch.ones(5)), torch.zeros(5))
