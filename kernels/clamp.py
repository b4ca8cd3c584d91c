"""Triton kernel of clamp_: every tensor of a list clamped to [low, high] in place, in one launch.

The list (one device and dtype, contiguous tensors) is described to the
kernel by one int64 table on the device:
    [pointer_0 .. pointer_{n-1}, size_0 .. size_{n-1}, first_tile_0 .. first_tile_{n-1}, low, high]
(low and high as the bits of float64s). Program p finds by binary search the
tensor t with first_tile[t] <= p < first_tile[t + 1] and clamps tile
p - first_tile[t] of it. The table is cached per (pointers, sizes, bounds),
so a training loop that clips the same parameters every step uploads it once.

This is an opaque custom op (torch.library.custom_op), not a triton_op: the
kernel writes through pointers read from memory, which torch.compile's
functionalization of Triton kernels cannot see, so the op declares its
mutation itself. The table upload is a host-to-device copy, so a first call
(uncached table) cannot be captured in a CUDA graph.
"""

import functools

import torch
import triton
import triton.language as tl

from ._math import to_compute_type
from ._tiles import INTERPRET

# Elements clamped by one program, and its warps.
CLAMP_TILE = 1024 if INTERPRET else 4096
CLAMP_WARPS = 1 if INTERPRET else 8
# Byte alignment every pointer must have for the kernel to be told so (16-byte vector loads).
VECTOR_BYTES = 16


@triton.jit
def clamp_kernel(
    table_ptr, dtype_ptr, count, search_steps, POINTERS_ALIGNED: tl.constexpr, TILE: tl.constexpr
):
    """Clamps tile (p - first_tile[t]) of tensor t in place; dtype_ptr only carries the element type."""
    pid = tl.program_id(0).to(tl.int64)
    first_tiles = table_ptr + 2 * count
    # The last t with first_tile[t] <= pid (first_tile is increasing, first_tile[0] = 0).
    low = tl.full([], 0, tl.int64)
    high = tl.full([], 0, tl.int64) + count - 1
    for _ in range(search_steps):
        middle = (low + high + 1) // 2
        above = tl.load(first_tiles + middle) <= pid
        low = tl.where(above, middle, low)
        high = tl.where(above, high, middle - 1)
    base = tl.load(table_ptr + low).to(tl.pointer_type(dtype_ptr.dtype.element_ty))
    if POINTERS_ALIGNED:
        base = tl.multiple_of(base, 16)
    size = tl.load(table_ptr + count + low)
    index = (pid - tl.load(first_tiles + low)) * TILE + tl.arange(0, TILE)
    mask = index < size
    value = tl.load(base + index, mask=mask)
    computed = to_compute_type(value)
    bound_low = tl.load(table_ptr + 3 * count).to(tl.float64, bitcast=True).to(computed.dtype)
    bound_high = tl.load(table_ptr + 3 * count + 1).to(tl.float64, bitcast=True).to(computed.dtype)
    clamped = tl.clamp(computed, bound_low, bound_high, propagate_nan=tl.PropagateNan.ALL)
    tl.store(base + index, clamped.to(value.dtype), mask=mask)


@functools.lru_cache(maxsize=16)
def _table(device: torch.device, pointers: tuple, sizes: tuple, low: float, high: float) -> torch.Tensor:
    """The kernel's int64 table on `device` (see the module docstring)."""
    tiles = [triton.cdiv(size, CLAMP_TILE) for size in sizes]
    first_tiles = [sum(tiles[:i]) for i in range(len(tiles))]
    bounds = torch.tensor([low, high], dtype=torch.float64).view(torch.int64).tolist()
    return torch.tensor([*pointers, *sizes, *first_tiles, *bounds], dtype=torch.int64).to(device)


@torch.library.custom_op("fastgen_triton::clamp_", mutates_args=("tensors",))
def clamp_(tensors: list[torch.Tensor], low: float, high: float) -> None:
    """Clamps every tensor (contiguous, one device and dtype) to [low, high] in place, NaN kept."""
    tensors = [t for t in tensors if t.numel() > 0]
    if not tensors:
        return
    first = tensors[0]
    for t in tensors:
        if not t.is_contiguous() or t.dtype != first.dtype or t.device != first.device:
            raise ValueError(
                "fastgen_triton.clamp_: tensors must be contiguous and share one device and dtype, got "
                f"{t.dtype} on {t.device} (contiguous: {t.is_contiguous()}) beside {first.dtype} on {first.device}"
            )
    pointers = tuple(t.data_ptr() for t in tensors)
    sizes = tuple(t.numel() for t in tensors)
    table = _table(first.device, pointers, sizes, float(low), float(high))
    total_tiles = sum(triton.cdiv(size, CLAMP_TILE) for size in sizes)
    clamp_kernel[(total_tiles,)](
        table,
        first,
        len(tensors),
        (len(tensors) - 1).bit_length(),  # ceil(log2(count)) halvings of the search
        POINTERS_ALIGNED=all(pointer % VECTOR_BYTES == 0 for pointer in pointers),
        TILE=CLAMP_TILE,
        num_warps=CLAMP_WARPS,
    )


@clamp_.register_fake
def _(tensors, low, high):
    return None
