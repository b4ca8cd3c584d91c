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
import re

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastgen  # noqa: E402

try:
    from fastgen.kernels import _tiles
except ImportError:  # no Triton: the test modules skip themselves (pytest.importorskip)
    _tiles = None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


if _tiles is not None and _tiles.INTERPRET:
    import numpy
    import triton
    from triton.runtime import interpreter

    if _release(triton.__version__) < (3, 7) and _release(numpy.__version__) >= (2, 4):
        # Triton < 3.7's interpreter gives a scalar (say a kernel argument n in range(n))
        # as int() of a 1-element array, which NumPy >= 2.4 refuses: every such kernel
        # fails with InterpreterError: TypeError('only 0-dimensional arrays can be
        # converted to Python scalars') (triton-lang/triton#9171). Put the later
        # Triton's __index__ (#9172) in place for the interpreted runs.
        _patch_lang_tensor = interpreter._patch_lang_tensor

        def _patch_lang_tensor_fixed(tensor, scope):
            _patch_lang_tensor(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

        interpreter._patch_lang_tensor = _patch_lang_tensor_fixed

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NOT_INTERPRETED = (
    "needs Triton's interpreter on this CPU-only machine, but fastgen.kernels was defined compiled "
    "(TRITON_INTERPRET was not 1 when it was first imported; run with TRITON_INTERPRET=1)"
)


def pytest_collection_modifyitems(config, items):
    """On the CPU the kernels must be interpreted; if they were defined compiled, skip, saying why."""
    if _tiles is None or DEVICE.type != "cpu" or _tiles.INTERPRET:
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=NOT_INTERPRETED))


@pytest.fixture
def device() -> torch.device:
    """The device the kernels run on here: CUDA (compiled) or the CPU (interpreted)."""
    return DEVICE


@pytest.fixture(autouse=True)
def triton_backend():
    """Every test runs under the "triton" backend and leaves the previous one in place."""
    with fastgen.use_backend("triton"):
        yield
