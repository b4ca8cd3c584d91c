"""Triton kernels of bernoulli_log_likelihood: per-row sums of target * logits - softplus(logits).

Stable for any finite logits; targets in [0, 1] may be soft. Either operand
may repeat over rows (e.g. (B, D) data against (K, B, D) logits).
"""

import torch
import triton
import triton.language as tl

from ._math import bernoulli_log_prob, bernoulli_log_prob_grad_logits, to_compute_type
from ._tiles import (
    ROW_CONFIGS,
    autotune,
    elementwise_grid,
    elementwise_position,
    finish_row_sums,
    operand_row_start,
    row_shape,
    row_sum_dtype,
    row_sum_grid,
    row_sum_position,
    split_plan,
)


@autotune(ROW_CONFIGS, key=["rows", "cols"])
@triton.jit
def bernoulli_log_likelihood_forward_kernel(
    logits_ptr, target_ptr, partial_ptr,
    rows, cols, chunk, splits, logits_rows, target_rows,
    COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):
    """partial[r, s] = sum over split s of row r of target * logits - softplus(logits)."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    row, split, col_begin, col_end = row_sum_position(rows, cols, chunk, splits, BLOCK_ROWS)
    row_mask = row < rows
    logits_row = logits_ptr + operand_row_start(row, logits_rows, cols)
    target_row = target_ptr + operand_row_start(row, target_rows, cols)
    acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], dtype=partial_ptr.dtype.element_ty)
    for col_start in range(col_begin, col_end, BLOCK_COLS):
        col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
        mask = row_mask & (col < col_end)
        logits = to_compute_type(tl.load(logits_row + col, mask=mask, other=0.0))
        target = to_compute_type(tl.load(target_row + col, mask=mask, other=0.0))
        acc += tl.where(mask, bernoulli_log_prob(logits, target), 0.0)
    tl.store(partial_ptr + row * splits + split, tl.sum(acc, axis=1)[:, None], mask=row_mask)


@autotune(ROW_CONFIGS, key=["rows", "cols"])
@triton.jit
def bernoulli_log_likelihood_backward_kernel(
    grad_ptr, logits_ptr, target_ptr, grad_logits_ptr, grad_target_ptr,
    rows, cols, logits_rows, target_rows,
    TARGET_GRAD: tl.constexpr, COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):
    """Full-size g_r * (target - sigmoid(logits)) and, with TARGET_GRAD, g_r * logits."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    row, col_start = elementwise_position(rows, cols, BLOCK_ROWS, BLOCK_COLS)
    col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
    row_mask = row < rows
    mask = row_mask & (col < cols)
    logits = to_compute_type(
        tl.load(logits_ptr + operand_row_start(row, logits_rows, cols) + col, mask=mask, other=0.0)
    )
    target = to_compute_type(
        tl.load(target_ptr + operand_row_start(row, target_rows, cols) + col, mask=mask, other=0.0)
    )
    grad = tl.load(grad_ptr + row, mask=row_mask, other=0.0)
    out = row * cols + col
    out_dtype = grad_logits_ptr.dtype.element_ty
    tl.store(grad_logits_ptr + out, (grad * bernoulli_log_prob_grad_logits(logits, target)).to(out_dtype), mask=mask)
    if TARGET_GRAD:
        tl.store(grad_target_ptr + out, (grad * logits).to(out_dtype), mask=mask)


def bernoulli_log_likelihood(logits: torch.Tensor, target: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Per-row sums of target * logits - softplus(logits)."""
    rows, cols = row_shape(logits, (target,), event_dims)
    if rows == 0 or cols == 0:
        return logits.new_zeros(rows, dtype=row_sum_dtype(logits.dtype))
    splits, chunk = split_plan(rows, cols, logits.device)
    partial = logits.new_empty((rows, splits), dtype=row_sum_dtype(logits.dtype))
    cols_pow2 = triton.next_power_of_2(cols)
    bernoulli_log_likelihood_forward_kernel[row_sum_grid(rows, splits, cols_pow2)](
        logits, target, partial,
        rows, cols, chunk, splits, logits.numel() // cols, target.numel() // cols,
        COLS_POW2=cols_pow2,
    )  # fmt: skip
    return finish_row_sums(partial)


def bernoulli_log_likelihood_backward(
    grad: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, event_dims: int, target_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-size (grad_logits, grad_target); grad_target is empty unless target_grad."""
    rows, cols = row_shape(logits, (target,), event_dims)
    grad_logits = logits.new_empty(rows * cols)
    grad_target = logits.new_empty(rows * cols if target_grad else 0)
    if rows * cols == 0:
        return grad_logits, grad_target
    cols_pow2 = triton.next_power_of_2(cols)
    bernoulli_log_likelihood_backward_kernel[elementwise_grid(rows, cols, cols_pow2)](
        grad.to(row_sum_dtype(logits.dtype)).contiguous(), logits, target,
        grad_logits, grad_target if target_grad else grad_logits,
        rows, cols, logits.numel() // cols, target.numel() // cols,
        TARGET_GRAD=target_grad, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return grad_logits, grad_target

