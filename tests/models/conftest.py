"""Fixtures of the model tests: the digits data, one CPU thread."""

from __future__ import annotations

import pytest
import torch

from fastgen.data import digits


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


@pytest.fixture(scope="session")
def digit_splits():
    """(train, test) TensorDatasets of the 8x8 digits."""
    return digits()


@pytest.fixture
def digit_batches(digit_splits):
    """A function giving `count` shuffled (images, labels) batches of `size` from the train split."""
    images, labels = digit_splits[0].tensors

    def batches(count: int, size: int = 64, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        out = []
        while len(out) < count:
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(order) - size + 1, size):
                index = order[start:start + size]
                out.append((images[index], labels[index]))
        return out[:count]

    return batches
