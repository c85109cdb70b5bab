"""Shared fixtures. The MovieLens cache is fetched by `make test` before pytest runs."""

from __future__ import annotations

import pytest
import torch

from ctr_src.data import movielens


def pytest_collection_finish(session):
    """Start the network-bound requirement resolutions (tests/test_requirements.py) as soon
    as they are collected, so they run in the background while the chapters run."""
    for item in session.items:
        if item.name.startswith("test_requirements_resolve"):
            try:
                item.module.start_resolutions()
            except RuntimeError:
                pass  # the tests themselves skip and say why
            return


@pytest.fixture(scope="session")
def ml():
    try:
        return movielens.load_movielens()
    except movielens.DataError as exc:  # pragma: no cover - only without `make data`
        pytest.fail(f"{exc}")


@pytest.fixture(scope="session")
def ctr():
    from ctr_src.data import load_ctr
    return load_ctr()


@pytest.fixture(autouse=True)
def _double_default():
    """Tests run in float32 unless they ask for float64 explicitly."""
    torch.set_default_dtype(torch.float32)
    yield


def random_fields(field_dims, batch, generator=None):
    """A ``(B, F)`` long tensor of valid per-field indices."""
    cols = [torch.randint(0, d, (batch,), generator=generator) for d in field_dims]
    return torch.stack(cols, dim=1)
