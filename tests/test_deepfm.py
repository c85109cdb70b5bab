"""Wide & Deep, Embedding + MLP and DeepFM: decompositions, shared embeddings, crosses."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import random_fields
from ctr_src import experiments, models
from ctr_src.data.ctr import CROSS_SEPARATOR, UNKNOWN, add_crosses

DIMS = [4, 6, 3, 5]


def randomise(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Non-zero values everywhere (FeaturesLinear starts at 0, which would hide bugs)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)
    return model


def naive_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """a^(l+1) = ReLU(W a^(l) + b) for the hidden layers, a linear output; no dropout."""
    linears = [m for m in mlp.layers if isinstance(m, nn.Linear)]
    a = x
    for lin in linears[:-1]:
        a = torch.relu(a @ lin.weight.T + lin.bias)
    return (a @ linears[-1].weight.T + linears[-1].bias).squeeze(-1)


def naive_deepfm(model: models.DeepFM, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each DeepFM term by loops over rows, fields and pairs, straight from the paper."""
    w = model.linear.embedding.weight[:, 0]
    V = model.embedding.embedding.weight
    off_w, off_v = model.linear.offsets, model.embedding.offsets
    first, pairs, deep = [], [], []
    for row in x:
        first.append(model.linear.bias[0] + sum(w[off_w[i] + row[i]] for i in range(len(row))))
        vs = [V[off_v[i] + row[i]] for i in range(len(row))]
        pairs.append(sum(torch.dot(vs[i], vs[j]) for i, j in itertools.combinations(range(len(row)), 2)))
        deep.append(naive_mlp(model.mlp, torch.cat(vs).unsqueeze(0))[0])
    return {"first_order": torch.stack(first), "fm": torch.stack(pairs), "mlp": torch.stack(deep)}


# ----------------------------------------------------------------------------- DeepFM

def test_deepfm_logit_is_first_order_plus_fm_plus_mlp():
    torch.manual_seed(0)
    model = randomise(models.DeepFM(DIMS, embed_dim=5, mlp_dims=(7, 3), dropout=0.3)).double().eval()
    x = random_fields(DIMS, 16)
    comps = model.components({"fields": x})
    ref = naive_deepfm(model, x)
    for key in ("first_order", "fm", "mlp"):
        assert comps[key].shape == (16,)
        assert torch.allclose(comps[key], ref[key], atol=1e-10), key
    logit = model({"fields": x})
    assert torch.allclose(logit, ref["first_order"] + ref["fm"] + ref["mlp"], atol=1e-10)
    # and every term matters: none is identically zero after randomisation
    assert all(float(ref[k].detach().abs().max()) > 1e-3 for k in ref)


@settings(max_examples=25, deadline=None)
@given(dims=st.lists(st.integers(1, 6), min_size=2, max_size=6), d=st.integers(1, 6),
       batch=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_deepfm_decomposition_property(dims, d, batch, seed):
    g = torch.Generator().manual_seed(seed)
    model = randomise(models.DeepFM(dims, embed_dim=d, mlp_dims=(4,)), g).double().eval()
    x = random_fields(dims, batch, generator=g)
    ref = naive_deepfm(model, x)
    assert torch.allclose(model({"fields": x}), ref["first_order"] + ref["fm"] + ref["mlp"], atol=1e-9)


def test_deepfm_with_zeroed_output_layer_equals_fm():
    torch.manual_seed(1)
    deepfm = randomise(models.DeepFM(DIMS, embed_dim=4, mlp_dims=(8, 4))).double().eval()
    with torch.no_grad():
        deepfm.mlp.output_layer.weight.zero_()
        deepfm.mlp.output_layer.bias.zero_()
    fm = models.FM(DIMS, embed_dim=4).double()
    with torch.no_grad():
        fm.linear.embedding.weight.copy_(deepfm.linear.embedding.weight)
        fm.linear.bias.copy_(deepfm.linear.bias)
        fm.embedding.embedding.weight.copy_(deepfm.embedding.embedding.weight)
    x = random_fields(DIMS, 32)
    assert torch.allclose(deepfm({"fields": x}), fm({"fields": x}), atol=1e-12)
    # without zeroing the output layer they differ (the test above can fail)
    randomise(deepfm.mlp)
    assert not torch.allclose(deepfm({"fields": x}), fm({"fields": x}), atol=1e-3)


def test_deepfm_has_one_embedding_table_shared_by_both_parts():
    model = models.DeepFM(DIMS, embed_dim=4)
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    # one for the first-order weights (width 1), one for the shared vectors (width D)
    assert sorted(t.embedding_dim for t in tables) == [1, 4]
    mlp_only = models.EmbeddingMLP(DIMS, embed_dim=4)
    n_deepfm = sum(p.numel() for p in model.parameters())
    n_fm = sum(p.numel() for p in models.FM(DIMS, embed_dim=4).parameters())
    n_mlp_head = sum(p.numel() for p in mlp_only.mlp.parameters())
    assert n_deepfm == n_fm + n_mlp_head  # no second copy of the embeddings


def test_shared_embedding_gets_gradient_from_both_components():
    torch.manual_seed(2)
    model = randomise(models.DeepFM(DIMS, embed_dim=3, mlp_dims=(5,))).double().eval()
    x = random_fields(DIMS, 6)
    table = model.embedding.embedding.weight

    def grad_of(part):
        model.zero_grad(set_to_none=True)
        comps = model.components({"fields": x})
        out = sum(comps[k] for k in part).sum()
        out.backward()
        return table.grad.clone() if table.grad is not None else torch.zeros_like(table)

    g_fm, g_mlp, g_all = grad_of(["fm"]), grad_of(["mlp"]), grad_of(["first_order", "fm", "mlp"])
    used = torch.zeros(table.shape[0], dtype=torch.bool)
    used[(x + model.embedding.offsets).flatten()] = True
    # both components send gradient into every row the batch used, and only into those rows
    assert bool((g_fm[used].abs().sum(1) > 0).all()) and bool((g_mlp[used].abs().sum(1) > 0).all())
    assert float(g_fm[~used].abs().max()) == 0.0 and float(g_mlp[~used].abs().max()) == 0.0
    # one backward pass through the full logit: the two contributions add up
    assert torch.allclose(g_all, g_fm + g_mlp, atol=1e-12)
    assert grad_of(["first_order"]).abs().max() == 0  # the first-order term never touches V


def test_deepfm_with_separate_tables_is_fm_plus_embedding_mlp():
    """The ablation shared_embedding=False: y = y_FM(own table) + MLP(another table)."""
    torch.manual_seed(3)
    model = randomise(models.DeepFM(DIMS, embed_dim=4, mlp_dims=(6,), shared_embedding=False))
    model = model.double().eval()
    fm = models.FM(DIMS, embed_dim=4).double()
    mlp = models.EmbeddingMLP(DIMS, embed_dim=4, mlp_dims=(6,)).double().eval()
    fm.linear.load_state_dict(model.linear.state_dict())
    fm.embedding.load_state_dict(model.fm_embedding.state_dict())
    mlp.embedding.load_state_dict(model.embedding.state_dict())
    mlp.mlp.load_state_dict(model.mlp.state_dict())
    x = random_fields(DIMS, 32)
    with torch.no_grad():
        assert torch.allclose(model({"fields": x}), fm({"fields": x}) + mlp({"fields": x}), atol=1e-12)
    n = lambda m: sum(p.numel() for p in m.parameters())
    shared = models.DeepFM(DIMS, embed_dim=4, mlp_dims=(6,))
    assert n(model) == n(shared) + sum(DIMS) * 4  # one more n x D table
    # the FM's gradient reaches only its own table
    model.zero_grad(set_to_none=True)
    model.components({"fields": x})["fm"].sum().backward()
    assert model.embedding.embedding.weight.grad is None
    assert float(model.fm_embedding.embedding.weight.grad.abs().sum()) > 0


def test_deepfm_fm_gradient_matches_formula():
    """d y_FM / d v_i = sum_{j != i} v_j (for one row, each feature once)."""
    torch.manual_seed(3)
    model = randomise(models.DeepFM(DIMS, embed_dim=3)).double()
    x = random_fields(DIMS, 1)
    model.components({"fields": x})["fm"].sum().backward()
    V = model.embedding.embedding.weight
    rows = (x[0] + model.embedding.offsets).tolist()
    for i, r in enumerate(rows):
        expected = sum(V[rows[j]] for j in range(len(rows)) if j != i)
        assert torch.allclose(V.grad[r], expected.detach(), atol=1e-12)


def test_deepfm_gradcheck():
    torch.manual_seed(4)
    model = randomise(models.DeepFM([3, 4, 2], embed_dim=2, mlp_dims=(3,))).double().eval()
    x = random_fields([3, 4, 2], 4)
    e0 = model.embedding(x).detach().requires_grad_(True)

    def head(e):  # the two components, as functions of the shared embeddings
        return model.fm(e).squeeze(-1) + model.mlp(e.flatten(1)).squeeze(-1)

    assert torch.autograd.gradcheck(head, (e0,))


def test_embedding_mlp_is_deepfms_deep_component():
    torch.manual_seed(5)
    deepfm = randomise(models.DeepFM(DIMS, embed_dim=4, mlp_dims=(6, 3))).eval()
    emlp = models.EmbeddingMLP(DIMS, embed_dim=4, mlp_dims=(6, 3)).eval()
    missing = emlp.load_state_dict(deepfm.state_dict(), strict=False)
    assert not missing.missing_keys
    x = random_fields(DIMS, 10)
    assert torch.allclose(emlp({"fields": x}), deepfm.components({"fields": x})["mlp"], atol=1e-6)
    assert torch.allclose(emlp({"fields": x}), naive_mlp(emlp.mlp, emlp.embedding(x).flatten(1)), atol=1e-6)


# ----------------------------------------------------------------------------- Wide & Deep

def test_wide_deep_without_crosses_is_lr_plus_embedding_mlp():
    torch.manual_seed(6)
    wd = randomise(models.WideAndDeep(DIMS, embed_dim=4, mlp_dims=(5,))).double().eval()
    lr = models.LR(DIMS).double()
    lr.load_state_dict({k: v for k, v in wd.state_dict().items() if k.startswith("linear.")})
    emlp = models.EmbeddingMLP(DIMS, embed_dim=4, mlp_dims=(5,)).double().eval()
    emlp.load_state_dict(wd.state_dict(), strict=False)
    x = random_fields(DIMS, 12)
    b = {"fields": x, "cross": torch.zeros(12, 1, dtype=torch.long)}  # ignored without cross_dims
    assert torch.allclose(wd.wide(b), lr(b), atol=1e-12)
    assert torch.allclose(wd.deep(b), emlp(b), atol=1e-12)
    assert torch.allclose(wd(b), lr(b) + emlp(b), atol=1e-12)
    assert wd.cross is None


def test_wide_deep_cross_weights_enter_the_wide_part_only():
    torch.manual_seed(7)
    cross_dims = [5, 9]
    wd = randomise(models.WideAndDeep(DIMS, embed_dim=3, mlp_dims=(4,), cross_dims=cross_dims)).double().eval()
    with torch.no_grad():
        wd.cross.bias.zero_()  # the cross table's bias is frozen at 0 in a fresh model
    x = random_fields(DIMS, 8)
    c = random_fields(cross_dims, 8)
    b = {"fields": x, "cross": c}
    w = wd.cross.embedding.weight[:, 0]
    expected = torch.stack([wd.linear(x)[r, 0] + w[c[r, 0]] + w[cross_dims[0] + c[r, 1]] for r in range(8)])
    assert torch.allclose(wd.wide(b), expected, atol=1e-12)
    assert torch.allclose(wd(b), expected + wd.deep(b), atol=1e-12)
    # changing a cross changes the wide part only
    c2 = c.clone()
    c2[:, 1] = (c2[:, 1] + 1) % cross_dims[1]
    assert torch.allclose(wd.deep({"fields": x, "cross": c2}), wd.deep(b))
    assert not torch.allclose(wd.wide({"fields": x, "cross": c2}), wd.wide(b))


def test_wide_deep_cross_bias_is_frozen_and_errors_are_clear():
    wd = models.WideAndDeep(DIMS, embed_dim=3, cross_dims=[5, 9])
    assert not wd.cross.bias.requires_grad
    x = random_fields(DIMS, 4)
    with pytest.raises(KeyError, match="add_crosses"):
        wd({"fields": x})
    with pytest.raises(ValueError, match="cross has 1 fields"):
        wd({"fields": x, "cross": torch.zeros(4, 1, dtype=torch.long)})
    with pytest.raises(IndexError, match="cross: column 1"):
        wd({"fields": x, "cross": torch.tensor([[0, 9]] * 4)})


# ----------------------------------------------------------------------------- add_crosses

@pytest.fixture(scope="module")
def crossed(ctr):
    return add_crosses(ctr)


def test_add_crosses_matches_the_raw_table(ctr, crossed):
    from collections import Counter
    data, dims = crossed
    assert data.cross_names == [f"gender{CROSS_SEPARATOR}genre", f"age{CROSS_SEPARATOR}genre"]
    assert dims == data.cross_dims == [len(data.cross_encoder.vocab[n]) for n in data.cross_names]
    table = ctr.table
    min_count = ctr.encoder.min_count
    known = {}
    for split in ("train", "valid", "test"):
        part = getattr(data, split)
        assert part["cross"].shape == (len(part), 2) and part["cross"].dtype == torch.long
        assert torch.equal(part["fields"], getattr(ctr, split)["fields"])  # the rest is untouched
        rows = part["row"].numpy()
        for c, (a, b) in enumerate([("gender", "genre"), ("age", "genre")]):
            name = data.cross_names[c]
            raw = [f"{u}{CROSS_SEPARATOR}{v}" for u, v in zip(table[a].to_numpy()[rows], table[b].to_numpy()[rows])]
            decoded = data.cross_encoder.decode(name, part["cross"][:, c].numpy())
            if split == "train":  # the vocabulary: training combinations seen min_count times
                counts = Counter(raw)
                known[name] = {v for v, k in counts.items() if k >= min_count}
                assert len(known[name]) < len(counts)  # some are too rare
            # a combination not in it (too rare, or never seen in training) is <unk>
            assert all(d == r if r in known[name] else d == UNKNOWN for d, r in zip(decoded, raw))
    for name in data.cross_names:  # the vocabulary comes from the training rows only
        assert set(data.cross_encoder.vocab[name][1:]) == known[name]
    assert "cross" not in ctr.train  # the original data is not modified


def test_add_crosses_example_row(ctr, crossed):
    data, _ = crossed
    t = ctr.table
    row = int(data.test["row"][0])
    expected = f"{t['gender'][row]}{CROSS_SEPARATOR}{t['genre'][row]}"
    assert data.cross_encoder.decode(data.cross_names[0], data.test["cross"][0, 0]) == expected
    assert "F" + CROSS_SEPARATOR + "Drama" in data.cross_encoder.vocab[data.cross_names[0]]


def test_add_crosses_unknown_combination_maps_to_zero(ctr):
    """Rows whose combination is absent from training get index 0."""
    from ctr_src.data.ctr import CTRData
    train = ctr.train.subset(ctr.train["fields"][:, ctr.field_names.index("gender")]
                             == ctr.encoder.index("gender", "M"))  # men only
    men_only = CTRData(ctr.table, ctr.encoder, ctr.fields, train, ctr.valid, ctr.test, ctr.split)
    data, dims = add_crosses(men_only, pairs=[("gender", "genre")])
    women = data.test["fields"][:, ctr.field_names.index("gender")] == ctr.encoder.index("gender", "F")
    assert bool(women.any())
    assert bool((data.test["cross"][women, 0] == 0).all())
    assert bool((data.test["cross"][~women, 0] > 0).all())
    assert dims[0] == 1 + len(set(data.cross_encoder.decode("gender×genre", data.train["cross"][:, 0].numpy())))


@pytest.mark.parametrize("pairs, msg", [
    ([], "non-empty"),
    ("gender", "non-empty"),
    ([("gender",)], "pair of two"),
    ([("gender", "colour")], "colour"),
    ([("genre", "genre")], "itself"),
    ([("gender", "genre"), ("gender", "genre")], "twice"),
])
def test_add_crosses_bad_pairs(ctr, pairs, msg):
    with pytest.raises(ValueError, match=msg):
        add_crosses(ctr, pairs=pairs)


def test_crossed_data_to_device_keeps_crosses(crossed):
    data, dims = crossed
    moved = data.to("cpu")
    assert moved.cross_dims == dims and torch.equal(moved.valid["cross"], data.valid["cross"])


# ----------------------------------------------------------------------------- registry and settings

@pytest.mark.parametrize("name, cls", [("wide_deep", models.WideAndDeep), ("embedding_mlp", models.EmbeddingMLP),
                                       ("deepfm", models.DeepFM), ("Wide&Deep", models.WideAndDeep)])
def test_registered_by_name_with_book_settings(name, cls):
    key = name.lower().replace("&", "_")
    model = models.build(name, field_dims=DIMS, **experiments.SETTINGS[key]["model"])
    assert type(model) is cls
    assert model({"fields": random_fields(DIMS, 3)}).shape == (3,)


@pytest.mark.slow
def test_wide_deep_with_crosses_trains_through_experiments(crossed):
    data, dims = crossed
    small = type(data)(data.table, data.encoder, data.fields, data.train.subset(slice(0, 4000)),
                       data.valid.subset(slice(0, 2000)), data.test.subset(slice(0, 2000)), data.split,
                       data.cross_encoder)
    r = experiments.run("wide_deep", small, model_kwargs=dict(cross_dims=dims),
                        fit_kwargs=dict(epochs=2), device="cpu")
    assert r.model.cross is not None
    assert r.parameters == experiments.run("wide_deep", small, fit_kwargs=dict(epochs=1),
                                           device="cpu").parameters + sum(dims)
    assert float(r.model.cross.embedding.weight.detach().abs().sum()) > 0  # the cross weights learned
    assert 0.5 < r.test["auc"] <= 1 and np.isfinite(r.test["logloss"])
