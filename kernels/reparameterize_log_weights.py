"""Triton kernels of reparameterize_log_weights: IWAE's samples and their log p(z) - log q(z|x).

The samples are those of `reparameterize` for the same rng_state: element i of
the flattened z (shape (K, *mu.shape), sample k at k * numel) takes lane i % 4
of tl.randn4x(seed, offset + i // 4). The forward kernel sees the K samples as
K * rows rows of a row sum, sample k's row r being row k * rows + r, whose
mu and logvar are row r's (and whose prior repeats over rows as usual).
Backward regenerates eps and z; nothing of the samples' size is kept.
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from ._math import (
    log_weight_diag_normal,
    log_weight_grad_prior_logvar,
    log_weight_grad_z,
    log_weight_score,
    log_weight_std_normal,
    log_weights_grad_logvar,
    philox_normal,
    reparameterize_sample,
    to_compute_type,
)
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
from .reparameterize import draw_rng_state


@autotune(ROW_CONFIGS, key=["rows", "cols", "samples"])
@triton.jit
def log_weights_forward_kernel(
    mu_ptr, logvar_ptr, prior_mu_ptr, prior_logvar_ptr, z_ptr, partial_ptr, rng_state_ptr,
    rows, cols, chunk, splits, samples, prior_mu_rows, prior_logvar_rows,
    HAS_PRIOR_MU: tl.constexpr, HAS_PRIOR_LOGVAR: tl.constexpr,
    ALIGNED: tl.constexpr, COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):  # fmt: skip
    """z of every sample and partial[k * rows + r, s], the log-weight terms of split s of sample k's row r."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    seed = tl.load(rng_state_ptr)
    offset = tl.load(rng_state_ptr + 1)
    # Rows of the K samples: `row` runs over samples * rows.
    row, split, col_begin, col_end = row_sum_position(samples * rows, cols, chunk, splits, BLOCK_ROWS)
    row_mask = row < samples * rows
    mu_row = mu_ptr + operand_row_start(row, rows, cols)
    logvar_row = logvar_ptr + operand_row_start(row, rows, cols)
    prior_mu_row = prior_mu_ptr + operand_row_start(row, prior_mu_rows, cols)
    prior_logvar_row = prior_logvar_ptr + operand_row_start(row, prior_logvar_rows, cols)
    acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], dtype=partial_ptr.dtype.element_ty)
    for col_start in range(col_begin, col_end, BLOCK_COLS):
        col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
        mask = row_mask & (col < col_end)
        mu = to_compute_type(tl.load(mu_row + col, mask=mask, other=0.0))
        logvar = to_compute_type(tl.load(logvar_row + col, mask=mask, other=0.0))
        first = row * cols + col_start
        eps = philox_normal(seed, offset, first, BLOCK_COLS, ALIGNED).to(mu.dtype)
        z = reparameterize_sample(mu, logvar, eps)
        tl.store(z_ptr + first + tl.arange(0, BLOCK_COLS)[None, :], z.to(z_ptr.dtype.element_ty), mask=mask)
        if HAS_PRIOR_MU or HAS_PRIOR_LOGVAR:
            # A missing half of the prior is its N(0, 1) value: mean 0 or log-variance 0.
            prior_mu = tl.zeros_like(mu)
            prior_logvar = tl.zeros_like(mu)
            if HAS_PRIOR_MU:
                prior_mu = to_compute_type(tl.load(prior_mu_row + col, mask=mask, other=0.0))
            if HAS_PRIOR_LOGVAR:
                prior_logvar = to_compute_type(tl.load(prior_logvar_row + col, mask=mask, other=0.0))
            terms = log_weight_diag_normal(z, logvar, eps, prior_mu, prior_logvar)
        else:
            terms = log_weight_std_normal(z, logvar, eps)
        acc += tl.where(mask, terms, 0.0)
    tl.store(partial_ptr + row * splits + split, tl.sum(acc, axis=1)[:, None], mask=row_mask)


@autotune(ROW_CONFIGS, key=["rows", "cols", "samples"])
@triton.jit
def log_weights_backward_kernel(
    grad_z_ptr, grad_w_ptr, mu_ptr, logvar_ptr, prior_mu_ptr, prior_logvar_ptr,
    grad_mu_ptr, grad_logvar_ptr, grad_prior_mu_ptr, grad_prior_logvar_ptr, rng_state_ptr,
    rows, cols, samples, prior_mu_rows, prior_logvar_rows,
    HAS_GRAD_Z: tl.constexpr, HAS_GRAD_W: tl.constexpr, HAS_PRIOR_MU: tl.constexpr, HAS_PRIOR_LOGVAR: tl.constexpr,
    PRIOR_MU_GRAD: tl.constexpr, PRIOR_LOGVAR_GRAD: tl.constexpr,
    ALIGNED: tl.constexpr, COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):  # fmt: skip
    """Full-size gradients: sums over the K samples of a_k = g_z - g_w s_k and the prior's terms."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    seed = tl.load(rng_state_ptr)
    offset = tl.load(rng_state_ptr + 1)
    numel = tl.cast(rows, tl.int64) * cols
    row, col_start = elementwise_position(rows, cols, BLOCK_ROWS, BLOCK_COLS)
    col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
    row_mask = row < rows
    mask = row_mask & (col < cols)
    index = row * cols + col
    mu = to_compute_type(tl.load(mu_ptr + index, mask=mask, other=0.0))
    logvar = to_compute_type(tl.load(logvar_ptr + index, mask=mask, other=0.0))
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
    sum_a = tl.zeros_like(mu)
    sum_a_eps = tl.zeros_like(mu)
    sum_gw = tl.zeros_like(mu)
    sum_gw_s = tl.zeros_like(mu)
    sum_plv = tl.zeros_like(mu)
    for sample in range(samples):
        first = tl.cast(sample, tl.int64) * numel + row * cols + col_start
        eps = philox_normal(seed, offset, first, BLOCK_COLS, ALIGNED).to(mu.dtype)
        z = reparameterize_sample(mu, logvar, eps)
        grad_z = tl.zeros_like(mu)
        grad_w = tl.zeros_like(mu)
        if HAS_GRAD_Z:
            grad_z = to_compute_type(
                tl.load(grad_z_ptr + first + tl.arange(0, BLOCK_COLS)[None, :], mask=mask, other=0.0)
            )
        if HAS_GRAD_W:
            grad_w += tl.load(grad_w_ptr + sample * rows + row, mask=row_mask, other=0.0).to(mu.dtype)
        if HAS_PRIOR_MU or HAS_PRIOR_LOGVAR:
            diff = z - prior_mu
            score = log_weight_score(z, prior_mu, prior_logvar)
        else:
            diff = z
            score = z
        a = log_weight_grad_z(grad_z, grad_w, score)
        sum_a += a
        sum_a_eps += a * eps
        sum_gw += grad_w
        if PRIOR_MU_GRAD:
            sum_gw_s += grad_w * score
        if PRIOR_LOGVAR_GRAD:
            sum_plv += log_weight_grad_prior_logvar(grad_w, score, diff)
    out_dtype = grad_mu_ptr.dtype.element_ty
    tl.store(grad_mu_ptr + index, sum_a.to(out_dtype), mask=mask)
    tl.store(grad_logvar_ptr + index, log_weights_grad_logvar(logvar, sum_a_eps, sum_gw).to(out_dtype), mask=mask)
    if PRIOR_MU_GRAD:
        tl.store(grad_prior_mu_ptr + index, sum_gw_s.to(out_dtype), mask=mask)
    if PRIOR_LOGVAR_GRAD:
        tl.store(grad_prior_logvar_ptr + index, sum_plv.to(out_dtype), mask=mask)


def _operand_rows(t: Optional[torch.Tensor], cols: int) -> int:
    return 1 if t is None else max(t.numel() // cols, 1)


def _samples_shape(mu: torch.Tensor, num_samples: Optional[int]) -> tuple:
    return tuple(mu.shape) if num_samples is None else (num_samples, *mu.shape)


def reparameterize_log_weights(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    prior_mu: Optional[torch.Tensor],
    prior_logvar: Optional[torch.Tensor],
    num_samples: Optional[int],
    event_dims: int,
    generator: Optional[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, log_weights, rng_state): the samples of `reparameterize` and per sample and row log p(z) - log q(z|x)."""
    samples = num_samples or 1
    rng_state = draw_rng_state(mu, generator, mu.numel() * samples)
    rows, cols = row_shape(mu, (logvar, prior_mu, prior_logvar), event_dims)
    z = mu.new_empty(_samples_shape(mu, num_samples))
    if rows == 0 or cols == 0:
        return z, mu.new_zeros(rows * samples, dtype=row_sum_dtype(mu.dtype)), rng_state
    splits, chunk = split_plan(rows * samples, cols, mu.device)
    partial = mu.new_empty((rows * samples, splits), dtype=row_sum_dtype(mu.dtype))
    cols_pow2 = triton.next_power_of_2(cols)
    log_weights_forward_kernel[row_sum_grid(rows * samples, splits, cols_pow2)](
        mu, logvar, mu if prior_mu is None else prior_mu, mu if prior_logvar is None else prior_logvar,
        z, partial, rng_state,
        rows, cols, chunk, splits, samples, _operand_rows(prior_mu, cols), _operand_rows(prior_logvar, cols),
        HAS_PRIOR_MU=prior_mu is not None, HAS_PRIOR_LOGVAR=prior_logvar is not None,
        ALIGNED=cols % 4 == 0, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return z, finish_row_sums(partial), rng_state


def reparameterize_log_weights_backward(
    grad_z: Optional[torch.Tensor],
    grad_log_weights: Optional[torch.Tensor],
    mu: torch.Tensor,
    logvar: torch.Tensor,
    prior_mu: Optional[torch.Tensor],
    prior_logvar: Optional[torch.Tensor],
    rng_state: torch.Tensor,
    num_samples: Optional[int],
    event_dims: int,
    prior_mu_grad: bool,
    prior_logvar_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-size (grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar), eps regenerated from rng_state."""
    rows, cols = row_shape(mu, (logvar, prior_mu, prior_logvar), event_dims)
    n = mu.numel()
    grad_mu = mu.new_empty(mu.shape)
    grad_logvar = mu.new_empty(mu.shape)
    grad_prior_mu = mu.new_empty(n if prior_mu_grad else 0)
    grad_prior_logvar = mu.new_empty(n if prior_logvar_grad else 0)
    if rows * cols == 0:
        return grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar
    cols_pow2 = triton.next_power_of_2(cols)
    log_weights_backward_kernel[elementwise_grid(rows, cols, cols_pow2)](
        mu if grad_z is None else grad_z.to(mu.dtype).contiguous(),
        mu if grad_log_weights is None else grad_log_weights.to(row_sum_dtype(mu.dtype)).contiguous(),
        mu, logvar, mu if prior_mu is None else prior_mu, mu if prior_logvar is None else prior_logvar,
        grad_mu, grad_logvar, grad_prior_mu if prior_mu_grad else grad_mu,
        grad_prior_logvar if prior_logvar_grad else grad_mu, rng_state,
        rows, cols, num_samples or 1, _operand_rows(prior_mu, cols), _operand_rows(prior_logvar, cols),
        HAS_GRAD_Z=grad_z is not None, HAS_GRAD_W=grad_log_weights is not None,
        HAS_PRIOR_MU=prior_mu is not None, HAS_PRIOR_LOGVAR=prior_logvar is not None,
        PRIOR_MU_GRAD=prior_mu_grad, PRIOR_LOGVAR_GRAD=prior_logvar_grad,
        ALIGNED=cols % 4 == 0, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar
