"""Triton kernels of grad_norm_penalty (WGAN-GP's per-row (||g|| - c)^2, one pass each way) and of
random_interpolate (its interpolates, one uniform weight per sample drawn from the noise stream).

The penalty's forward sums squares per row (split into a two-stage reduction
for long rows on few rows), then a small kernel turns the sums into norms and
penalties; backward reads grad once more, scaled per row with the saved norms.
`center` is passed as a one-element tensor of the compute type, so float64
keeps every digit. The interpolation weight of sample i is tl.rand(seed,
offset + i) (word 0 of Philox at counter offset + i).
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from ._math import grad_norm_penalty as penalty_of_norm
from ._math import grad_norm_penalty_scale, interpolate, philox_uniform, to_compute_type
from ._tiles import (
    FLAT_CONFIGS,
    ROW_CONFIGS,
    autotune,
    elementwise_grid,
    elementwise_position,
    flat_grid,
    row_shape,
    row_sum_dtype,
    row_sum_grid,
    row_sum_position,
    split_plan,
)
from .reparameterize import draw_rng_state


@autotune(ROW_CONFIGS, key=["rows", "cols"])
@triton.jit
def sum_squares_kernel(
    grad_ptr, partial_ptr, rows, cols, chunk, splits, COLS_POW2: tl.constexpr, TILE: tl.constexpr
):  # fmt: skip
    """partial[r, s] = the sum of squares of split s of row r."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    row, split, col_begin, col_end = row_sum_position(rows, cols, chunk, splits, BLOCK_ROWS)
    row_mask = row < rows
    acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], dtype=partial_ptr.dtype.element_ty)
    for col_start in range(col_begin, col_end, BLOCK_COLS):
        col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
        mask = row_mask & (col < col_end)
        g = to_compute_type(tl.load(grad_ptr + row * cols + col, mask=mask, other=0.0))
        acc += g * g
    tl.store(partial_ptr + row * splits + split, tl.sum(acc, axis=1)[:, None], mask=row_mask)


@autotune(FLAT_CONFIGS, key=["rows", "splits"])
@triton.jit
def finish_kernel(partial_ptr, center_ptr, penalty_ptr, norm_ptr, rows, splits, BLOCK: tl.constexpr):
    """norm[r] = sqrt(sum over splits of partial[r, :]); penalty[r] = (norm[r] - c)^2."""
    row = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = row < rows
    total = tl.zeros([BLOCK], dtype=partial_ptr.dtype.element_ty)
    for split in range(splits):
        total += tl.load(partial_ptr + row * splits + split, mask=mask, other=0.0)
    norm = tl.sqrt(total)
    tl.store(norm_ptr + row, norm, mask=mask)
    tl.store(penalty_ptr + row, penalty_of_norm(norm, tl.load(center_ptr)), mask=mask)


@autotune(ROW_CONFIGS, key=["rows", "cols"])
@triton.jit
def backward_kernel(
    grad_penalty_ptr, grad_ptr, norm_ptr, center_ptr, out_ptr, rows, cols,
    COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):  # fmt: skip
    """out = 2 g_r (||g_r|| - c) / ||g_r|| * grad (0 where ||g_r|| = 0)."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    row, col_start = elementwise_position(rows, cols, BLOCK_ROWS, BLOCK_COLS)
    col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
    row_mask = row < rows
    mask = row_mask & (col < cols)
    norm = tl.load(norm_ptr + row, mask=row_mask, other=1.0)
    upstream = tl.load(grad_penalty_ptr + row, mask=row_mask, other=0.0)
    scale = grad_norm_penalty_scale(norm, tl.load(center_ptr), upstream)
    g = tl.load(grad_ptr + row * cols + col, mask=mask, other=0.0).to(scale.dtype)
    tl.store(out_ptr + row * cols + col, (scale * g).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def uniform_kernel(rng_state_ptr, weights_ptr, rows, BLOCK: tl.constexpr):
    """weights[i] = tl.rand(seed, offset + i): one uniform per sample."""
    seed = tl.load(rng_state_ptr)
    offset = tl.load(rng_state_ptr + 1)
    row = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(weights_ptr + row, philox_uniform(seed, offset + row), mask=row < rows)


@autotune(ROW_CONFIGS, key=["rows", "cols"])
@triton.jit
def interpolate_kernel(
    real_ptr, fake_ptr, weights_ptr, out_ptr, rows, cols, COLS_POW2: tl.constexpr, TILE: tl.constexpr
):  # fmt: skip
    """out[i, j] = w_i real[i, j] + (1 - w_i) fake[i, j]."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    row, col_start = elementwise_position(rows, cols, BLOCK_ROWS, BLOCK_COLS)
    col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
    row_mask = row < rows
    mask = row_mask & (col < cols)
    real = to_compute_type(tl.load(real_ptr + row * cols + col, mask=mask, other=0.0))
    fake = to_compute_type(tl.load(fake_ptr + row * cols + col, mask=mask, other=0.0))
    weight = tl.load(weights_ptr + row, mask=row_mask, other=0.0).to(real.dtype)
    tl.store(out_ptr + row * cols + col, interpolate(real, fake, weight).to(out_ptr.dtype.element_ty), mask=mask)


def _center(center: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full((1,), center, dtype=row_sum_dtype(like.dtype), device=like.device)


def grad_norm_penalty(grad: torch.Tensor, center: float, event_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty, norm) per row: (||g||_2 - center)^2 and ||g||_2."""
    rows, cols = row_shape(grad, (), event_dims)
    dtype = row_sum_dtype(grad.dtype)
    penalty, norm = grad.new_empty(rows, dtype=dtype), grad.new_empty(rows, dtype=dtype)
    if rows == 0:
        return penalty, norm
    splits, chunk = split_plan(rows, max(cols, 1), grad.device)
    partial = grad.new_zeros((rows, splits), dtype=dtype)
    if cols > 0:
        cols_pow2 = triton.next_power_of_2(cols)
        sum_squares_kernel[row_sum_grid(rows, splits, cols_pow2)](
            grad, partial, rows, cols, chunk, splits, COLS_POW2=cols_pow2
        )
    finish_kernel[flat_grid(rows)](partial, _center(center, grad), penalty, norm, rows, splits)
    return penalty, norm


def grad_norm_penalty_backward(
    grad_penalty: torch.Tensor, grad: torch.Tensor, norm: torch.Tensor, center: float, event_dims: int
) -> torch.Tensor:
    """d/dgrad of the per-row penalties times grad_penalty: one pass over grad."""
    rows, cols = row_shape(grad, (), event_dims)
    out = grad.new_empty(grad.shape)
    if rows * cols == 0:
        return out
    dtype = row_sum_dtype(grad.dtype)
    cols_pow2 = triton.next_power_of_2(cols)
    backward_kernel[elementwise_grid(rows, cols, cols_pow2)](
        grad_penalty.to(dtype).contiguous(), grad, norm.to(dtype).contiguous(), _center(center, grad), out,
        rows, cols, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return out


def random_interpolate(
    real: torch.Tensor, fake: torch.Tensor, generator: Optional[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(interpolate, weights): one float32 weight per sample (dim 0) from the stream, then the interpolates."""
    rows = real.shape[0] if real.dim() > 0 else 1
    # Four normals' worth of counters per sample, as every backend takes the stream.
    rng_state = draw_rng_state(real, generator, 4 * rows)
    weights = real.new_empty(rows, dtype=torch.float32)
    out = real.new_empty(real.shape)
    if rows == 0:
        return out, weights
    uniform_kernel[(triton.cdiv(rows, 1024),)](rng_state, weights, rows, BLOCK=1024)
    cols = real.numel() // rows
    if cols > 0:
        cols_pow2 = triton.next_power_of_2(cols)
        interpolate_kernel[elementwise_grid(rows, cols, cols_pow2)](
            real, fake, weights, out, rows, cols, COLS_POW2=cols_pow2
        )
    return out, weights
