"""clamp_ / clip_weights_ under the "triton" backend: one launch per device-and-dtype group.

The kernel reads a table of element offsets from the group's first tensor,
sizes and first tiles; the interpreter runs the same scheme on CPU memory.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("triton", reason="needs Triton")

import fastgen  # noqa: E402  (after the Triton check)
from fastgen.kernels import clamp as clamp_module  # noqa: E402  (after the Triton check)

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _tensors(dtype, device):
    g = torch.Generator().manual_seed(0)
    # Sizes around the tile size, a tensor of one element, and a view at an odd offset.
    tile = clamp_module.CLAMP_TILE
    sizes = (5, tile, tile + 1, 1, 3 * tile - 7)
    tensors = [(torch.randn(size, generator=g, dtype=torch.float64) * 3).to(dtype).to(device) for size in sizes]
    base = (torch.randn(40, generator=g, dtype=torch.float64) * 3).to(dtype).to(device)
    tensors.append(base[3:30])  # contiguous, not 16-byte aligned: the unvectorized variant
    return tensors


@pytest.mark.parametrize("dtype", DTYPES)
def test_clamp_matches_torch(device, dtype):
    tensors = _tensors(dtype, device)
    tensors[0][1] = float("nan")
    expected = [t.clone().clamp_(-1.25, 0.5) for t in tensors]
    fastgen.clamp_(tensors, -1.25, 0.5)
    for actual, wanted in zip(tensors, expected):
        torch.testing.assert_close(actual, wanted, rtol=0, atol=0, equal_nan=True)


def test_clip_weights_of_a_module_and_mixed_groups(device):
    """A module's parameters in two dtypes and a non-contiguous tensor, clipped in place."""
    model = nn.Sequential(nn.Linear(7, 33), nn.Linear(33, 2)).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(50)
    model[1].half()
    strided = (torch.randn(6, 4, device=device) * 3).t()
    expected = [p.detach().clone().clamp_(-0.01, 0.01) for p in model.parameters()]
    expected_strided = strided.clone().clamp_(-0.5, 0.5)
    fastgen.clip_weights_(model, 0.01)
    fastgen.clamp_([strided], -0.5, 0.5)
    for p, wanted in zip(model.parameters(), expected):
        assert torch.equal(p.detach(), wanted)
    assert torch.equal(strided, expected_strided)


def test_one_launch_per_group_and_cached_table(device, monkeypatch):
    launches = []
    kernel = clamp_module.clamp_kernel

    class CountingKernel:
        def __getitem__(self, grid):
            launches.append(grid)
            return kernel[grid]

    monkeypatch.setattr(clamp_module, "clamp_kernel", CountingKernel())
    tensors = _tensors(torch.float32, device) + [torch.randn(9, device=device, dtype=torch.float64)]
    clamp_module._table.cache_clear()
    fastgen.clamp_(tensors, -1.0, 1.0)
    assert len(launches) == 2  # float32 and float64
    fastgen.clamp_(tensors, -1.0, 1.0)
    assert clamp_module._table.cache_info().hits == 2


def test_clamp_rejects_mixed_groups(device):
    with pytest.raises(ValueError, match="one device and dtype"):
        torch.ops.fastgen_triton._clamp_([torch.zeros(3, device=device), torch.zeros(3, device=device).double()], 0.0, 1.0)
