"""DIN: the activation unit, Dice, masking, order invariance, the base model and GAUC."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctr_src import layers, metrics, models, utils

DIMS = [6, 11, 5, 4]      # field 1 is the item, field 3 its genre
SEQ = (1, 3)
VARIANTS = [dict(activation="dice"), dict(activation="prelu"),
            dict(activation="dice", softmax=True), dict(activation="prelu", softmax=True)]


def make_batch(b=5, length=4, seed=0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    fields = torch.stack([torch.randint(0, d, (b,), generator=g) for d in DIMS], 1)
    history = torch.stack([torch.randint(1, DIMS[1], (b, length), generator=g),
                           torch.randint(0, DIMS[3], (b, length), generator=g)], -1)
    if lengths is None:
        lengths = torch.randint(0, length + 1, (b,), generator=g)
    mask = torch.arange(length)[None, :] < torch.as_tensor(lengths)[:, None]
    return {"fields": fields, "history": history, "history_mask": mask}


def build(name="din", seed=0, **kw):
    utils.seed_everything(seed)
    kw = dict(dict(embed_dim=3, seq_fields=SEQ, mlp_dims=(8,)), **kw)
    if name == "din":
        kw.setdefault("attention_dims", (6,))
    m = models.build(name, field_dims=DIMS, **kw)
    # Dice's running statistics start at (0, 1); give them other values so eval mode is tested
    for mod in m.modules():
        if isinstance(mod, layers.Dice):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.alpha.uniform_(-0.5, 0.5)
    return m


def pad(batch, extra, seed=1):
    """Append ``extra`` masked positions holding random (valid) indices."""
    g = torch.Generator().manual_seed(seed)
    b = batch["history"].shape[0]
    junk = torch.stack([torch.randint(0, DIMS[1], (b, extra), generator=g),
                        torch.randint(0, DIMS[3], (b, extra), generator=g)], -1)
    return dict(batch, history=torch.cat([batch["history"], junk], 1),
                history_mask=torch.cat([batch["history_mask"], torch.zeros(b, extra, dtype=torch.bool)], 1))


# ----------------------------------------------------------------------------- masking & order

@pytest.mark.parametrize("kw", VARIANTS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_padding_gets_zero_weight_and_appending_padding_changes_nothing(kw, mode):
    m = build(**kw).train(mode == "train")
    batch = make_batch(b=6, length=5, lengths=[0, 1, 3, 5, 5, 2])
    longer = pad(batch, 7)
    w = m._weights(*m.embed(longer)[1:])
    assert (w[~longer["history_mask"]] == 0).all()
    assert torch.allclose(m(batch), m(longer), atol=1e-6)
    assert torch.allclose(m.pooled(batch), m.pooled(longer), atol=1e-6)
    # what sits at a padded position does not matter either
    other = dict(batch, history=torch.where(batch["history_mask"][..., None], batch["history"],
                                            torch.ones_like(batch["history"])))
    assert torch.allclose(m(batch), m(other), atol=1e-6)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_base_model_pooling_and_padding(pooling):
    m = build("din_base", pooling=pooling)
    batch = make_batch(b=6, length=5, lengths=[0, 1, 3, 5, 5, 2])
    e = m.embedding
    v = m.pooled(batch)
    for i in range(6):
        rows = [torch.cat([e.field_rows(1, batch["history"][i, j, 0]), e.field_rows(3, batch["history"][i, j, 1])])
                for j in range(5) if batch["history_mask"][i, j]]
        expected = torch.stack(rows).sum(0) if rows else torch.zeros(6)
        if pooling == "mean" and rows:
            expected = expected / len(rows)
        assert torch.allclose(v[i], expected, atol=1e-6)
    assert torch.allclose(m(batch), m(pad(batch, 3)), atol=1e-6)


@pytest.mark.parametrize("kw", VARIANTS)
def test_reordering_the_history_leaves_the_pooled_vector_alone(kw):
    m = build(**kw).train()  # in training too: Dice's batch statistics ignore the order
    batch = make_batch(b=6, length=6, seed=3)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(5))
    shuffled = dict(batch, history=batch["history"][:, perm], history_mask=batch["history_mask"][:, perm])
    assert torch.allclose(m.pooled(batch), m.pooled(shuffled), atol=1e-6)
    assert torch.allclose(m(batch), m(shuffled), atol=1e-6)
    assert torch.allclose(m.attention(batch)[:, perm], m.attention(shuffled), atol=1e-6)


@pytest.mark.parametrize("kw", VARIANTS)
def test_empty_history_pools_to_zero_and_trains(kw):
    m = build(**kw).train()
    batch = make_batch(b=4, length=3, lengths=[0, 0, 2, 3])
    v = m.pooled(batch)
    assert (v[:2] == 0).all()
    out = m(batch)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    # a batch of empty histories only (Dice has no real position to take statistics from)
    m.zero_grad()
    none = make_batch(b=3, length=4, lengths=[0, 0, 0])
    out = m(none)
    out.sum().backward()
    assert torch.isfinite(out).all() and (m.attention(none) == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_softmax_weights_sum_to_one_over_real_positions():
    m = build(softmax=True).eval()
    batch = make_batch(b=6, length=5, lengths=[0, 1, 3, 5, 5, 2])
    w = m.attention(batch)
    sums = w.sum(1)
    assert torch.allclose(sums[1:], torch.ones(5), atol=1e-6) and sums[0] == 0
    # the softmax weights are the raw scores exponentiated and normalised
    raw = build(softmax=False).eval().attention(batch)
    for i in range(1, 6):
        real = batch["history_mask"][i]
        assert torch.allclose(w[i, real], torch.softmax(raw[i, real], 0), atol=1e-6)


# ----------------------------------------------------------------------------- by hand

def hand_unit(unit, eh, et):
    """g(e_h, e_t) for one position, written out with the unit's weights (eval mode)."""
    x = torch.cat([eh, et, eh - et, eh * et])
    for lin, act in zip(unit.linears, unit.activations):
        s = lin.weight @ x + lin.bias
        if isinstance(act, layers.Dice):
            p = torch.sigmoid((s - act.running_mean) / torch.sqrt(act.running_var + act.eps))
            x = p * s + (1 - p) * act.alpha * s
        else:
            x = torch.where(s >= 0, s, act.weight * s)
    return (unit.out.weight @ x + unit.out.bias).squeeze()


@pytest.mark.parametrize("activation", ["dice", "prelu"])
def test_din_matches_a_loop_over_positions(activation):
    m = build(activation=activation).eval().double()
    batch = make_batch(b=4, length=5, lengths=[0, 2, 5, 4], seed=7)
    emb = m.embedding
    logits = m(batch)
    for i in range(4):
        f = batch["fields"][i]
        e_all = torch.cat([emb.field_rows(k, f[k]) for k in range(len(DIMS))])
        e_t = torch.cat([emb.field_rows(1, f[1]), emb.field_rows(3, f[3])])
        v = torch.zeros(6, dtype=torch.float64)
        for j in range(5):
            if batch["history_mask"][i, j]:
                item, genre = batch["history"][i, j]
                e_j = torch.cat([emb.field_rows(1, item), emb.field_rows(3, genre)])
                v = v + hand_unit(m.unit, e_j, e_t) * e_j
        z = m.mlp(torch.cat([e_all, v])[None])
        assert torch.allclose(logits[i], z.squeeze(), atol=1e-10)


def test_attention_restores_the_mode_and_leaves_dice_statistics_alone():
    m = build().train()
    batch = make_batch(b=6, length=5)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.attention(batch)
    assert m.training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    m(batch)  # a training forward does move the running statistics
    assert not all(torch.equal(before[k], v) for k, v in m.state_dict().items())


# ----------------------------------------------------------------------------- Dice

def test_dice_train_uses_batch_statistics_and_updates_running_ones():
    torch.manual_seed(0)
    dice = layers.Dice(3, momentum=0.25)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.1, -0.2, 0.5]))
    x = torch.randn(50, 3, dtype=torch.float64) * 2 + 1
    dice = dice.double().train()
    y = dice(x)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + dice.eps))
    assert torch.allclose(y, p * x + (1 - p) * dice.alpha * x)
    assert torch.allclose(dice.running_mean, 0.25 * mean)
    assert torch.allclose(dice.running_var, 0.75 * 1.0 + 0.25 * x.var(0, unbiased=True))
    # eval: the running statistics, and no update
    dice.eval()
    rm, rv = dice.running_mean.clone(), dice.running_var.clone()
    y_eval = dice(x)
    p = torch.sigmoid((x - rm) / torch.sqrt(rv + dice.eps))
    assert torch.allclose(y_eval, p * x + (1 - p) * dice.alpha * x)
    assert torch.equal(dice.running_mean, rm) and torch.equal(dice.running_var, rv)
    assert not torch.allclose(y, y_eval)


def test_dice_with_fixed_statistics_is_the_sigmoid_gate():
    dice = layers.Dice(2).double().eval()
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.0, 0.3]))
        dice.running_mean.zero_()
        dice.running_var.fill_(1.0 - dice.eps)
    s = torch.linspace(-6, 6, 101, dtype=torch.float64)[:, None].repeat(1, 2)
    expected = torch.sigmoid(s) * s + (1 - torch.sigmoid(s)) * torch.tensor([0.0, 0.3]) * s
    assert torch.allclose(dice(s), expected, atol=1e-12)
    # alpha = 0: s * sigmoid(s), the SiLU
    assert torch.allclose(dice(s)[:, 0], torch.nn.functional.silu(s[:, 0]), atol=1e-12)
    # a tiny variance turns the gate into a step at the mean: Dice -> PReLU with slope alpha
    with torch.no_grad():
        dice.running_var.fill_(1e-12)
    prelu = torch.where(s >= 0, s, torch.tensor([0.0, 0.3]) * s)
    far = s.abs() > 1e-3
    assert torch.allclose(dice(s)[far], prelu[far], atol=1e-9)


def test_dice_masked_statistics_use_real_positions_only():
    torch.manual_seed(1)
    dice = layers.Dice(4).double().train()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    y = dice(x, mask)
    real = x[mask]
    p = torch.sigmoid((x - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + dice.eps))
    assert torch.allclose(y, p * x)  # alpha = 0 at initialisation
    # garbage in padded positions does not change the real outputs
    x2 = torch.where(mask[..., None], x, torch.full_like(x, 1e3))
    assert torch.allclose(dice(x2, mask)[mask], y[mask])
    with pytest.raises(ValueError, match="mask"):
        dice(x, mask[:, :4])


def test_dice_single_row_falls_back_to_running_statistics():
    dice = layers.Dice(2).train()
    x = torch.tensor([[1.0, -2.0]])
    p = torch.sigmoid(x / torch.sqrt(torch.tensor(1.0 + dice.eps)))
    assert torch.allclose(dice(x), p * x)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("activation", ["dice", "prelu"])
def test_activation_unit_gradcheck(activation):
    torch.manual_seed(0)
    unit = layers.ActivationUnit(3, (5, 4), activation).double().train()
    with torch.no_grad():
        for mod in unit.modules():
            if isinstance(mod, layers.Dice):
                mod.alpha.uniform_(-0.5, 0.5)
    h = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda a, b: unit(a, b, mask), (h, t))
    # and through the weights
    names = [n for n, _ in unit.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in unit.parameters())
    def of_params(*ps):
        return torch.func.functional_call(unit, dict(zip(names, ps)), (h.detach(), t.detach(), mask))
    assert torch.autograd.gradcheck(of_params, params)


def test_din_gradcheck_end_to_end():
    m = build(activation="dice").double().train()
    batch = make_batch(b=5, length=4, lengths=[0, 1, 2, 4, 3], seed=2)
    _, h, t, mask = m.embed(batch)
    h = h.detach().requires_grad_()
    t = t.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: (m._weights(a, b, mask)[..., None] * a).sum(1), (h, t))


def test_activation_unit_input_is_the_four_part_concatenation():
    unit = layers.ActivationUnit(2, (3,), "prelu").eval()
    h = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    t = torch.tensor([[0.5, -2.0]])
    x = []
    unit.linears[0].register_forward_hook(lambda mod, inp, out: x.append(inp[0]))
    unit(h, t)
    expected = torch.tensor([[[1.0, 2.0, 0.5, -2.0, 0.5, 4.0, 0.5, -4.0],
                              [3.0, -1.0, 0.5, -2.0, 2.5, 1.0, 1.5, 2.0]]])
    assert torch.equal(x[0], expected)


# ----------------------------------------------------------------------------- interface

def test_interface_errors_are_clear():
    with pytest.raises(ValueError, match="seq_fields"):
        models.build("din", field_dims=DIMS, seq_fields=(9,))
    with pytest.raises(ValueError, match="activation"):
        models.build("din", field_dims=DIMS, activation="relu")
    m = models.build("din", field_dims=DIMS, embed_dim=2, seq_fields=SEQ, max_history=4)
    batch = make_batch(b=2, length=4)
    m(batch)
    with pytest.raises(ValueError, match="max_history"):
        m(pad(batch, 1))
    with pytest.raises(KeyError, match="history_mask"):
        m({"fields": batch["fields"], "history": batch["history"]})
    with pytest.raises(TypeError, match="bool"):
        m(dict(batch, history_mask=batch["history_mask"].long()))
    with pytest.raises(ValueError, match=r"\(B, L, 2\)"):
        m(dict(batch, history=batch["history"][..., :1].repeat(1, 1, 3)))


def test_single_field_history_of_shape_B_L():
    m = build(seq_fields=(1,))
    batch = make_batch(b=3, length=4)
    two_d = dict(batch, history=batch["history"][..., 0])
    three_d = dict(batch, history=batch["history"][..., :1])
    assert torch.allclose(m(two_d), m(three_d))
    m.eval()
    assert torch.allclose(m(two_d), m(three_d))


# ----------------------------------------------------------------------------- GAUC

def pairwise_auc(y, s):
    pos = [a for a, b in zip(s, y) if b == 1]
    neg = [a for a, b in zip(s, y) if b == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_gauc_by_hand_on_a_small_table():
    #        user: 1 1 1 1 | 2 2 2 | 3 3 (single class: skipped)
    y = np.array([1, 0, 1, 0, 1, 0, 0, 1, 1])
    s = np.array([.9, .8, .3, .1, .2, .4, .1, .5, .6])
    g = np.array([1, 1, 1, 1, 2, 2, 2, 3, 3])
    # user 1: pairs (.9>.8) (.9>.1) (.3<.8) (.3>.1) -> 3/4; user 2: .2 vs .4, .1 -> 1/2
    expected = (4 * 0.75 + 3 * 0.5) / (4 + 3)
    assert metrics.gauc(y, s, g) == pytest.approx(expected)
    assert metrics.gauc(y[:7], s[:7], g[:7]) == pytest.approx(expected)  # user 3 adds nothing


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 40), groups=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_gauc_is_the_impression_weighted_mean_of_per_user_auc(n, groups, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 4, n) / 4.0  # ties on purpose
    g = rng.integers(0, groups, n)
    num = den = 0.0
    for u in np.unique(g):
        yy, ss = y[g == u], s[g == u]
        if 0 < yy.sum() < len(yy):
            num += len(yy) * pairwise_auc(yy, ss)
            den += len(yy)
    if den == 0:
        with pytest.raises(ValueError):
            metrics.gauc(y, s, g)
    else:
        assert metrics.gauc(y, s, g) == pytest.approx(num / den)
