"""Embeddings, the linear term and the MLP: the offsets trick and one-hot equivalence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctr_src import layers
from conftest import random_fields

DIMS = [3, 5, 2, 7]


def one_hot(fields, dims):
    return torch.cat([nn.functional.one_hot(fields[:, j], d) for j, d in enumerate(dims)], dim=1).float()


def test_features_linear_equals_linear_layer_on_one_hot():
    torch.manual_seed(0)
    lin = layers.FeaturesLinear(DIMS)
    nn.init.normal_(lin.embedding.weight)
    nn.init.normal_(lin.bias)
    dense = nn.Linear(sum(DIMS), 1)
    with torch.no_grad():
        dense.weight.copy_(lin.embedding.weight.T)
        dense.bias.copy_(lin.bias)
    x = random_fields(DIMS, 64)
    assert torch.allclose(lin(x), dense(one_hot(x, DIMS)), atol=1e-6)


def test_features_embedding_offsets_and_values():
    torch.manual_seed(0)
    emb = layers.FeaturesEmbedding(DIMS, 4)
    assert emb.offsets.tolist() == [0, 3, 8, 10]
    assert emb.embedding.weight.shape == (sum(DIMS), 4)
    x = random_fields(DIMS, 8)
    e = emb(x)
    assert e.shape == (8, 4, 4)
    for j in range(len(DIMS)):
        assert torch.equal(e[:, j], emb.embedding.weight[x[:, j] + emb.offsets[j]])
        assert torch.equal(emb.field_rows(j, x[:, j]), e[:, j])
    values = torch.rand(8, 4)
    assert torch.allclose(emb(x, values), e * values.unsqueeze(-1))
    assert "offsets" in emb.state_dict()


@pytest.mark.parametrize("bad, err, msg", [
    (torch.zeros(4, 4), TypeError, "integer"),
    (torch.zeros(4, dtype=torch.long), ValueError, r"\(B, F\)"),
    (torch.zeros(4, 3, dtype=torch.long), ValueError, "4"),
    (torch.tensor([[0, 0, 0, 7]]), IndexError, "column 3"),
    (torch.tensor([[-1, 0, 0, 0]]), IndexError, "column 0"),
])
def test_bad_fields_give_clear_errors(bad, err, msg):
    emb = layers.FeaturesEmbedding(DIMS, 4)
    with pytest.raises(err, match=msg):
        emb(bad)


def test_mlp_shapes_and_errors():
    mlp = layers.MLP(12, (8, 4), dropout=0.1, batchnorm=True)
    assert mlp(torch.randn(5, 12)).shape == (5, 1)
    assert layers.MLP(12, (8,), output_dim=None)(torch.randn(2, 12)).shape == (2, 8)
    with pytest.raises(ValueError, match="12"):
        mlp(torch.randn(5, 11))
    with pytest.raises(ValueError, match="activation"):
        layers.MLP(3, (2,), activation="swishy")


def test_pair_indices_row_major():
    rows, cols = layers.pair_indices(4)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("f", [2, 3, 8])
def test_pair_selectors_are_exact_gathers(dtype, f):
    """``S_rows @ e`` is ``e[:, rows]`` bit for bit: one 1 per row, the rest zeros."""
    e = torch.randn(5, f, 3, dtype=dtype)
    rows, cols = layers.pair_indices(f)
    sel_rows, sel_cols = layers.pair_selectors(f, dtype)
    assert sel_rows.shape == sel_cols.shape == (f * (f - 1) // 2, f)
    assert torch.equal(sel_rows @ e, e[:, rows]) and torch.equal(sel_cols @ e, e[:, cols])
    assert torch.equal(sel_rows.sum(1), torch.ones(len(rows), dtype=dtype))
    with pytest.raises(ValueError, match="at least 2 fields"):
        layers.pair_selectors(1)
