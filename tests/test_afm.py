"""AFM: the attention-based pooling layer and the model, against literal loops over pairs."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from ctr_src import experiments, layers, models
from conftest import random_fields

DIMS = [3, 5, 2, 7, 4]


# ----------------------------------------------------------------------------- references

def loop_layer(layer: layers.AttentionalInteraction, e: torch.Tensor):
    """The layer written out pair by pair, sample by sample: (pooled (B, D), weights (B, P))."""
    B, F, D = e.shape
    pooled, weights = [], []
    for b in range(B):
        vecs, scores = [], []
        for i in range(F):
            for j in range(i + 1, F):
                u = e[b, i] * e[b, j]
                vecs.append(u)
                if layer.uniform:
                    scores.append(torch.zeros((), dtype=e.dtype))
                else:
                    hidden = torch.relu(layer.attention.weight @ u + layer.attention.bias)
                    scores.append(layer.projection.weight[0] @ hidden)
        s = torch.stack(scores)
        a = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
        weights.append(a)
        pooled.append(sum(a[k] * vecs[k] for k in range(len(vecs))))
    return torch.stack(pooled), torch.stack(weights)


def loop_afm(model: models.AFM, fields: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """The full AFM logit from the raw tables: b + sum_i w_i x_i + p^T sum_{i<j} a_ij (v_i*v_j) x_i x_j."""
    B, F = fields.shape
    x = torch.ones(B, F, dtype=torch.float64) if values is None else values.double()
    V = model.embedding.embedding.weight.double()
    w = model.linear.embedding.weight.double()[:, 0]
    offsets = [sum(model.embedding.field_dims[:f]) for f in range(F)]
    att = model.afm
    out = []
    for b in range(B):
        rows = [offsets[f] + int(fields[b, f]) for f in range(F)]
        linear = model.linear.bias.double()[0] + sum(w[r] * x[b, f] for f, r in enumerate(rows))
        vecs, scores = [], []
        for i in range(F):
            for j in range(i + 1, F):
                u = V[rows[i]] * V[rows[j]] * x[b, i] * x[b, j]
                vecs.append(u)
                if att.uniform:
                    scores.append(torch.zeros((), dtype=torch.float64))
                else:
                    hidden = torch.relu(att.attention.weight.double() @ u + att.attention.bias.double())
                    scores.append(att.projection.weight.double()[0] @ hidden)
        a = torch.softmax(torch.stack(scores), dim=0)
        pooled = sum(a[k] * vecs[k] for k in range(len(vecs)))
        out.append(linear + model.p.weight.double()[0] @ pooled)
    return torch.stack(out)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-zero values everywhere (the linear table starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return model


shapes = st.tuples(st.integers(1, 5), st.integers(2, 6), st.integers(1, 5), st.integers(1, 6))


# ----------------------------------------------------------------------------- the layer

@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_layer_matches_loop_over_pairs(shape, seed):
    B, F, D, A = shape
    torch.manual_seed(seed)
    layer = layers.AttentionalInteraction(D, A).double()
    e = torch.randn(B, F, D, dtype=torch.float64)
    out, a = layer(e, return_attention=True)
    ref_out, ref_a = loop_layer(layer, e)
    assert out.shape == (B, D) and a.shape == (B, F * (F - 1) // 2)
    assert torch.allclose(out, ref_out, atol=1e-12)
    assert torch.allclose(a, ref_a, atol=1e-12)
    assert torch.allclose(layer.weights(e), a)
    assert torch.equal(layer(e), out)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), scale=st.floats(0.01, 30.0))
def test_weights_sum_to_one_over_pairs_for_every_sample(shape, seed, scale):
    B, F, D, A = shape
    torch.manual_seed(seed)
    layer = randomise(layers.AttentionalInteraction(D, A).double(), seed)
    a = layer.weights(scale * torch.randn(B, F, D, dtype=torch.float64))
    assert a.shape == (B, F * (F - 1) // 2)
    assert bool((a >= 0).all()) and bool((a <= 1).all())
    assert torch.allclose(a.sum(dim=1), torch.ones(B, dtype=torch.float64), atol=1e-12)


def test_weights_differ_between_pairs_and_between_samples():
    torch.manual_seed(0)
    layer = randomise(layers.AttentionalInteraction(4, 8).double())
    a = layer.weights(torch.randn(6, 5, 4, dtype=torch.float64)).detach()
    assert float(a.std(dim=1).min()) > 1e-4      # not uniform within a sample
    assert float(a.std(dim=0).max()) > 1e-4      # and not the same for every sample


def test_pair_order_is_the_documented_row_major_list():
    F = 5
    expected = [(i, j) for i in range(F) for j in range(i + 1, F)]
    rows, cols = layers.pair_indices(F)
    assert list(zip(rows.tolist(), cols.tolist())) == expected
    model = models.AFM([2] * F, embed_dim=3)
    assert model.pairs == expected
    # column k of the weights belongs to pair expected[k]: give exactly one pair a non-zero
    # interaction vector and its column must be the one that stands out
    layer = layers.AttentionalInteraction(2, 3, num_fields=F).double()
    with torch.no_grad():
        layer.attention.weight.fill_(1.0)
        layer.attention.bias.zero_()
        layer.projection.weight.fill_(1.0)
    for k, (i, j) in enumerate(expected):
        e = torch.zeros(1, F, 2, dtype=torch.float64)
        e[0, i] = e[0, j] = 2.0   # u_ij = (4, 4), every other u = 0
        a = layer.weights(e)[0].detach()
        others = torch.cat([a[:k], a[k + 1:]])
        assert float(a[k]) > float(others.max()) + 0.1  # column k and only column k


@settings(max_examples=20, deadline=None)
@given(F=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_field_permutation_permutes_weights_and_keeps_the_output(F, seed):
    torch.manual_seed(seed)
    layer = randomise(layers.AttentionalInteraction(3, 4).double(), seed)
    e = torch.randn(2, F, 3, dtype=torch.float64)
    perm = torch.randperm(F)
    out, a = layer(e, return_attention=True)
    out_p, a_p = layer(e[:, perm], return_attention=True)
    assert torch.allclose(out, out_p, atol=1e-12)
    pairs = [(i, j) for i in range(F) for j in range(i + 1, F)]
    index = {p: k for k, p in enumerate(pairs)}
    for k, (i, j) in enumerate(pairs):  # permuted pair k is original pair (perm[i], perm[j])
        src = tuple(sorted((int(perm[i]), int(perm[j]))))
        assert torch.allclose(a_p[:, k], a[:, index[src]], atol=1e-12)


def test_uniform_weights_and_zero_scores_are_the_same_thing():
    torch.manual_seed(0)
    e = torch.randn(4, 5, 3, dtype=torch.float64)
    uniform = layers.AttentionalInteraction(3, 4, uniform=True).double()
    a = uniform.weights(e)
    assert torch.allclose(a, torch.full((4, 10), 0.1, dtype=torch.float64))
    att = layers.AttentionalInteraction(3, 4).double()
    nn.init.zeros_(att.projection.weight)  # h = 0: every score is 0, the softmax is 1/P
    assert torch.allclose(att(e), uniform(e), atol=1e-12)
    # without attention there are no attention parameters to learn (or to count)
    assert sum(p.numel() for p in uniform.parameters()) == 0
    assert sum(p.numel() for p in att.parameters()) == 4 * 3 + 4 + 4


def test_uniform_attention_is_fm_pairwise_term_over_number_of_pairs():
    torch.manual_seed(0)
    B, F, D = 8, 6, 4
    P = F * (F - 1) // 2
    e = torch.randn(B, F, D, dtype=torch.float64)
    pooled = layers.AttentionalInteraction(D, 5, uniform=True).double()(e)
    fm = layers.FMInteraction(reduce_sum=True)(e)  # (B, 1)
    assert torch.allclose(pooled.sum(dim=1, keepdim=True), fm / P, atol=1e-12)  # p = 1
    bi = layers.FMInteraction(reduce_sum=False)(e)  # (B, D)
    assert torch.allclose(pooled, bi / P, atol=1e-12)


def test_softmax_over_a_size_one_dimension_collapses_to_the_fm_sum():
    """The pitfall the chapter warns about: normalising each pair's score over a length-1
    axis gives weight 1 to every pair, and the pooling becomes FM's plain sum."""
    torch.manual_seed(0)
    layer = randomise(layers.AttentionalInteraction(4, 6).double())
    e = torch.randn(5, 6, 4, dtype=torch.float64)
    u = layer.interactions(e)
    scores = layer.scores(u).unsqueeze(-1)                      # (B, P, 1)
    wrong = torch.softmax(scores, dim=-1)                       # over the size-1 axis
    assert torch.equal(wrong, torch.ones_like(wrong))
    pooled_wrong = (wrong * u).sum(dim=1)
    assert torch.allclose(pooled_wrong, layers.FMInteraction(reduce_sum=False)(e), atol=1e-12)
    right = torch.softmax(scores, dim=1)                        # over the P pairs
    assert torch.allclose(right.squeeze(-1), layer.weights(e))
    assert not torch.allclose(right, wrong)


def test_dropout_is_off_in_eval_and_on_in_train():
    torch.manual_seed(0)
    with_dropout = layers.AttentionalInteraction(8, 4, dropout=0.5)
    without = layers.AttentionalInteraction(8, 4, dropout=0.0)
    without.load_state_dict(with_dropout.state_dict())
    e = torch.randn(16, 5, 8)
    with_dropout.eval()
    out1, a1 = with_dropout(e, return_attention=True)
    out2, a2 = with_dropout(e, return_attention=True)
    assert torch.equal(out1, out2) and torch.equal(a1, a2)
    assert torch.allclose(out1, without(e))
    with_dropout.train()
    torch.manual_seed(1)
    out3, a3 = with_dropout(e, return_attention=True)
    assert not torch.allclose(out3, out1)       # dropout acts on the pooled pair vectors...
    assert torch.allclose(a3, a1)               # ...never on the weights
    assert torch.allclose(a3.sum(dim=1), torch.ones(16))


def test_dropout_drops_elements_of_the_pair_vectors():
    """With one pair (F = 2) the weight is 1, so each output element is either dropped (0)
    or kept and rescaled (x 1 / (1 - rate)) -- element by element, not a whole pair at once."""
    torch.manual_seed(0)
    layer = layers.AttentionalInteraction(64, 4, dropout=0.5).double()
    e = torch.randn(8, 2, 64, dtype=torch.float64)
    layer.eval()
    full = layer(e)
    layer.train()
    ratio = layer(e) / full
    kept = torch.isclose(ratio, torch.full_like(ratio, 2.0))
    dropped = ratio == 0
    assert bool((kept | dropped).all())
    assert bool((kept.any(dim=1) & dropped.any(dim=1)).all())  # both happen within every row
    # with three pairs each pair's elements are dropped independently, so an output element
    # can keep part of its sum: dropping the pooled vector instead would only give 0 or x 2
    e3 = torch.randn(8, 3, 64, dtype=torch.float64)
    state = layer.state_dict()
    layer = layers.AttentionalInteraction(64, 4, dropout=0.5).double()  # a layer learns F once
    layer.load_state_dict(state)
    layer.eval()
    full3 = layer(e3)
    layer.train()
    ratio3 = layer(e3) / full3
    partial = ~(torch.isclose(ratio3, torch.full_like(ratio3, 2.0)) | (ratio3 == 0))
    assert float(partial.double().mean()) > 0.3


def test_layer_gradcheck_float64():
    torch.manual_seed(0)
    layer = layers.AttentionalInteraction(3, 4).double()
    names = [n for n, _ in layer.named_parameters()]
    e = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]

    def f(e, *ps):
        out, a = functional_call(layer, dict(zip(names, ps)), (e,), {"return_attention": True})
        return out, a

    assert torch.autograd.gradcheck(f, (e, *params), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradgradcheck(lambda e: layer(e), (e,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("kwargs, err, msg", [
    (dict(embed_dim=0, attention_dim=4), ValueError, "embed_dim"),
    (dict(embed_dim=3, attention_dim=0), ValueError, "attention_dim"),
    (dict(embed_dim=3, attention_dim=4, dropout=1.0), ValueError, "dropout"),
])
def test_bad_arguments_give_clear_errors(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        layers.AttentionalInteraction(**kwargs)


def test_bad_inputs_give_clear_errors():
    layer = layers.AttentionalInteraction(3, 4, num_fields=4)
    with pytest.raises(ValueError, match="embed_dim=3"):
        layer(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="4 fields"):
        layer(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"\(B, F, D\)"):
        layer(torch.randn(4, 3))
    with pytest.raises(ValueError, match="2 fields"):
        models.AFM([3])


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("with_values", [False, True])
def test_afm_logit_matches_loop_over_pairs(attention, with_values):
    torch.manual_seed(0)
    model = randomise(models.AFM(DIMS, embed_dim=4, attention_dim=3, attention=attention)).double()
    fields = random_fields(DIMS, 7)
    values = torch.rand(7, len(DIMS), dtype=torch.float64) * 2 if with_values else None
    batch = {"fields": fields} if values is None else {"fields": fields, "values": values}
    logits = model(batch)
    assert logits.shape == (7,)
    assert torch.allclose(logits, loop_afm(model, fields, values), atol=1e-10)


def test_afm_without_attention_and_p_one_equals_fm_pairwise_over_p():
    torch.manual_seed(0)
    afm = randomise(models.AFM(DIMS, embed_dim=4, attention=False)).double()
    fm = models.FM(DIMS, embed_dim=4).double()
    fm.load_state_dict(afm.state_dict(), strict=False)  # the shared linear and embedding tables
    assert torch.equal(fm.embedding.embedding.weight, afm.embedding.embedding.weight)
    nn.init.ones_(afm.p.weight)
    batch = {"fields": random_fields(DIMS, 32)}
    linear = afm.linear(batch["fields"]).squeeze(-1)
    P = len(DIMS) * (len(DIMS) - 1) // 2
    assert torch.allclose(afm(batch) - linear, (fm(batch) - linear) / P, atol=1e-12)


def test_afm_attention_method_sums_to_one_and_matches_forward():
    torch.manual_seed(0)
    model = randomise(models.AFM(DIMS, embed_dim=4, dropout=0.3))
    batch = {"fields": random_fields(DIMS, 20)}
    model.train()
    a = model.attention(batch)
    assert a.shape == (20, len(model.pairs)) and not a.requires_grad
    assert torch.allclose(a.sum(dim=1), torch.ones(20), atol=1e-6)
    model.eval()
    assert torch.equal(model.attention(batch), a)  # no dropout on the weights
    _, a_fwd = model.afm(model.embedding(batch["fields"]), return_attention=True)
    assert torch.allclose(a_fwd, a)


def test_afm_eval_is_deterministic_and_train_is_not():
    torch.manual_seed(0)
    model = models.AFM(DIMS, embed_dim=8, dropout=0.5)
    batch = {"fields": random_fields(DIMS, 64)}
    model.eval()
    assert torch.equal(model(batch), model(batch))
    model.train()
    assert not torch.allclose(model(batch), model(batch))


def test_afm_gradcheck_float64():
    torch.manual_seed(0)
    model = randomise(models.AFM([3, 4, 2], embed_dim=3, attention_dim=2)).double()
    fields = random_fields([3, 4, 2], 3)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]

    def f(*ps):
        return functional_call(model, dict(zip(names, ps)), ({"fields": fields},))

    assert torch.autograd.gradcheck(f, tuple(params), eps=1e-6, atol=1e-5)


def test_afm_registry_settings_and_parameter_count():
    model = models.build("afm", field_dims=DIMS, embed_dim=4, attention_dim=3)
    assert isinstance(model, models.AFM)
    n, D, A = sum(DIMS), 4, 3
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model) == (n + 1) + n * D + (A * D + A + A) + D
    plain = models.build("afm", field_dims=DIMS, embed_dim=4, attention=False)
    assert count(plain) == (n + 1) + n * D + D
    assert "afm" in experiments.SETTINGS
    assert set(experiments.SETTINGS["afm"]["model"]) <= {"embed_dim", "attention_dim", "dropout", "attention"}


@pytest.mark.slow
def test_afm_attends_to_the_pair_that_generates_the_labels():
    """On synthetic data whose label depends only on fields 0 and 1 together, the learned
    attention puts its largest mean weight on the pair (0, 1)."""
    torch.manual_seed(0)
    dims = [6, 6, 6, 6]
    g = torch.Generator().manual_seed(0)
    fields = random_fields(dims, 3000, generator=g)
    table = torch.randn(6, 6, generator=g) * 3
    label = (torch.rand(3000, generator=g) < torch.sigmoid(table[fields[:, 0], fields[:, 1]])).float()
    model = models.AFM(dims, embed_dim=8, attention_dim=8)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(20):
        for idx in torch.arange(3000).split(500):
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model({"fields": fields[idx]}), label[idx])
            loss.backward()
            opt.step()
    mean = model.attention({"fields": fields}).mean(dim=0)
    assert model.pairs[int(mean.argmax())] == (0, 1)
    assert float(mean.max()) > 2.0 / len(model.pairs)  # well above uniform 1/P
