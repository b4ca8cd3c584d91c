"""Fixtures of the Triton kernel tests.

Without a CUDA GPU the kernels run on CPU tensors through Triton's
interpreter, which must be switched on (TRITON_INTERPRET=1) before the
kernels are defined, that is before `fastgen.kernels` is first imported:
this file does it when pytest collects this directory. With a GPU the
same tests run the compiled kernels on CUDA tensors, and the CUDA-only tests
(torch.compile with Inductor, CUDA graphs) run too.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastgen  # noqa: E402

try:
    import triton  # noqa: F401

    TRITON_MISSING = None
except ImportError as error:
    TRITON_MISSING = f"needs Triton ({error})"

if TRITON_MISSING is None:
    from fastgen import kernels  # noqa: E402  (registers the "triton" backend)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _unusable_reason() -> str | None:
    if TRITON_MISSING is not None:
        return TRITON_MISSING
    if DEVICE.type == "cpu" and not kernels._tiles.INTERPRET:
        return (
            "needs Triton's interpreter: fastgen.kernels was imported before TRITON_INTERPRET=1 "
            "could be set (run the kernel tests with TRITON_INTERPRET=1)"
        )
    return None


UNUSABLE = _unusable_reason()


def pytest_collection_modifyitems(config, items):
    """Every test here needs usable Triton kernels on DEVICE: skip them all, with the reason, if not."""
    if UNUSABLE is None:
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=UNUSABLE))


@pytest.fixture
def device() -> torch.device:
    """The device the kernels run on here: CUDA (compiled) or the CPU (interpreted)."""
    return DEVICE


@pytest.fixture(autouse=True)
def triton_backend():
    """Every test runs under the "triton" backend and leaves the previous one in place."""
    with fastgen.use_backend("triton"):
        yield
