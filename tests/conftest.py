"""Shared fixtures of the fastgen test suite.

`device` runs a test on the CPU and, where there is a GPU, on CUDA; `backend`
runs it under the default backend ("auto") and, where it is built and the
device is CUDA, under "triton". Every test leaves the backend as it found it.
"""

from __future__ import annotations

import pytest
import torch

import fastgen


def _cuda_param():
    return pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ],
    )


@pytest.fixture(params=["cpu", _cuda_param()])
def device(request) -> torch.device:
    """The device an op test runs on: "cpu" always, "cuda" where a GPU is present."""
    return torch.device(request.param)


@pytest.fixture(params=["auto", pytest.param("triton", marks=pytest.mark.triton)])
def backend(request, device):
    """The backend an op test runs under: "auto" and, on CUDA where it is built, "triton"."""
    name = request.param
    if name == "triton":
        if "triton" not in fastgen.available_backends():
            pytest.skip("needs the triton backend (Triton and a CUDA GPU)")
        # The Triton backend runs on CUDA tensors (and on CPU ones only under
        # TRITON_INTERPRET=1, which the backend reads when it is imported).
        if device.type not in fastgen.ops.backend_device_types("triton"):
            pytest.skip(f"the triton backend does not run on {device.type} tensors here")
    with fastgen.use_backend(name):
        yield name


@pytest.fixture(autouse=True)
def _restore_backend():
    """A test that changes the backend does not leak it into the next one."""
    previous = fastgen.get_backend()
    yield
    fastgen.set_backend(previous)


@pytest.fixture
def one_thread():
    """Runs a test on one CPU thread.

    The model-level tests use tiny networks: per-op overhead dominates and a
    second thread only adds synchronization (tens of times slower on a shared
    2-core machine).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _torch_distributions_validate():
    """torch.distributions validates arguments by default, but the first torch.compile turns that
    off for the whole process (torch._dynamo's TorchPatcher); every test starts from the default."""
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(True)
    yield
    torch.distributions.Distribution.set_default_validate_args(previous)
