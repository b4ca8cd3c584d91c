"""Fixtures of the fastgen.dgm tests: small distributions over the digits' sizes, one CPU thread."""

from __future__ import annotations

import pytest
import torch

from dgm_parts import Generator, Inference
from fastgen import dgm
from fastgen.data import digits


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


@pytest.fixture
def vae_parts():
    """(q, p, prior, x): the seed's three distributions on 12-dim soft data, batch 5."""
    torch.manual_seed(0)
    q, p = Inference(), Generator()
    prior = dgm.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[3], name="p_{prior}")
    return q, p, prior, torch.rand(5, 12)


@pytest.fixture(scope="session")
def digit_splits():
    """(train, test) TensorDatasets of the 8x8 digits (fastgen.data.digits' fixed split)."""
    return digits()
