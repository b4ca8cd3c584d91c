"""Triton kernels of gaussian_kl: per-row sums of KL(N(mu, e^logvar) || prior) and their gradients.

The prior is N(0, I) or a diagonal Gaussian whose mean and log-variance may
each be missing (mean 0, log-variance 0) or repeat over rows (a learned prior
of shape (D,) is read once per row, never expanded in memory).
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from ._math import kl_diag_normal, kl_diag_normal_grads, kl_std_normal, to_compute_type
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
def gaussian_kl_forward_kernel(
    mu_ptr, logvar_ptr, prior_mu_ptr, prior_logvar_ptr, partial_ptr,
    rows, cols, chunk, splits, mu_rows, logvar_rows, prior_mu_rows, prior_logvar_rows,
    HAS_PRIOR_MU: tl.constexpr, HAS_PRIOR_LOGVAR: tl.constexpr, COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):
    """partial[r, s] = sum over split s of row r of the KL terms."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    row, split, col_begin, col_end = row_sum_position(rows, cols, chunk, splits, BLOCK_ROWS)
    row_mask = row < rows
    mu_row = mu_ptr + operand_row_start(row, mu_rows, cols)
    logvar_row = logvar_ptr + operand_row_start(row, logvar_rows, cols)
    prior_mu_row = prior_mu_ptr + operand_row_start(row, prior_mu_rows, cols)
    prior_logvar_row = prior_logvar_ptr + operand_row_start(row, prior_logvar_rows, cols)
    acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], dtype=partial_ptr.dtype.element_ty)
    for col_start in range(col_begin, col_end, BLOCK_COLS):
        col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
        mask = row_mask & (col < col_end)
        mu = to_compute_type(tl.load(mu_row + col, mask=mask, other=0.0))
        logvar = to_compute_type(tl.load(logvar_row + col, mask=mask, other=0.0))
        if HAS_PRIOR_MU or HAS_PRIOR_LOGVAR:
            # A missing half of the prior is its N(0, 1) value: mean 0 or log-variance 0.
            prior_mu = tl.zeros_like(mu)
            prior_logvar = tl.zeros_like(mu)
            if HAS_PRIOR_MU:
                prior_mu = to_compute_type(tl.load(prior_mu_row + col, mask=mask, other=0.0))
            if HAS_PRIOR_LOGVAR:
                prior_logvar = to_compute_type(tl.load(prior_logvar_row + col, mask=mask, other=0.0))
            terms = kl_diag_normal(mu, logvar, prior_mu, prior_logvar)
        else:
            terms = kl_std_normal(mu, logvar)
        acc += tl.where(mask, terms, 0.0)
    tl.store(partial_ptr + row * splits + split, tl.sum(acc, axis=1)[:, None], mask=row_mask)


@autotune(ROW_CONFIGS, key=["rows", "cols"])
@triton.jit
def gaussian_kl_backward_kernel(
    grad_ptr, mu_ptr, logvar_ptr, prior_mu_ptr, prior_logvar_ptr,
    grad_mu_ptr, grad_logvar_ptr, grad_prior_logvar_ptr,
    rows, cols, mu_rows, logvar_rows, prior_mu_rows, prior_logvar_rows,
    HAS_PRIOR_MU: tl.constexpr, HAS_PRIOR_LOGVAR: tl.constexpr, PRIOR_LOGVAR_GRAD: tl.constexpr,
    COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):
    """Full-size gradients g_r * dKL/d(mu, logvar, prior_logvar) of every element."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    row, col_start = elementwise_position(rows, cols, BLOCK_ROWS, BLOCK_COLS)
    col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
    row_mask = row < rows
    mask = row_mask & (col < cols)
    mu = to_compute_type(tl.load(mu_ptr + operand_row_start(row, mu_rows, cols) + col, mask=mask, other=0.0))
    logvar = to_compute_type(
        tl.load(logvar_ptr + operand_row_start(row, logvar_rows, cols) + col, mask=mask, other=0.0)
    )
    prior_mu = tl.zeros_like(mu)
    prior_logvar = tl.zeros_like(mu)
    if HAS_PRIOR_MU:
        prior_mu = to_compute_type(
            tl.load(prior_mu_ptr + operand_row_start(row, prior_mu_rows, cols) + col, mask=mask, other=0.0)
        )
    if HAS_PRIOR_LOGVAR:
        prior_logvar = to_compute_type(
            tl.load(prior_logvar_ptr + operand_row_start(row, prior_logvar_rows, cols) + col, mask=mask, other=0.0)
        )
    grad = tl.load(grad_ptr + row, mask=row_mask, other=0.0)
    d_mu, d_logvar, d_prior_logvar = kl_diag_normal_grads(mu, logvar, prior_mu, prior_logvar)
    out = row * cols + col
    out_dtype = grad_mu_ptr.dtype.element_ty
    tl.store(grad_mu_ptr + out, (grad * d_mu).to(out_dtype), mask=mask)
    tl.store(grad_logvar_ptr + out, (grad * d_logvar).to(out_dtype), mask=mask)
    if PRIOR_LOGVAR_GRAD:
        tl.store(grad_prior_logvar_ptr + out, (grad * d_prior_logvar).to(out_dtype), mask=mask)


def _operand_rows(t: Optional[torch.Tensor], cols: int) -> int:
    return 1 if t is None else t.numel() // cols


def gaussian_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    prior_mu: Optional[torch.Tensor],
    prior_logvar: Optional[torch.Tensor],
    event_dims: int,
) -> torch.Tensor:
    """Per-row sums of (plv - lv + (e^lv + (mu - pm)^2) e^-plv - 1) / 2 (pm = plv = 0 when missing)."""
    rows, cols = row_shape(mu, (logvar, prior_mu, prior_logvar), event_dims)
    if rows == 0 or cols == 0:
        return mu.new_zeros(rows, dtype=row_sum_dtype(mu.dtype))
    splits, chunk = split_plan(rows, cols, mu.device)
    partial = mu.new_empty((rows, splits), dtype=row_sum_dtype(mu.dtype))
    cols_pow2 = triton.next_power_of_2(cols)
    gaussian_kl_forward_kernel[row_sum_grid(rows, splits, cols_pow2)](
        mu, logvar, mu if prior_mu is None else prior_mu, mu if prior_logvar is None else prior_logvar, partial,
        rows, cols, chunk, splits,
        _operand_rows(mu, cols), _operand_rows(logvar, cols),
        _operand_rows(prior_mu, cols), _operand_rows(prior_logvar, cols),
        HAS_PRIOR_MU=prior_mu is not None, HAS_PRIOR_LOGVAR=prior_logvar is not None, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return finish_row_sums(partial)


def gaussian_kl_backward(
    grad: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    prior_mu: Optional[torch.Tensor],
    prior_logvar: Optional[torch.Tensor],
    event_dims: int,
    prior_logvar_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-size (grad_mu, grad_logvar, grad_prior_logvar); the last is empty unless prior_logvar_grad.

    The prior mean's gradient is -grad_mu.
    """
    rows, cols = row_shape(mu, (logvar, prior_mu, prior_logvar), event_dims)
    grad_mu = mu.new_empty(rows * cols)
    grad_logvar = mu.new_empty(rows * cols)
    grad_prior_logvar = mu.new_empty(rows * cols if prior_logvar_grad else 0)
    if rows * cols == 0:
        return grad_mu, grad_logvar, grad_prior_logvar
    cols_pow2 = triton.next_power_of_2(cols)
    gaussian_kl_backward_kernel[elementwise_grid(rows, cols, cols_pow2)](
        grad.to(row_sum_dtype(mu.dtype)).contiguous(), mu, logvar,
        mu if prior_mu is None else prior_mu, mu if prior_logvar is None else prior_logvar,
        grad_mu, grad_logvar, grad_prior_logvar if prior_logvar_grad else grad_mu,
        rows, cols,
        _operand_rows(mu, cols), _operand_rows(logvar, cols),
        _operand_rows(prior_mu, cols), _operand_rows(prior_logvar, cols),
        HAS_PRIOR_MU=prior_mu is not None, HAS_PRIOR_LOGVAR=prior_logvar is not None,
        PRIOR_LOGVAR_GRAD=prior_logvar_grad, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return grad_mu, grad_logvar, grad_prior_logvar

