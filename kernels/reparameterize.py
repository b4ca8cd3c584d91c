"""Triton kernels of reparameterize (z = mu + exp(logvar / 2) * eps) and reparameterize_kl.

eps is drawn inside the kernels from design.md's stream: element i of the
flattened z (of shape (K, *mu.shape) with K samples, sample k at k * numel)
is lane i % 4 of tl.randn4x(seed, offset + i // 4). seed and offset are read
on the device from rng_state = int64 [seed, offset], drawn on the device from
its generator by fastgen's op philox_state (see draw_rng_state) as ordinary
tensor work, so a captured CUDA graph draws fresh noise on every replay.
Backward regenerates eps from rng_state; no tensor of it is kept.
"""

import warnings
from typing import Optional

import torch
import triton
import triton.language as tl

from ._math import (
    kl_std_normal,
    kl_std_normal_grad_logvar,
    philox_normal,
    reparameterize_grad_logvar,
    reparameterize_sample,
    to_compute_type,
)
from ._tiles import (
    FLAT_CONFIGS,
    ROW_CONFIGS,
    autotune,
    elementwise_grid,
    elementwise_position,
    finish_row_sums,
    flat_grid,
    row_shape,
    row_sum_dtype,
    row_sum_grid,
    row_sum_position,
    split_plan,
)


def draw_rng_state(like: torch.Tensor, generator: Optional[torch.Generator], elements: int) -> torch.Tensor:
    """int64 [seed, offset] on like's device for a call drawing `elements` normals.

    Taken from the device's generator by fastgen's op philox_state, as the C++
    kernels take it, so one generator state gives the same noise on every
    backend; on CUDA written on the device, so a captured CUDA graph draws a
    fresh stream on every replay. Where the extension has no kernels for the
    device (built without nvcc), a fresh seed drawn as tensor work, offset 0:
    still reproducible and graph-safe, but another stream than the C++ kernels'.
    """
    try:
        return torch.ops.fastgen.philox_state(like, generator, elements)
    except NotImplementedError:
        warnings.warn(
            f"fastgen: no philox_state kernel for {like.device.type} (fastgen built without its CUDA kernels); "
            "the Triton kernels draw another noise stream than the C++ kernels would",
            RuntimeWarning,
            stacklevel=3,
        )
        rng_state = torch.zeros(2, dtype=torch.int64, device=like.device)
        rng_state[0].random_(-(2**63), None, generator=generator)
        return rng_state


def _samples_shape(mu: torch.Tensor, num_samples: Optional[int]) -> tuple:
    return tuple(mu.shape) if num_samples is None else (num_samples, *mu.shape)


# ---------------------------------------------------------------- reparameterize


@autotune(FLAT_CONFIGS, key=["numel", "samples"])
@triton.jit
def reparameterize_forward_kernel(
    mu_ptr, logvar_ptr, z_ptr, rng_state_ptr, numel, samples, ALIGNED: tl.constexpr, BLOCK: tl.constexpr
):
    """z[k * numel + j] = mu[j] + exp(logvar[j] / 2) * eps[k * numel + j]; one block of mu serves every sample."""
    seed = tl.load(rng_state_ptr)
    offset = tl.load(rng_state_ptr + 1)
    start = tl.program_id(0).to(tl.int64) * BLOCK
    index = start + tl.arange(0, BLOCK)
    mask = index < numel
    mu = to_compute_type(tl.load(mu_ptr + index, mask=mask, other=0.0))
    logvar = to_compute_type(tl.load(logvar_ptr + index, mask=mask, other=0.0))
    for sample in range(samples):
        first = tl.cast(sample, tl.int64) * numel + start
        eps = philox_normal(seed, offset, first, BLOCK, ALIGNED).to(mu.dtype)
        z = reparameterize_sample(mu, logvar, eps)
        tl.store(z_ptr + first + tl.arange(0, BLOCK), z.to(z_ptr.dtype.element_ty), mask=mask)


@autotune(FLAT_CONFIGS, key=["numel", "samples"])
@triton.jit
def reparameterize_backward_kernel(
    grad_z_ptr, logvar_ptr, grad_logvar_ptr, rng_state_ptr, numel, samples,
    ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """grad_logvar[j] = exp(logvar[j] / 2) / 2 * sum_k grad_z[k * numel + j] * eps[k * numel + j]."""
    seed = tl.load(rng_state_ptr)
    offset = tl.load(rng_state_ptr + 1)
    start = tl.program_id(0).to(tl.int64) * BLOCK
    index = start + tl.arange(0, BLOCK)
    mask = index < numel
    logvar = to_compute_type(tl.load(logvar_ptr + index, mask=mask, other=0.0))
    sum_grad_eps = tl.zeros_like(logvar)
    for sample in range(samples):
        first = tl.cast(sample, tl.int64) * numel + start
        eps = philox_normal(seed, offset, first, BLOCK, ALIGNED).to(logvar.dtype)
        grad = to_compute_type(tl.load(grad_z_ptr + first + tl.arange(0, BLOCK), mask=mask, other=0.0))
        sum_grad_eps += grad * eps
    grad_logvar = reparameterize_grad_logvar(logvar, sum_grad_eps)
    tl.store(grad_logvar_ptr + index, grad_logvar.to(grad_logvar_ptr.dtype.element_ty), mask=mask)


def _flat_aligned(numel: int, samples: int) -> bool:
    """Whether every sample's blocks start on a multiple of 4 (the fast noise path)."""
    return samples == 1 or numel % 4 == 0


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, rng_state: torch.Tensor, num_samples: Optional[int]
) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps with eps from rng_state; shape (num_samples, *mu.shape) when given."""
    z = mu.new_empty(_samples_shape(mu, num_samples))
    numel, samples = mu.numel(), num_samples or 1
    if numel == 0:
        return z
    reparameterize_forward_kernel[flat_grid(numel)](
        mu, logvar, z, rng_state, numel, samples, ALIGNED=_flat_aligned(numel, samples)
    )
    return z


def reparameterize_backward(
    grad_z: torch.Tensor, logvar: torch.Tensor, rng_state: torch.Tensor, num_samples: Optional[int]
) -> torch.Tensor:
    """grad_logvar = exp(logvar / 2) / 2 * sum_k grad_z_k * eps_k, eps regenerated from rng_state."""
    grad_logvar = torch.empty_like(logvar)
    numel, samples = logvar.numel(), num_samples or 1
    if numel == 0:
        return grad_logvar
    reparameterize_backward_kernel[flat_grid(numel)](
        grad_z.to(logvar.dtype).contiguous(), logvar, grad_logvar, rng_state, numel, samples,
        ALIGNED=_flat_aligned(numel, samples),
    )  # fmt: skip
    return grad_logvar



# ---------------------------------------------------------------- reparameterize_kl


@autotune(ROW_CONFIGS, key=["rows", "cols", "samples"])
@triton.jit
def reparameterize_kl_forward_kernel(
    mu_ptr, logvar_ptr, z_ptr, partial_ptr, rng_state_ptr,
    rows, cols, chunk, splits, samples,
    ALIGNED: tl.constexpr, COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):  # fmt: skip
    """In one pass over (mu, logvar): every sample of z and partial[r, s], the KL to N(0, I) of split s of row r."""
    BLOCK_COLS: tl.constexpr = TILE if TILE < COLS_POW2 else COLS_POW2
    BLOCK_ROWS: tl.constexpr = TILE // BLOCK_COLS
    seed = tl.load(rng_state_ptr)
    offset = tl.load(rng_state_ptr + 1)
    numel = tl.cast(rows, tl.int64) * cols
    row, split, col_begin, col_end = row_sum_position(rows, cols, chunk, splits, BLOCK_ROWS)
    row_mask = row < rows
    acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], dtype=partial_ptr.dtype.element_ty)
    for col_start in range(col_begin, col_end, BLOCK_COLS):
        col = col_start + tl.arange(0, BLOCK_COLS)[None, :]
        mask = row_mask & (col < col_end)
        mu = to_compute_type(tl.load(mu_ptr + row * cols + col, mask=mask, other=0.0))
        logvar = to_compute_type(tl.load(logvar_ptr + row * cols + col, mask=mask, other=0.0))
        acc += tl.where(mask, kl_std_normal(mu, logvar), 0.0)
        for sample in range(samples):
            first = tl.cast(sample, tl.int64) * numel + row * cols + col_start
            eps = philox_normal(seed, offset, first, BLOCK_COLS, ALIGNED).to(mu.dtype)
            z = reparameterize_sample(mu, logvar, eps)
            tl.store(z_ptr + first + tl.arange(0, BLOCK_COLS)[None, :], z.to(z_ptr.dtype.element_ty), mask=mask)
    tl.store(partial_ptr + row * splits + split, tl.sum(acc, axis=1)[:, None], mask=row_mask)


@autotune(ROW_CONFIGS, key=["rows", "cols", "samples"])
@triton.jit
def reparameterize_kl_backward_kernel(
    grad_z_ptr, grad_kl_ptr, mu_ptr, logvar_ptr, grad_mu_ptr, grad_logvar_ptr, rng_state_ptr,
    rows, cols, samples,
    ALIGNED: tl.constexpr, COLS_POW2: tl.constexpr, TILE: tl.constexpr,
):  # fmt: skip
    """grad_mu = sum_k g_k + g_kl * mu; grad_logvar = std / 2 * sum_k g_k eps_k + g_kl * (e^logvar - 1) / 2."""
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
    sum_grad = tl.zeros_like(mu)
    sum_grad_eps = tl.zeros_like(mu)
    for sample in range(samples):
        first = tl.cast(sample, tl.int64) * numel + row * cols + col_start
        eps = philox_normal(seed, offset, first, BLOCK_COLS, ALIGNED).to(mu.dtype)
        grad = to_compute_type(tl.load(grad_z_ptr + first + tl.arange(0, BLOCK_COLS)[None, :], mask=mask, other=0.0))
        sum_grad += grad
        sum_grad_eps += grad * eps
    grad_kl = tl.load(grad_kl_ptr + row, mask=row_mask, other=0.0).to(mu.dtype)
    grad_mu = sum_grad + grad_kl * mu
    grad_logvar = reparameterize_grad_logvar(logvar, sum_grad_eps) + grad_kl * kl_std_normal_grad_logvar(logvar)
    out_dtype = grad_mu_ptr.dtype.element_ty
    tl.store(grad_mu_ptr + index, grad_mu.to(out_dtype), mask=mask)
    tl.store(grad_logvar_ptr + index, grad_logvar.to(out_dtype), mask=mask)


def reparameterize_kl(
    mu: torch.Tensor, logvar: torch.Tensor, rng_state: torch.Tensor, num_samples: Optional[int], event_dims: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, kl): the samples of `reparameterize` for the same rng_state and per-row KL(N(mu, e^logvar) || N(0, I))."""
    rows, cols = row_shape(mu, (logvar,), event_dims)
    z = mu.new_empty(_samples_shape(mu, num_samples))
    if rows == 0 or cols == 0:
        return z, mu.new_zeros(rows, dtype=row_sum_dtype(mu.dtype))
    samples = num_samples or 1
    splits, chunk = split_plan(rows, cols, mu.device)
    partial = mu.new_empty((rows, splits), dtype=row_sum_dtype(mu.dtype))
    cols_pow2 = triton.next_power_of_2(cols)
    reparameterize_kl_forward_kernel[row_sum_grid(rows, splits, cols_pow2)](
        mu, logvar, z, partial, rng_state,
        rows, cols, chunk, splits, samples,
        ALIGNED=cols % 4 == 0, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return z, finish_row_sums(partial)


def reparameterize_kl_backward(
    grad_z: Optional[torch.Tensor],
    grad_kl: Optional[torch.Tensor],
    mu: torch.Tensor,
    logvar: torch.Tensor,
    rng_state: torch.Tensor,
    num_samples: Optional[int],
    event_dims: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_mu, grad_logvar) from the gradients of z and of the per-row KL (absent: zero), eps regenerated."""
    rows, cols = row_shape(mu, (logvar,), event_dims)
    if grad_z is None:
        grad_z = mu.new_zeros((num_samples or 1, *mu.shape))
    if grad_kl is None:
        grad_kl = mu.new_zeros(rows, dtype=row_sum_dtype(mu.dtype))
    grad_mu = torch.empty_like(mu)
    grad_logvar = torch.empty_like(logvar)
    if rows * cols == 0:
        return grad_mu, grad_logvar
    cols_pow2 = triton.next_power_of_2(cols)
    reparameterize_kl_backward_kernel[elementwise_grid(rows, cols, cols_pow2)](
        grad_z.to(mu.dtype).contiguous(), grad_kl.to(row_sum_dtype(mu.dtype)).contiguous(),
        mu, logvar, grad_mu, grad_logvar, rng_state,
        rows, cols, num_samples or 1,
        ALIGNED=cols % 4 == 0, COLS_POW2=cols_pow2,
    )  # fmt: skip
    return grad_mu, grad_logvar

