"""Product layers and PNN: explicit loops over pairs, the paper's two reductions, gradients."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctr_src import experiments, layers, models
from conftest import random_fields

DIMS = [3, 5, 2, 7, 4]
KERNELS = ("mat", "vec", "num")


# ----------------------------------------------------------------------------- references

def inner_loop(e: torch.Tensor) -> torch.Tensor:
    """``p_ij = sum_d e_id e_jd`` for i < j, written as loops."""
    b, f, d = e.shape
    out = torch.zeros(b, f * (f - 1) // 2, dtype=e.dtype)
    for r in range(b):
        k = 0
        for i in range(f):
            for j in range(i + 1, f):
                out[r, k] = sum(e[r, i, t] * e[r, j, t] for t in range(d))
                k += 1
    return out


def outer_loop(e: torch.Tensor, kernel: torch.Tensor, kind: str) -> torch.Tensor:
    """Each outer product ``e_i e_j^T`` built as a matrix, then reduced by the pair's kernel."""
    b, f, d = e.shape
    out = torch.zeros(b, f * (f - 1) // 2, dtype=e.dtype)
    for r in range(b):
        for k, (i, j) in enumerate(itertools.combinations(range(f), 2)):
            outer = torch.outer(e[r, i], e[r, j])  # (D, D), entry [s, t] = e_is e_jt
            if kind == "mat":
                w = kernel[k]
            elif kind == "vec":
                w = torch.diag(kernel[k])
            else:
                w = kernel[k, 0] * torch.eye(d, dtype=e.dtype)
            out[r, k] = sum(w[s, t] * outer[s, t] for s in range(d) for t in range(d))
    return out


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


# ----------------------------------------------------------------------------- layers vs loops

@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 4), f=st.integers(2, 6), d=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_inner_product_equals_loops(b, f, d, seed):
    e = torch.randn(b, f, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = layers.InnerProduct(f)(e)
    assert got.shape == (b, f * (f - 1) // 2)
    assert torch.allclose(got, inner_loop(e), rtol=1e-12, atol=1e-12)
    assert torch.allclose(layers.InnerProduct()(e), got)  # F taken from the input


@pytest.mark.parametrize("kind", KERNELS)
@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 3), f=st.integers(2, 5), d=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_outer_product_equals_loops(kind, b, f, d, seed):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(b, f, d, generator=g, dtype=torch.float64)
    layer = layers.OuterProduct(f, d, kernel=kind).double()
    with torch.no_grad():
        layer.kernel.copy_(torch.randn(layer.kernel.shape, generator=g, dtype=torch.float64))
    got = layer(e)
    assert got.shape == (b, f * (f - 1) // 2)
    assert torch.allclose(got, outer_loop(e, layer.kernel.detach(), kind), rtol=1e-12, atol=1e-12)


def gather_inner(e: torch.Tensor) -> torch.Tensor:
    """The previous implementation: gather both sides of every pair, multiply, sum over d."""
    rows, cols = layers.pair_indices(e.shape[1])
    return (e[:, rows] * e[:, cols]).sum(-1)


def gather_outer(e: torch.Tensor, kernel: torch.Tensor, kind: str) -> torch.Tensor:
    rows, cols = layers.pair_indices(e.shape[1])
    ei, ej = e[:, rows], e[:, cols]
    if kind == "mat":
        return torch.einsum("bpd,pde,bpe->bp", ei, kernel, ej)
    return (ei * ej * kernel).sum(-1)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 6), f=st.integers(2, 12), d=st.integers(1, 8), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_pair_layers_equal_the_gather_formula(b, f, d, seed, scale):
    """Gram matrix / selection matrices give the gathered products: to float64 rounding, and
    to float32 rounding in float32 (larger F than the loop tests, real-valued scales)."""
    g = torch.Generator().manual_seed(seed)
    e = scale * torch.randn(b, f, d, generator=g, dtype=torch.float64)
    want = gather_inner(e)
    tol = dict(rtol=1e-12, atol=1e-12 * scale**2)
    assert torch.allclose(layers.InnerProduct(f)(e), want, **tol)
    assert torch.allclose(layers.InnerProduct()(e), want, **tol)
    # float32: within a few units of rounding of the sum of |terms| (a bound on any summation order)
    e32 = e.float()
    bound = gather_inner(e.abs())
    assert bool(((layers.InnerProduct(f)(e32).double() - want).abs() <= 1e-5 * bound).all())
    for kind in KERNELS:
        layer = layers.OuterProduct(f, d, kernel=kind)
        with torch.no_grad():
            layer.kernel.copy_(torch.randn(layer.kernel.shape, generator=g))
        kernel = layer.kernel.detach().double()
        want = gather_outer(e, kernel, kind)
        bound = gather_outer(e.abs(), kernel.abs(), kind)
        assert bool(((layer(e32).double() - want).abs() <= 1e-5 * bound).all()), kind
        assert torch.allclose(layer.double()(e), want, **tol), kind


@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 3), f=st.integers(2, 5), d=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_pair_layers_gradcheck_random_shapes(b, f, d, seed):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(b, f, d, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layers.InnerProduct(f), (e,))
    for kind in KERNELS:
        layer = layers.OuterProduct(f, d, kernel=kind).double()
        kernel = torch.randn(layer.kernel.shape, generator=g, dtype=torch.float64, requires_grad=True)

        def fn(e, k, layer=layer):
            return torch.func.functional_call(layer, {"kernel": k}, (e,))

        assert torch.autograd.gradcheck(fn, (e, kernel)), kind


@pytest.mark.parametrize("kind", KERNELS)
def test_pair_layers_gradgradcheck(kind):
    """Second derivatives too (Gram matrix, selection matrices and einsum all support them)."""
    torch.manual_seed(12)
    e = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    layer = layers.OuterProduct(4, 3, kernel=kind).double()
    assert torch.autograd.gradgradcheck(layer, (e,))
    assert torch.autograd.gradgradcheck(layers.InnerProduct(4), (e,))


def test_mat_kernel_is_not_symmetrised():
    """``e_i^T W e_j`` differs from ``e_j^T W e_i`` for a non-symmetric ``W``: order matters."""
    torch.manual_seed(0)
    layer = layers.OuterProduct(2, 3, kernel="mat").double()
    e = torch.randn(1, 2, 3, dtype=torch.float64)
    w = layer.kernel.detach()[0]
    assert torch.allclose(layer(e)[0, 0], e[0, 0] @ w @ e[0, 1])
    assert not torch.allclose(layer(e)[0, 0], e[0, 1] @ w @ e[0, 0])


def test_pairs_are_row_major_i_less_than_j():
    f = 4
    e = torch.zeros(1, f, 1, dtype=torch.float64)
    e[0, :, 0] = torch.tensor([2.0, 3.0, 5.0, 7.0], dtype=torch.float64)
    want = [2 * 3, 2 * 5, 2 * 7, 3 * 5, 3 * 7, 5 * 7]
    assert layers.InnerProduct(f)(e)[0].tolist() == want


@pytest.mark.parametrize("kind, count", [("mat", lambda p, d: p * d * d), ("vec", lambda p, d: p * d),
                                         ("num", lambda p, d: p)])
@pytest.mark.parametrize("f, d", [(2, 1), (5, 3), (8, 16)])
def test_kernel_parameter_counts(kind, count, f, d):
    p = f * (f - 1) // 2
    layer = layers.OuterProduct(f, d, kernel=kind)
    assert sum(x.numel() for x in layer.parameters()) == count(p, d)
    assert sum(x.numel() for x in layers.InnerProduct(f).parameters()) == 0


@pytest.mark.parametrize("kind", KERNELS)
def test_identity_kernels_give_the_inner_product(kind):
    torch.manual_seed(1)
    f, d = 5, 4
    e = torch.randn(6, f, d, dtype=torch.float64)
    layer = layers.OuterProduct(f, d, kernel=kind).double()
    with torch.no_grad():
        if kind == "mat":
            layer.kernel.copy_(torch.eye(d, dtype=torch.float64).expand(layer.num_pairs, d, d))
        else:
            layer.kernel.fill_(1.0)
    assert torch.allclose(layer(e), layers.InnerProduct(f)(e), rtol=1e-12, atol=1e-12)


def test_kernels_nest_mat_contains_vec_contains_num():
    """A diagonal 'mat' kernel is a 'vec' kernel; a constant 'vec' kernel is a 'num' kernel."""
    torch.manual_seed(2)
    f, d = 4, 3
    e = torch.randn(5, f, d, dtype=torch.float64)
    mat, vec, num = (layers.OuterProduct(f, d, kernel=k).double() for k in KERNELS)
    with torch.no_grad():
        mat.kernel.copy_(torch.diag_embed(vec.kernel))
        num_w = num.kernel.detach().clone()
    assert torch.allclose(mat(e), vec(e), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        vec.kernel.copy_(num_w.expand(-1, d))
    assert torch.allclose(vec(e), num(e), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- the paper's reductions

@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 4), f=st.integers(2, 7), d=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_ipnn_rank_one_reduction(b, f, d, seed):
    """sum_i sum_j th_i th_j <f_i, f_j> = ||sum_i th_i f_i||^2 (all ordered pairs, i = j included);
    over i < j only: 0.5 * (||sum_i th_i f_i||^2 - sum_i th_i^2 ||f_i||^2)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(b, f, d, generator=g, dtype=torch.float64)
    theta = torch.randn(f, generator=g, dtype=torch.float64)
    full = torch.zeros(b, dtype=torch.float64)
    for i in range(f):
        for j in range(f):
            full += theta[i] * theta[j] * (e[:, i] * e[:, j]).sum(-1)
    weighted_sum = (theta[None, :, None] * e).sum(1)  # (B, D)
    reduced = weighted_sum.pow(2).sum(-1)
    assert torch.allclose(full, reduced, rtol=1e-10, atol=1e-10)

    layer = layers.InnerProduct(f)
    w_pairs = theta[layer.rows] * theta[layer.cols]  # (P,)
    upper = layer(e) @ w_pairs
    diag = (theta.pow(2) * e.pow(2).sum(-1)).sum(1)
    assert torch.allclose(upper, 0.5 * (reduced - diag), rtol=1e-10, atol=1e-10)


def test_ipnn_reduction_with_theta_one_is_fm():
    torch.manual_seed(3)
    e = torch.randn(7, 6, 5, dtype=torch.float64)
    assert torch.allclose(layers.InnerProduct(6)(e).sum(1, keepdim=True), layers.FMInteraction()(e),
                          rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 4), f=st.integers(2, 7), d=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_opnn_superposition(b, f, d, seed):
    """sum_i sum_j f_i f_j^T = f_S f_S^T with f_S = sum_i f_i; so a kernel W shared by all pairs
    sees sum_{i,j} f_i^T W f_j = f_S^T W f_S, and over i < j with a symmetric W
    0.5 * (f_S^T W f_S - sum_i f_i^T W f_i)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(b, f, d, generator=g, dtype=torch.float64)
    outer_sum = torch.zeros(b, d, d, dtype=torch.float64)
    for i in range(f):
        for j in range(f):
            outer_sum += e[:, i, :, None] * e[:, j, None, :]
    f_sum = e.sum(1)
    assert torch.allclose(outer_sum, f_sum[:, :, None] * f_sum[:, None, :], rtol=1e-10, atol=1e-10)

    w = torch.randn(d, d, generator=g, dtype=torch.float64)
    quad = lambda x, y, m: torch.einsum("bd,de,be->b", x, m, y)
    full = sum(quad(e[:, i], e[:, j], w) for i in range(f) for j in range(f))
    assert torch.allclose(full, quad(f_sum, f_sum, w), rtol=1e-10, atol=1e-10)

    sym = 0.5 * (w + w.T)
    layer = layers.OuterProduct(f, d, kernel="mat").double()
    with torch.no_grad():
        layer.kernel.copy_(sym.expand(layer.num_pairs, d, d))
    diag = sum(quad(e[:, i], e[:, i], sym) for i in range(f))
    assert torch.allclose(layer(e).sum(1), 0.5 * (quad(f_sum, f_sum, sym) - diag), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- gradients

def test_inner_product_gradcheck():
    e = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layers.InnerProduct(4), (e,))


@pytest.mark.parametrize("kind", KERNELS)
def test_outer_product_gradcheck(kind):
    torch.manual_seed(4)
    layer = layers.OuterProduct(4, 3, kernel=kind).double()
    e = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    kernel = layer.kernel.detach().clone().requires_grad_(True)

    def f(e, k):
        return torch.func.functional_call(layer, {"kernel": k}, (e,))

    assert torch.autograd.gradcheck(f, (e, kernel))


@pytest.mark.parametrize("product", ["inner", "outer", "both"])
def test_pnn_gradcheck_through_the_product_layer(product):
    """Gradients of the logits w.r.t. the embedding table, the kernel and the MLP, float64."""
    torch.manual_seed(5)
    model = models.PNN(DIMS, embed_dim=3, mlp_dims=(4,), product=product, kernel="vec").double()
    batch = {"fields": random_fields(DIMS, 3, torch.Generator().manual_seed(0))}
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def f(*ps):
        return torch.func.functional_call(model, dict(zip(names, ps)), (batch,))

    assert torch.autograd.gradcheck(f, params)


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize("product", ["inner", "outer", "both"])
@pytest.mark.parametrize("kind", KERNELS)
def test_pnn_signal_layout_is_z_then_products(product, kind):
    torch.manual_seed(6)
    d = 4
    f, p = len(DIMS), len(DIMS) * (len(DIMS) - 1) // 2
    model = models.PNN(DIMS, embed_dim=d, mlp_dims=(8, 4), product=product, kernel=kind).double().eval()
    randomise(model)
    fields = random_fields(DIMS, 6)
    batch = {"fields": fields}
    table = model.embedding.embedding.weight
    offsets = torch.tensor([0] + DIMS[:-1]).cumsum(0)
    e = table[fields + offsets]  # (B, F, D) straight from the table
    blocks = [e.reshape(6, f * d)]
    if product in ("inner", "both"):
        blocks.append(inner_loop(e))
    if product in ("outer", "both"):
        blocks.append(outer_loop(e, model.outer.kernel.detach(), kind))
    want = torch.cat(blocks, dim=1)
    got = model.signals(batch)
    width = f * d + p * (2 if product == "both" else 1)
    assert got.shape == (6, width) and model.mlp.input_dim == width
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)
    # the slices name the blocks
    assert torch.equal(got[:, model.slices["z"]], blocks[0])
    assert list(model.slices) == ["z"] + [k for k in ("inner", "outer") if k in product or product == "both"]
    for name in ("inner", "outer"):
        assert (name in model.slices) == (getattr(model, name) is not None)
    # the first hidden layer is W_z z + W_p p + b, i.e. one linear layer on [z, p]
    first = model.mlp.layers[0]
    wz, wp = first.weight[:, : f * d], first.weight[:, f * d:]
    assert torch.allclose(first(got), blocks[0] @ wz.T + want[:, f * d:] @ wp.T + first.bias)
    logits = model(batch)
    assert logits.shape == (6,)
    assert torch.allclose(logits, model.mlp(want).squeeze(-1))


def test_pnn_values_scale_products_by_xi_xj():
    torch.manual_seed(7)
    model = models.PNN(DIMS, embed_dim=3, product="both", kernel="mat").double()
    fields = random_fields(DIMS, 4)
    values = torch.rand(4, len(DIMS), dtype=torch.float64) + 0.5
    plain = model.signals({"fields": fields})
    scaled = model.signals({"fields": fields, "values": values})
    r, c = model.inner.rows, model.inner.cols
    xx = values[:, r] * values[:, c]
    assert torch.allclose(scaled[:, model.slices["inner"]], plain[:, model.slices["inner"]] * xx)
    assert torch.allclose(scaled[:, model.slices["outer"]], plain[:, model.slices["outer"]] * xx)


def test_pnn_parameter_count():
    f, d, p, h = len(DIMS), 4, 10, (8, 4)
    mlp = lambda width: width * h[0] + h[0] + h[0] * h[1] + h[1] + h[1] + 1
    emb = sum(DIMS) * d
    count = lambda m: sum(x.numel() for x in m.parameters())
    assert count(models.PNN(DIMS, d, h, product="inner")) == emb + mlp(f * d + p)
    assert count(models.PNN(DIMS, d, h, product="outer", kernel="mat")) == emb + p * d * d + mlp(f * d + p)
    assert count(models.PNN(DIMS, d, h, product="outer", kernel="num")) == emb + p + mlp(f * d + p)
    assert count(models.PNN(DIMS, d, h, product="both", kernel="vec")) == emb + p * d + mlp(f * d + 2 * p)


def test_registry_and_book_settings():
    for name, product in [("ipnn", "inner"), ("opnn", "outer"), ("pnn", "both")]:
        m = models.build(name, field_dims=DIMS, **experiments.SETTINGS[name]["model"])
        assert isinstance(m, models.PNN) and m.product == product
        assert (m.inner is not None) == (product != "outer")
        assert (m.outer is not None) == (product != "inner")
        assert m(({"fields": random_fields(DIMS, 2)})).shape == (2,)


def test_pnn_state_dict_round_trip():
    torch.manual_seed(8)
    a = models.PNN(DIMS, 4, product="both", kernel="vec").eval()
    b = models.PNN(DIMS, 4, product="both", kernel="vec").eval()
    b.load_state_dict(a.state_dict())
    x = {"fields": random_fields(DIMS, 5)}
    assert torch.equal(a(x), b(x))
    assert not any(k.endswith(("rows", "cols")) for k in a.state_dict())  # pairs are rebuilt, not stored


def test_ipnn_learns_a_pure_interaction():
    """Label = [field 0 == field 1 index parity]: no single field predicts it, a product can."""
    torch.manual_seed(9)
    dims = [6, 6]
    x = torch.stack([torch.randint(0, 6, (512,)), torch.randint(0, 6, (512,))], 1)
    y = ((x[:, 0] % 2) == (x[:, 1] % 2)).float()
    model = models.PNN(dims, embed_dim=4, mlp_dims=(8,), product="inner")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    first = loss_fn(model({"fields": x}), y).item()
    for _ in range(150):
        opt.zero_grad()
        loss = loss_fn(model({"fields": x}), y)
        loss.backward()
        opt.step()
    assert first > 0.6 and loss.item() < 0.05


# ----------------------------------------------------------------------------- bad input

def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="unknown product 'dot'.*inner"):
        models.PNN(DIMS, product="dot")
    with pytest.raises(ValueError, match="unknown kernel 'matrix'.*mat"):
        models.PNN(DIMS, product="outer", kernel="matrix")
    with pytest.raises(ValueError, match="at least 2 fields"):
        models.PNN([5], product="inner")
    with pytest.raises(ValueError, match="embed_dim"):
        layers.OuterProduct(3, 0)
    with pytest.raises(TypeError, match="num_fields"):
        layers.OuterProduct(None, 4)
    outer = layers.OuterProduct(3, 4)
    with pytest.raises(ValueError, match="embed_dim=4.*5"):
        outer(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="expected 3 fields, got 4"):
        outer(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, F, D\)"):
        layers.InnerProduct(3)(torch.randn(3, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pnn_on_gpu_matches_cpu():
    torch.manual_seed(10)
    model = models.PNN(DIMS, 4, product="both", kernel="mat").eval()
    x = {"fields": random_fields(DIMS, 16)}
    cpu = model(x)
    gpu = model.cuda()({"fields": x["fields"].cuda()}).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-5)


@pytest.mark.parametrize("product", ["inner", "outer", "both"])
def test_pnn_gradients_are_repeatable_on_cpu(product):
    """Same weights, same batch -> bit-identical gradients (nbval re-runs training and compares).
    On CUDA the same holds (tests/test_gpu.py); CI checks the reason -- no accumulating scatter in
    the backward -- structurally in tests/test_determinism.py."""
    dims = [50, 40, 7, 2, 21, 10, 9, 18]
    torch.manual_seed(11)
    model = models.PNN(dims, embed_dim=16, mlp_dims=(64, 32), product=product, kernel="mat")
    batch = {"fields": random_fields(dims, 1024, torch.Generator().manual_seed(1))}
    label = torch.rand(1024, generator=torch.Generator().manual_seed(2)).round()
    grads = []
    for _ in range(6):
        model.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(batch), label).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for g in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(g, grads[0]))
