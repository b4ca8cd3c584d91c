"""Triton kernels of gaussian_log_likelihood: per-row sums of log N(x; mean, e^logvar) and gradients.

logvar may be missing (unit variance); every operand may repeat over rows.
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from ._math import gaussian_log_prob, gaussian_log_prob_grads, gaussian_log_prob_unit, gaussian_log_prob_unit_grad_x
from ._math import to_compute_type
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
def gaussian_log_likelihood_forward_kernel(
    x_ptr, mean_ptr, logvar_ptr, partial_ptr,
    rows, cols, chunk, splits, x_rows, mean_rows, logvar_rows,
    HAS_LOGVAR: tl.constexpr, COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):
    """partial[r, s] = sum over split s of row r of the log-density terms."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    row, split, col_begin, col_end = row_sum_position(rows, cols, chunk, splits, BLOCK_ROWS)
    row_mask = row < rows
    x_row = x_ptr + operand_row_start(row, x_rows, cols)
    mean_row = mean_ptr + operand_row_start(row, mean_rows, cols)
    logvar_row = logvar_ptr + operand_row_start(row, logvar_rows, cols)
    acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], dtype=partial_ptr.dtype.element_ty)
    for col_start in range(col_begin, col_end, BLOCK_COLS):
        col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
        mask = row_mask & (col < col_end)
        x = to_compute_type(tl.load(x_row + col, mask=mask, other=0.0))
        mean = to_compute_type(tl.load(mean_row + col, mask=mask, other=0.0))
        if HAS_LOGVAR:
            logvar = to_compute_type(tl.load(logvar_row + col, mask=mask, other=0.0))
            terms = gaussian_log_prob(x, mean, logvar)
        else:
            terms = gaussian_log_prob_unit(x, mean)
        acc += tl.where(mask, terms, 0.0)
    tl.store(partial_ptr + row * splits + split, tl.sum(acc, axis=1)[:, None], mask=row_mask)


@autotune(ROW_CONFIGS, key=["rows", "cols"])
@triton.jit
def gaussian_log_likelihood_backward_kernel(
    grad_ptr, x_ptr, mean_ptr, logvar_ptr, grad_x_ptr, grad_logvar_ptr,
    rows, cols, x_rows, mean_rows, logvar_rows,
    HAS_LOGVAR: tl.constexpr, COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):
    """Full-size g_r * d/dx and, with HAS_LOGVAR, g_r * d/dlogvar of every element."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    row, col_start = elementwise_position(rows, cols, BLOCK_ROWS, BLOCK_COLS)
    col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
    row_mask = row < rows
    mask = row_mask & (col < cols)
    x = to_compute_type(tl.load(x_ptr + operand_row_start(row, x_rows, cols) + col, mask=mask, other=0.0))
    mean = to_compute_type(tl.load(mean_ptr + operand_row_start(row, mean_rows, cols) + col, mask=mask, other=0.0))
    grad = tl.load(grad_ptr + row, mask=row_mask, other=0.0)
    out = row * cols + col
    out_dtype = grad_x_ptr.dtype.element_ty
    if HAS_LOGVAR:
        logvar = to_compute_type(
            tl.load(logvar_ptr + operand_row_start(row, logvar_rows, cols) + col, mask=mask, other=0.0)
        )
        d_x, d_logvar = gaussian_log_prob_grads(x, mean, logvar)
        tl.store(grad_logvar_ptr + out, (grad * d_logvar).to(out_dtype), mask=mask)
    else:
        d_x = gaussian_log_prob_unit_grad_x(x, mean)
    tl.store(grad_x_ptr + out, (grad * d_x).to(out_dtype), mask=mask)


def gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, logvar: Optional[torch.Tensor], event_dims: int
) -> torch.Tensor:
    """Per-row sums of -(log 2 pi + logvar + (x - mean)^2 e^-logvar) / 2 (logvar = 0 when missing)."""
    rows, cols = row_shape(x, (mean, logvar), event_dims)
    if rows == 0 or cols == 0:
        return x.new_zeros(rows, dtype=row_sum_dtype(x.dtype))
    splits, chunk = split_plan(rows, cols, x.device)
    partial = x.new_empty((rows, splits), dtype=row_sum_dtype(x.dtype))
    cols_pow2 = triton.next_power_of_2(cols)
    gaussian_log_likelihood_forward_kernel[row_sum_grid(rows, splits, cols_pow2)](
        x, mean, x if logvar is None else logvar, partial,
        rows, cols, chunk, splits,
        x.numel() // cols, mean.numel() // cols, 1 if logvar is None else logvar.numel() // cols,
        HAS_LOGVAR=logvar is not None, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return finish_row_sums(partial)


def gaussian_log_likelihood_backward(
    grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, logvar: Optional[torch.Tensor], event_dims: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-size (grad_x, grad_logvar); the mean's gradient is -grad_x; grad_logvar is empty without logvar."""
    rows, cols = row_shape(x, (mean, logvar), event_dims)
    grad_x = x.new_empty(rows * cols)
    grad_logvar = x.new_empty(0 if logvar is None else rows * cols)
    if rows * cols == 0:
        return grad_x, grad_logvar
    cols_pow2 = triton.next_power_of_2(cols)
    gaussian_log_likelihood_backward_kernel[elementwise_grid(rows, cols, cols_pow2)](
        grad.to(row_sum_dtype(x.dtype)).contiguous(), x, mean, x if logvar is None else logvar,
        grad_x, grad_x if logvar is None else grad_logvar,
        rows, cols,
        x.numel() // cols, mean.numel() // cols, 1 if logvar is None else logvar.numel() // cols,
        HAS_LOGVAR=logvar is not None, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return grad_x, grad_logvar

