"""Real values (``batch["values"]``) enter each model where its docstring says.

Every check is computed by hand from the model's own parameters, in float64,
on one or two fields, so the expected number is a short formula.
"""

from __future__ import annotations

import pytest
import torch

from ctr_src import layers, models
from ctr_src.data import load_criteo, write_synthetic

DIMS = [3, 4]
FIELDS = torch.tensor([[2, 1], [0, 3]])
VALUES = torch.tensor([[2.5, -0.5], [0.3, 4.0]], dtype=torch.float64)


def _random(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (the linear tables start at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.double().eval()


def _rows(table, fields=FIELDS):
    """The table rows of each field's index: ``(B, F, width)``."""
    return table.embedding.weight[fields + table.offsets]


def _linear(model, fields=FIELDS, values=VALUES):
    """``b + sum_i w_i x_i`` by hand: ``(B,)``."""
    w = _rows(model.linear, fields).squeeze(-1)
    return model.linear.bias + (w * values).sum(1)


def _batch(values=VALUES):
    return {"fields": FIELDS, "values": values}


# ---------------------------------------------------------------- linear part

def test_lr_one_field_is_b_plus_w_x():
    model = _random(models.LR([3]))
    fields = torch.tensor([[2]])
    x = torch.tensor([[1.75]], dtype=torch.float64)
    b, w = model.linear.bias.item(), model.linear.embedding.weight[2, 0].item()
    assert model({"fields": fields, "values": x}).item() == b + w * 1.75
    # doubling x doubles the term w x, not the bias
    twice = model({"fields": fields, "values": 2 * x}).item()
    assert twice - b == pytest.approx(2 * w * 1.75, rel=1e-15)


@pytest.mark.parametrize("name", ["lr", "fm", "ffm", "fwfm", "afm",
                                  "wide_deep", "deepfm"])
def test_linear_part_is_w_x(name):
    model = _random(models.build(name, field_dims=DIMS))
    linear = model.linear(FIELDS, VALUES).squeeze(-1)
    assert torch.allclose(linear, _linear(model), rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["pnn", "embedding_mlp"])
def test_no_linear_part(name):
    assert not hasattr(models.build(name, field_dims=DIMS), "linear")


# ---------------------------------------------------------------------- pairs

def test_fm_pair_term_scales_by_xi_xj():
    model = _random(models.FM(DIMS, embed_dim=3))
    v = _rows(model.embedding)  # (B, 2, D)
    pair = (v[:, 0] * v[:, 1]).sum(1) * VALUES[:, 0] * VALUES[:, 1]
    out = model(_batch())
    assert torch.allclose(out, _linear(model) + pair, rtol=1e-13, atol=1e-13)
    # tripling x_0 triples the (single) pair term and w_0 x_0's share
    x3 = VALUES.clone()
    x3[:, 0] *= 3
    pair3 = model(_batch(x3)) - _linear(model, values=x3)
    assert torch.allclose(pair3, 3 * pair, rtol=1e-12, atol=1e-13)


def test_ffm_pair_term_uses_field_vectors_and_xi_xj():
    d = 2
    model = _random(models.FFM(DIMS, embed_dim=d))
    v = _rows(model.embedding).view(2, 2, 2, d)  # [b, i, field met, d]
    pair = (v[:, 0, 1] * v[:, 1, 0]).sum(1) * VALUES[:, 0] * VALUES[:, 1]
    assert torch.allclose(model(_batch()), _linear(model) + pair, rtol=1e-13,
                          atol=1e-13)


def test_fwfm_pair_term_is_r_times_xi_xj():
    model = _random(models.FwFM(DIMS, embed_dim=3))
    v = _rows(model.embedding)
    r = model.pair_weight[0]
    pair = r * (v[:, 0] * v[:, 1]).sum(1) * VALUES[:, 0] * VALUES[:, 1]
    assert torch.allclose(model(_batch()), _linear(model) + pair, rtol=1e-13,
                          atol=1e-13)


def test_afm_pair_vector_scales_by_xi_xj():
    # two fields: one pair, whose attention weight is 1 whatever the scores
    model = _random(models.AFM(DIMS, embed_dim=3, attention_dim=4))
    v = _rows(model.embedding)
    pooled = v[:, 0] * v[:, 1] * (VALUES[:, 0] * VALUES[:, 1]).unsqueeze(1)
    expected = _linear(model) + pooled @ model.p.weight[0]
    assert torch.allclose(model(_batch()), expected, rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------- MLP inputs

def test_pnn_signals_hold_scaled_vectors_and_products():
    model = _random(models.PNN(DIMS, embed_dim=3, product="inner"))
    v = _rows(model.embedding)
    s = model.signals(_batch())
    e = v * VALUES.unsqueeze(-1)
    assert torch.allclose(s[:, model.slices["z"]], e.flatten(1), rtol=1e-15,
                          atol=0)
    inner = (v[:, 0] * v[:, 1]).sum(1) * VALUES[:, 0] * VALUES[:, 1]
    assert torch.allclose(s[:, model.slices["inner"]].squeeze(1), inner,
                          rtol=1e-13, atol=1e-13)


def _one_layer(model):
    """``(W, c)`` of an MLP built with ``mlp_dims=()`` (one linear map)."""
    layer = model.mlp.output_layer
    return layer.weight[0], layer.bias[0]


def test_embedding_mlp_reads_scaled_vectors_only():
    model = _random(models.EmbeddingMLP(DIMS, embed_dim=3, mlp_dims=()))
    w, c = _one_layer(model)
    e = (_rows(model.embedding) * VALUES.unsqueeze(-1)).flatten(1)
    assert model.mlp.input_dim == 2 * 3  # no raw value appended
    assert torch.allclose(model(_batch()), e @ w + c, rtol=1e-13, atol=1e-13)


def test_deepfm_components_by_hand():
    model = _random(models.DeepFM(DIMS, embed_dim=3, mlp_dims=()))
    v = _rows(model.embedding)
    e = v * VALUES.unsqueeze(-1)
    w, c = _one_layer(model)
    got = model.components(_batch())
    assert torch.allclose(got["first_order"], _linear(model), rtol=1e-13,
                          atol=0)
    pair = (v[:, 0] * v[:, 1]).sum(1) * VALUES[:, 0] * VALUES[:, 1]
    assert torch.allclose(got["fm"], pair, rtol=1e-12, atol=1e-13)
    assert model.mlp.input_dim == 2 * 3  # the paper's DeepFM: no raw value
    assert torch.allclose(got["mlp"], e.flatten(1) @ w + c, rtol=1e-13,
                          atol=1e-13)


def test_wide_deep_dense_fields_append_raw_values_in_order():
    dims = [3, 4, 2]
    fields = torch.tensor([[2, 1, 1], [0, 3, 0]])
    x = torch.tensor([[2.5, -0.5, 0.7], [0.3, 4.0, 1.0]],
                     dtype=torch.float64)
    d = 2
    model = _random(models.WideAndDeep(dims, embed_dim=d, mlp_dims=(),
                                       dense_fields=(2, 0)))
    batch = {"fields": fields, "values": x}
    assert model.mlp.input_dim == 3 * d + 2
    inp = model.deep_input(batch)
    e = _rows(model.embedding, fields) * x.unsqueeze(-1)
    # [e_1, ..., e_F] first, then x_2 and x_0 in the order of dense_fields
    assert torch.equal(inp[:, :3 * d], e.flatten(1))
    assert torch.equal(inp[:, 3 * d:], x[:, [2, 0]])
    w, c = _one_layer(model)
    wide = _linear(model, fields, x)
    deep = e.flatten(1) @ w[:3 * d] + x[:, 2] * w[6] + x[:, 0] * w[7] + c
    expected = wide + deep
    assert torch.allclose(model(batch), expected, rtol=1e-13, atol=1e-13)
    # the raw column's weight sees x itself: doubling x_2 adds w x_2 once more
    # through the raw column and doubles e_2 (whose share is e_2 . w_e2)
    x2 = x.clone()
    x2[:, 2] *= 2
    diff = model({"fields": fields, "values": x2}) - model(batch)
    w_lin = _rows(model.linear, fields)[:, 2, 0]
    share = (e[:, 2] * w[2 * d:3 * d]).sum(1)
    assert torch.allclose(diff, w_lin * x[:, 2] + share + w[6] * x[:, 2],
                          rtol=1e-12, atol=1e-12)


def test_wide_deep_without_dense_fields_is_unchanged():
    torch.manual_seed(7)
    plain = models.WideAndDeep(DIMS, embed_dim=4)
    torch.manual_seed(7)
    empty = models.WideAndDeep(DIMS, embed_dim=4, dense_fields=())
    a, b = plain.state_dict(), empty.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "dense_index" not in a  # the option adds nothing to the checkpoint
    for batch in ({"fields": FIELDS},
                  {"fields": FIELDS, "values": VALUES.float()}):
        assert torch.equal(plain(batch), empty(batch))


def test_values_all_ones_equal_no_values():
    for name in ("lr", "fm", "ffm", "fwfm", "afm", "pnn", "wide_deep",
                 "embedding_mlp", "deepfm"):
        model = models.build(name, field_dims=DIMS).eval()
        ones = torch.ones(FIELDS.shape)
        assert torch.equal(model({"fields": FIELDS}),
                           model({"fields": FIELDS, "values": ones})), name


# --------------------------------------------------------------------- errors

@pytest.mark.parametrize("bad, error, message", [
    (torch.ones(2, 2, dtype=torch.long), TypeError, "float tensor"),
    (torch.ones(2, 2, dtype=torch.bool), TypeError, "float tensor"),
    (torch.ones(2, 3), ValueError, "values must match"),
    (torch.ones(2), ValueError, r"shape \(B, F\)"),
    (torch.tensor([[1.0, 1.0], [1.0, float("nan")]]), ValueError,
     r"column 1 has a non-finite value \(row 1: nan\)"),
    (torch.tensor([[float("inf"), 1.0], [1.0, 1.0]]), ValueError,
     "column 0 has a non-finite"),
])
@pytest.mark.parametrize("name", ["lr", "fm", "wide_deep"])
def test_bad_values_fail_clearly(name, bad, error, message):
    model = models.build(name, field_dims=DIMS)
    with pytest.raises(error, match=message):
        model({"fields": FIELDS, "values": bad})


def test_check_inputs_scans_values_once_for_the_trainer():
    model = models.FM(DIMS, embed_dim=2)
    values = torch.ones(FIELDS.shape)
    values[1, 0] = float("nan")
    data = {"fields": FIELDS, "values": values}
    with pytest.raises(ValueError, match=r"valid\['values'\]: column 0"):
        model.check_inputs(data, "valid")
    with layers.skip_index_checks():  # per batch: skipped after check_inputs
        assert torch.isnan(model(data)[1])


@pytest.mark.parametrize("dense_fields, error, message", [
    ((2,), ValueError, r"2 is not a field position; the model has 2 fields"),
    ((-1,), ValueError, "not a field position"),
    ((0, 0), ValueError, "names field 0 twice"),
    ((0.5,), TypeError, "int field positions"),
    ("0", TypeError, "sequence of field positions"),
])
def test_dense_fields_errors(dense_fields, error, message):
    with pytest.raises(error, match=message):
        models.WideAndDeep(DIMS, dense_fields=dense_fields)


def test_dense_fields_need_values():
    model = models.WideAndDeep(DIMS, dense_fields=(1,))
    with pytest.raises(KeyError, match="no 'values' entry"):
        model({"fields": FIELDS})


def test_models_docstring_table_names_every_model():
    doc = models.__doc__
    for name in ("LR", "FM", "FFM", "FwFM", "AFM", "PNN", "Wide & Deep",
                 "EmbeddingMLP", "DeepFM", "DIN,", "MeanBaseline"):
        assert f"\n{name} " in doc, name


# --------------------------------------------------------------------- Criteo

@pytest.mark.parametrize("dense, expected", [
    ("bucket", []), ("value", list(range(13))), ("both", list(range(13, 26)))])
def test_criteo_value_fields(tmp_path, dense, expected):
    path = write_synthetic(tmp_path / "s.txt", 60, seed=1)
    data = load_criteo(path, dense=dense, min_count=1)
    assert data.value_fields == expected
    assert all(data.field_names[i].endswith("_value") for i in expected)
    if expected:  # a Wide & Deep model reads them as raw MLP inputs
        model = models.WideAndDeep(data.field_dims, embed_dim=2,
                                   dense_fields=data.value_fields)
        batch = {k: v[:8] for k, v in data.train.tensors.items()}
        inp = model.deep_input(batch)
        assert torch.equal(inp[:, -13:], batch["values"][:, expected])
