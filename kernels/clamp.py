"""Triton kernel of clamp_: every tensor of a list clamped to [low, high] in place, in one launch.

The list (one device and dtype, contiguous tensors) is described to the
kernel by its first tensor and one int64 table on the device:
    [offset_0 .. offset_{n-1}, size_0 .. size_{n-1}, first_tile_0 .. first_tile_{n-1}, low, high]
where offset_t is tensor t's address minus the first tensor's, in elements,
and low and high are the bits of float64s. Program p finds by binary search
the tensor t with first_tile[t] <= p < first_tile[t + 1] and clamps tile
p - first_tile[t] of it. Addressing through the first tensor's pointer (not
integers cast to pointers) keeps the compiler's alignment facts, so loads
and stores are vectorized. The table is cached per (addresses, sizes,
bounds), so a training loop that clips the same parameters every step
uploads it once.

It implements the kernel op _clamp_ (csrc/ops/clamp.cpp), which torch.compile
sees as one opaque op that mutates its arguments. The table upload is a
host-to-device copy, so a first (uncached) call cannot be captured in a CUDA
graph.
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
# Alignment (bytes) of a vectorized load or store.
VECTOR_BYTES = 16


@triton.jit
def clamp_kernel(table_ptr, first_ptr, count, search_steps, OFFSET_MULTIPLE: tl.constexpr, TILE: tl.constexpr):
    """Clamps tile p - first_tile[t] of tensor t, at first_ptr + offset[t], in place.

    OFFSET_MULTIPLE divides every offset (16 bytes' worth of elements when every
    tensor is 16-byte aligned): with it the compiler vectorizes the loads and stores.
    """
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
    base = first_ptr + tl.multiple_of(tl.load(table_ptr + low), OFFSET_MULTIPLE)
    size = tl.load(table_ptr + count + low)
    tile_start = (pid - tl.load(first_tiles + low)) * TILE
    index = tile_start + tl.arange(0, TILE)
    bound_low = tl.load(table_ptr + 3 * count).to(tl.float64, bitcast=True)
    bound_high = tl.load(table_ptr + 3 * count + 1).to(tl.float64, bitcast=True)
    if tile_start + TILE <= size:
        # A whole tile: no mask, so that the loads and stores are vectorized.
        value = tl.load(base + index)
        tl.store(base + index, _clamped(value, bound_low, bound_high))
    else:
        mask = index < size
        value = tl.load(base + index, mask=mask)
        tl.store(base + index, _clamped(value, bound_low, bound_high), mask=mask)


@triton.jit
def _clamped(value, low, high):
    """value clamped to [low, high] (float64 bounds) in its compute type, NaN kept, in its own dtype."""
    computed = to_compute_type(value)
    clamped = tl.clamp(computed, low.to(computed.dtype), high.to(computed.dtype), propagate_nan=tl.PropagateNan.ALL)
    return clamped.to(value.dtype)


@functools.lru_cache(maxsize=16)
def _table(device: torch.device, addresses: tuple, sizes: tuple, item_size: int, low: float, high: float):
    """The kernel's int64 table on `device` (see the module docstring)."""
    offsets = [(address - addresses[0]) // item_size for address in addresses]
    tiles = [triton.cdiv(size, CLAMP_TILE) for size in sizes]
    first_tiles = [sum(tiles[:i]) for i in range(len(tiles))]
    bounds = torch.tensor([low, high], dtype=torch.float64).view(torch.int64).tolist()
    return torch.tensor([*offsets, *sizes, *first_tiles, *bounds], dtype=torch.int64).to(device)


def clamp_(tensors: list[torch.Tensor], low: float, high: float) -> None:
    """Clamps every tensor (contiguous, one device and dtype) to [low, high] in place, NaN kept."""
    tensors = [t for t in tensors if t.numel() > 0]
    if not tensors:
        return
    first = tensors[0]
    for t in tensors:
        if not t.is_contiguous() or t.dtype != first.dtype or t.device != first.device:
            raise ValueError(
                "fastgen_triton._clamp_: tensors must be contiguous and share one device and dtype, got "
                f"{t.dtype} on {t.device} (contiguous: {t.is_contiguous()}) beside {first.dtype} on {first.device}"
            )
    addresses = tuple(t.data_ptr() for t in tensors)
    sizes = tuple(t.numel() for t in tensors)
    item_size = first.element_size()
    table = _table(first.device, addresses, sizes, item_size, float(low), float(high))
    aligned = all(address % VECTOR_BYTES == 0 for address in addresses)
    clamp_kernel[(sum(triton.cdiv(size, CLAMP_TILE) for size in sizes),)](
        table,
        first,
        len(tensors),
        (len(tensors) - 1).bit_length(),  # ceil(log2(count)) halvings of the search
        OFFSET_MULTIPLE=VECTOR_BYTES // item_size if aligned else 1,
        TILE=CLAMP_TILE,
        num_warps=CLAMP_WARPS,
    )
