"""Factorization machines: Rendle's identity, its gradient, real-valued fields, FFM.

Every check compares the library with a literal transcription of the model equation
(double loops over feature pairs), in float64.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ctr_src import experiments, layers, metrics, models, train, utils
from ctr_src.data import TensorData
from conftest import random_fields

DIMS = [3, 5, 2, 4]


def naive_pairs(e: torch.Tensor) -> torch.Tensor:
    """``sum_{i<j} <e_i, e_j>`` by a double loop over pairs: ``(B, F, D) -> (B,)``."""
    f = e.shape[1]
    out = torch.zeros(e.shape[0], dtype=e.dtype)
    for i in range(f):
        for j in range(i + 1, f):
            out = out + (e[:, i] * e[:, j]).sum(-1)
    return out


def abs_pairs(e: torch.Tensor) -> torch.Tensor:
    """``sum_{i<j} |<e_i, e_j>|``: the scale against which a relative error is measured."""
    g = torch.einsum("bid,bjd->bij", e, e).abs()
    return torch.triu(g, diagonal=1).sum((1, 2))


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter (the zero-initialised linear weights too) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def dense_x(fields: torch.Tensor, values: torch.Tensor | None, dims) -> torch.Tensor:
    """The feature vector x in R^n of each row: ``(B, F) -> (B, n)``, value ``values[b, f]``
    (default 1) at coordinate ``offset_f + fields[b, f]``, zero elsewhere."""
    offsets = torch.tensor([0] + list(dims[:-1])).cumsum(0)
    x = torch.zeros(fields.shape[0], sum(dims), dtype=torch.float64)
    vals = torch.ones(fields.shape, dtype=torch.float64) if values is None else values.double()
    x.scatter_(1, fields + offsets, vals)
    return x


def dense_fm(x: torch.Tensor, w0: torch.Tensor, w: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Rendle's model equation on dense x, double loop over all n features: ``(B, n) -> (B,)``."""
    n = x.shape[1]
    out = w0 + x @ w
    for i in range(n):
        for j in range(i + 1, n):
            out = out + (V[i] @ V[j]) * x[:, i] * x[:, j]
    return out


# ----------------------------------------------------------------------------- the identity

@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 5), n=st.integers(1, 12), k=st.integers(1, 6),
       scale=st.floats(1e-3, 1e3), zeros=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_identity_equals_naive_pair_sum_for_real_valued_x(batch, n, k, scale, zeros, seed):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(n, k, generator=g, dtype=torch.float64)
    x = scale * torch.randn(batch, n, generator=g, dtype=torch.float64)
    if zeros:  # sparse rows: some features absent
        x = x * (torch.rand(batch, n, generator=g) < 0.5)
    e = x.unsqueeze(-1) * V  # (B, n, k): e_i = v_i x_i
    fast = layers.FMInteraction()(e).squeeze(1)
    naive = naive_pairs(e)
    tol = 1e-5 * abs_pairs(e) + 1e-300
    assert fast.shape == (batch,)
    assert ((fast - naive).abs() <= tol).all()
    # the vector form sums to the scalar form, and is the naive sum of e_i * e_j
    bi = layers.FMInteraction(reduce_sum=False)(e)
    assert bi.shape == (batch, k)
    naive_bi = sum((e[:, i] * e[:, j] for i, j in itertools.combinations(range(n), 2)),
                   torch.zeros(batch, k, dtype=torch.float64))
    assert torch.allclose(bi, naive_bi, rtol=1e-5, atol=1e-5 * float(abs_pairs(e).max()) + 1e-300)
    assert torch.allclose(bi.sum(1), fast, rtol=1e-12, atol=1e-12 * float(abs_pairs(e).max()) + 1e-300)


def test_identity_is_not_trivially_true():
    """The naive reference is sensitive: dropping the diagonal correction is caught."""
    torch.manual_seed(0)
    e = torch.randn(4, 6, 3, dtype=torch.float64)
    wrong = 0.5 * e.sum(1).pow(2).sum(1)  # forgot "minus the sum of squares"
    assert not torch.allclose(wrong, naive_pairs(e))
    assert torch.allclose(layers.FMInteraction()(e).squeeze(1), naive_pairs(e))


@pytest.mark.parametrize("reduce_sum", [True, False])
def test_fm_interaction_gradcheck(reduce_sum):
    torch.manual_seed(0)
    e = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layers.FMInteraction(reduce_sum=reduce_sum), (e,))
    assert torch.autograd.gradgradcheck(layers.FMInteraction(reduce_sum=reduce_sum), (e,))


def test_gradient_formula_matches_autograd():
    """d y / d v_if = x_i sum_j v_jf x_j - v_if x_i^2 for the pairwise term."""
    g = torch.Generator().manual_seed(3)
    n, k = 7, 4
    V = torch.randn(n, k, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    y = layers.FMInteraction()((x.unsqueeze(-1) * V).unsqueeze(0)).sum()
    (grad,) = torch.autograd.grad(y, V)
    s = (V * x.unsqueeze(-1)).sum(0)  # (k,): sum_j v_jf x_j
    formula = x.unsqueeze(-1) * s - V * x.unsqueeze(-1) ** 2
    assert torch.allclose(grad, formula, atol=1e-12)
    # and against the derivative of the naive double loop
    y_naive = naive_pairs((x.unsqueeze(-1) * V).unsqueeze(0)).sum()
    (grad_naive,) = torch.autograd.grad(y_naive, V)
    assert torch.allclose(grad_naive, formula, atol=1e-12)


@pytest.mark.parametrize("bad", [torch.zeros(4, 3), torch.zeros(2, 3, 4, 5), "not a tensor"])
def test_fm_interaction_rejects_wrong_shapes(bad):
    with pytest.raises(ValueError, match=r"\(B, F, D\)"):
        layers.FMInteraction()(bad)


def test_fm_interaction_rejects_non_bool_reduce_sum():
    with pytest.raises(TypeError, match="reduce_sum"):
        layers.FMInteraction(reduce_sum="yes")


# ----------------------------------------------------------------------------- FM, the model

@pytest.mark.parametrize("with_values", [False, True])
def test_fm_equals_dense_model_equation(with_values):
    """models.FM on (fields, values) == Rendle's equation on the dense x it stands for."""
    torch.manual_seed(0)
    model = randomise(models.FM(DIMS, embed_dim=3)).double()
    fields = random_fields(DIMS, 9)
    values = torch.randn(9, len(DIMS), dtype=torch.float64) * 3 if with_values else None
    batch = {"fields": fields} if values is None else {"fields": fields, "values": values}
    x = dense_x(fields, values, DIMS)
    ref = dense_fm(x, model.linear.bias, model.linear.embedding.weight[:, 0],
                   model.embedding.embedding.weight)
    out = model(batch)
    assert out.shape == (9,)
    assert torch.allclose(out, ref, atol=1e-10)


def test_fm_values_of_one_equal_no_values_and_values_matter():
    torch.manual_seed(1)
    model = randomise(models.FM(DIMS, embed_dim=4))
    fields = random_fields(DIMS, 16)
    ones = torch.ones(16, len(DIMS))
    assert torch.allclose(model({"fields": fields}), model({"fields": fields, "values": ones}))
    twice = model({"fields": fields, "values": 2 * ones}) - model.linear.bias
    plain = model({"fields": fields}) - model.linear.bias
    # doubling every x doubles the linear term and quadruples the pairs
    lin = model.linear(fields).squeeze(1) - model.linear.bias
    assert torch.allclose(twice, 2 * lin + 4 * (plain - lin), atol=1e-4)


def test_fm_values_with_wrong_shape_fail_clearly():
    model = models.FM(DIMS, embed_dim=2)
    with pytest.raises(ValueError, match="values must match"):
        model({"fields": random_fields(DIMS, 4), "values": torch.ones(4, 3)})


def test_fm_with_zeroed_embeddings_equals_lr():
    torch.manual_seed(2)
    fm = randomise(models.FM(DIMS, embed_dim=4)).double()
    lr = models.LR(DIMS).double()
    lr.linear.load_state_dict(fm.linear.state_dict())
    fields = random_fields(DIMS, 20)
    values = torch.rand(20, len(DIMS), dtype=torch.float64)
    assert not torch.allclose(fm({"fields": fields}), lr({"fields": fields}))
    with torch.no_grad():
        fm.embedding.embedding.weight.zero_()
    for batch in ({"fields": fields}, {"fields": fields, "values": values}):
        assert torch.allclose(fm(batch), lr(batch), atol=1e-12)


def test_fm_one_hot_through_embedding_equals_naive_over_all_features():
    """One-hot fields: the F lookups + identity equal the double loop over all n features."""
    torch.manual_seed(4)
    model = randomise(models.FM(DIMS, embed_dim=2)).double()
    fields = random_fields(DIMS, 6)
    x = dense_x(fields, None, DIMS)
    assert torch.equal(x.sum(1), torch.full((6,), float(len(DIMS))))
    V = model.embedding.embedding.weight
    naive = dense_fm(x, torch.zeros(()), torch.zeros(sum(DIMS), dtype=torch.float64), V)
    assert torch.allclose(model.fm(model.embedding(fields)).squeeze(1), naive, atol=1e-12)


def test_fm_pair_terms_sum_to_the_pairwise_term():
    torch.manual_seed(5)
    model = randomise(models.FM(DIMS, embed_dim=3)).double()
    batch = {"fields": random_fields(DIMS, 8), "values": torch.randn(8, len(DIMS), dtype=torch.float64)}
    t = model.pair_terms(batch)
    assert t.shape == (8, len(DIMS), len(DIMS))
    assert torch.allclose(t, t.transpose(1, 2))
    assert torch.equal(torch.diagonal(t, dim1=1, dim2=2), torch.zeros(8, len(DIMS), dtype=torch.float64))
    linear = model.linear(batch["fields"], batch["values"]).squeeze(1)
    assert torch.allclose(torch.triu(t, 1).sum((1, 2)), model(batch) - linear, atol=1e-10)


def test_fm_parameter_count():
    n, k = sum(DIMS), 5
    assert utils.count_parameters(models.FM(DIMS, embed_dim=k)) == n * k + n + 1
    with pytest.raises(ValueError, match="embed_dim"):
        models.FM(DIMS, embed_dim=0)


# ----------------------------------------------------------------------------- FFM

def naive_pairwise(model, fields: torch.Tensor, values: torch.Tensor | None,
                   pair) -> torch.Tensor:
    """``w_0 + sum_i w_i x_i + sum_{i<j} pair(rows, i, j) x_i x_j`` by a double loop over the
    fields, reading the tables by hand; ``rows[f]`` is field ``f``'s row in the tables."""
    F = len(DIMS)
    offsets = torch.tensor([0] + DIMS[:-1]).cumsum(0)
    w = model.linear.embedding.weight[:, 0]
    out = []
    for b in range(fields.shape[0]):
        rows = [int(offsets[f] + fields[b, f]) for f in range(F)]
        x = [1.0 if values is None else values[b, f] for f in range(F)]
        y = model.linear.bias[0] + sum(w[rows[f]] * x[f] for f in range(F))
        for i in range(F):
            for j in range(i + 1, F):
                y = y + pair(rows, i, j) * x[i] * x[j]
        out.append(y)
    return torch.stack(out)


def naive_ffm(model: models.FFM, fields: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    """Juan et al.'s equation: the pair uses ``v_{i, f(j)}`` and ``v_{j, f(i)}``."""
    table = model.embedding.embedding.weight.view(-1, len(DIMS), model.embed_dim)
    return naive_pairwise(model, fields, values,  # table[row, partner field, d]
                          lambda rows, i, j: table[rows[i], j] @ table[rows[j], i])


def naive_fwfm(model, fields, values):
    """Pan et al.'s equation: FM's pair times the field pair's weight ``r_ij``."""
    V = model.embedding.embedding.weight
    r = dict(zip(zip(model.rows.tolist(), model.cols.tolist()), model.pair_weight))
    return naive_pairwise(model, fields, values,
                          lambda rows, i, j: r[i, j] * (V[rows[i]] @ V[rows[j]]))


@pytest.mark.parametrize("with_values", [False, True])
@pytest.mark.parametrize("cls, naive, seed", [(models.FFM, naive_ffm, 6),
                                              (models.FwFM, naive_fwfm, 9)])
def test_field_pair_models_match_double_loop(cls, naive, seed, with_values):
    torch.manual_seed(seed)
    model = randomise(cls(DIMS, embed_dim=3)).double()
    fields = random_fields(DIMS, 7)
    values = torch.randn(7, len(DIMS), dtype=torch.float64) if with_values else None
    batch = {"fields": fields} if values is None else {"fields": fields, "values": values}
    out = model(batch)
    assert out.shape == (7,)
    assert torch.allclose(out, naive(model, fields, values), atol=1e-10)
    t = model.pair_terms(batch)
    assert torch.allclose(t, t.transpose(1, 2))
    assert torch.all(torch.diagonal(t, dim1=1, dim2=2) == 0)
    linear = model.linear(fields, values).squeeze(1)
    assert torch.allclose(torch.triu(t, 1).sum((1, 2)), out - linear, atol=1e-10)


def test_ffm_with_field_independent_vectors_equals_fm():
    """If every feature uses one vector for all partner fields, FFM is FM."""
    torch.manual_seed(7)
    F, k = len(DIMS), 3
    fm = randomise(models.FM(DIMS, embed_dim=k)).double()
    ffm = models.FFM(DIMS, embed_dim=k).double()
    with torch.no_grad():
        ffm.linear.load_state_dict(fm.linear.state_dict())
        ffm.embedding.embedding.weight.copy_(fm.embedding.embedding.weight.repeat(1, F))
    batch = {"fields": random_fields(DIMS, 10), "values": torch.randn(10, F, dtype=torch.float64)}
    assert torch.allclose(ffm(batch), fm(batch), atol=1e-10)
    # with field-specific vectors they differ
    with torch.no_grad():
        ffm.embedding.embedding.weight.add_(0.1 * torch.randn_like(ffm.embedding.embedding.weight))
    assert not torch.allclose(ffm(batch), fm(batch), atol=1e-3)


def test_ffm_parameter_count_is_n_f_k():
    n, F, k = sum(DIMS), len(DIMS), 4
    ffm, fm = models.FFM(DIMS, embed_dim=k), models.FM(DIMS, embed_dim=k)
    assert ffm.embedding.embedding.weight.shape == (n, F * k)
    assert utils.count_parameters(ffm) == n * F * k + n + 1
    assert utils.count_parameters(ffm) - (n + 1) == F * (utils.count_parameters(fm) - (n + 1))


def test_ffm_gradcheck():
    torch.manual_seed(8)
    model = randomise(models.FFM(DIMS, embed_dim=2)).double()
    fields = random_fields(DIMS, 3)
    values = torch.rand(3, len(DIMS), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: model({"fields": fields, "values": v}), (values,))


# ----------------------------------------------------------------------------- registry, training

def test_registry_and_book_settings_build_fm_and_ffm():
    assert isinstance(models.build("fm", field_dims=DIMS), models.FM)
    assert isinstance(models.build("FFM", field_dims=DIMS), models.FFM)
    for name, cls in (("fm", models.FM), ("ffm", models.FFM)):
        m = models.build(name, field_dims=DIMS, **experiments.SETTINGS[name]["model"])
        assert isinstance(m, cls)
        assert m(({"fields": random_fields(DIMS, 2)})).shape == (2,)


def test_fm_learns_a_pure_interaction_that_lr_cannot():
    """Label = [field 0 and field 1 take 'matching' values]: no first-order signal at all."""
    g = torch.Generator().manual_seed(0)
    dims = [8, 8]

    def make(n):
        x = random_fields(dims, n, g)
        logit = 3.0 * torch.where((x[:, 0] % 2) == (x[:, 1] % 2), 1.0, -1.0)
        y = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
        return TensorData(fields=x, label=y)

    tr, va = make(4000), make(1000)
    aucs = {}
    for name, kw in (("lr", {}), ("fm", dict(embed_dim=4)), ("ffm", dict(embed_dim=2))):
        utils.seed_everything(0)
        m = models.build(name, field_dims=dims, **kw)
        train.fit(m, tr, va, epochs=15, batch_size=128, lr=0.05, patience=3, progress=False)
        aucs[name] = train.evaluate(m, va)["auc"]
    assert aucs["lr"] < 0.6
    assert aucs["fm"] > 0.85 and aucs["ffm"] > 0.85


# ----------------------------------------------------------------------------- FwFM

def test_fwfm_starts_as_fm_and_its_pair_weights_matter():
    """r = 1 (the initial value) gives FM exactly; r = 0 gives LR; other r change it."""
    torch.manual_seed(10)
    fm = randomise(models.FM(DIMS, embed_dim=3)).double()
    fwfm = models.FwFM(DIMS, embed_dim=3).double()
    assert torch.all(fwfm.pair_weight == 1)
    fwfm.linear.load_state_dict(fm.linear.state_dict())
    fwfm.embedding.load_state_dict(fm.embedding.state_dict())
    batch = {"fields": random_fields(DIMS, 10),
             "values": torch.randn(10, len(DIMS), dtype=torch.float64)}
    assert torch.allclose(fwfm(batch), fm(batch), atol=1e-10)
    with torch.no_grad():
        fwfm.pair_weight.zero_()
    linear = fm.linear(batch["fields"], batch["values"]).squeeze(1)
    assert torch.allclose(fwfm(batch), linear, atol=1e-12)
    with torch.no_grad():
        fwfm.pair_weight.copy_(torch.linspace(-1, 2, len(fwfm.pair_weight)))
    assert not torch.allclose(fwfm(batch), fm(batch), atol=1e-3)
    r = fwfm.field_pair_matrix()
    assert torch.equal(r, r.T) and torch.all(torch.diagonal(r) == 0)
    assert r[fwfm.rows[-1], fwfm.cols[-1]] == 2


def test_fwfm_k1_makes_three_pairs_negative_which_fm_k1_cannot():
    """With D = 1 an FM's three pair weights v1v2, v1v3, v2v3 multiply to (v1v2v3)^2 >= 0;
    FwFM's field-pair weights flip signs: r = -1 with v = 1 makes every pair -1."""
    dims = [1, 1, 1]
    fwfm = models.FwFM(dims, embed_dim=1).double()
    with torch.no_grad():
        fwfm.embedding.embedding.weight.fill_(1.0)
        fwfm.pair_weight.fill_(-1.0)
    t = fwfm.pair_terms({"fields": torch.zeros(1, 3, dtype=torch.long)})[0]
    assert torch.equal(torch.triu(t, 1)[fwfm.rows, fwfm.cols],
                       -torch.ones(3, dtype=torch.float64))
    fm = randomise(models.FM(dims, embed_dim=1), seed=11).double()
    t = fm.pair_terms({"fields": torch.zeros(1, 3, dtype=torch.long)})[0]
    assert t[0, 1] * t[0, 2] * t[1, 2] >= 0


def test_fwfm_parameter_count_gradcheck_and_errors():
    n, F, k = sum(DIMS), len(DIMS), 4
    m = models.build("fwfm", field_dims=DIMS, embed_dim=k)
    assert isinstance(m, models.FwFM)
    P = F * (F - 1) // 2
    assert utils.count_parameters(m) == n * k + n + 1 + P
    torch.manual_seed(12)
    m = randomise(models.FwFM(DIMS, embed_dim=2)).double()
    fields = random_fields(DIMS, 3)
    r = m.pair_weight.detach().clone().requires_grad_(True)

    def f(weights):
        return torch.func.functional_call(m, {"pair_weight": weights},
                                          ({"fields": fields},))
    assert torch.autograd.gradcheck(f, (r,))
    with pytest.raises(ValueError, match="at least 2 fields"):
        models.FwFM([5], embed_dim=2)
    with pytest.raises(ValueError, match="embed_dim"):
        models.FwFM(DIMS, embed_dim=0)
