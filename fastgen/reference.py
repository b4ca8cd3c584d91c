"""The textbook PyTorch definition of every fastgen op.

This is the one place the formulas live in Python. The tests hold every
backend to these functions, and `fastgen` falls back to them when its
extension is not built. They take the same arguments as the public ops in
`fastgen.ops` (argument checking happens there) and are differentiable by
plain autograd.

The noise of `reparameterize` follows design.md's stream exactly: element i of
the flattened output is lane i % 4 of Philox4x32-10 (Triton's `randn4x`) at
counter base_offset + i // 4, written here with int64 tensor arithmetic.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)

_MASK32 = 0xFFFFFFFF
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57
# Triton's uint_to_uniform_float scale for 32-bit words: the largest value with
# (2^31 - 1) * scale < 1 in float32.
_UNIFORM_SCALE = 4.6566127342e-10


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of a * b for a 32-bit constant a and words b.

    b is split into 16-bit halves so that no partial product leaves int64.
    """
    low_product = a * (b & 0xFFFF)
    high_product = a * (b >> 16)
    low_sum = low_product + ((high_product & 0xFFFF) << 16)
    return (high_product >> 16) + (low_sum >> 32), low_sum & _MASK32


def philox4x32_10(seed: int | torch.Tensor, counters: torch.Tensor) -> list[torch.Tensor]:
    """Four 32-bit words (as int64 tensors) of Philox4x32-10 for each counter.

    The counter words are (counter low, counter high, 0, 0) and the key is
    (seed low, seed high), as in Triton's `randint4x`. `seed` may be a Python
    int or an int64 tensor (read on the device, so CUDA graphs replay it).
    """
    seed = torch.as_tensor(seed, dtype=torch.int64, device=counters.device)
    c0 = counters & _MASK32
    c1 = (counters >> 32) & _MASK32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    k0 = seed & _MASK32
    k1 = (seed >> 32) & _MASK32
    for _ in range(10):
        hi_b, lo_b = _mulhilo32(_PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mulhilo32(_PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _PHILOX_KEY_A) & _MASK32
        k1 = (k1 + _PHILOX_KEY_B) & _MASK32
    return [c0, c1, c2, c3]


def _uniform(word: torch.Tensor) -> torch.Tensor:
    """Triton's uint_to_uniform_float: the word as int32, ~x for negatives, times the scale."""
    as_int32 = torch.where(word >= 2**31, word - 2**32, word)
    folded = torch.where(as_int32 < 0, -as_int32 - 1, as_int32)
    return folded.to(torch.float32) * _UNIFORM_SCALE


def philox_normal(
    numel: int, seed: int | torch.Tensor, offset: int | torch.Tensor = 0, device=None
) -> torch.Tensor:
    """Elements [0, numel) of the stream (seed, offset) as float32 N(0, 1) noise.

    Element i is lane i % 4 of randn4x(seed, offset + i // 4), each pair of
    lanes turned into normals by Box-Muller: r = sqrt(-2 log max(u1, 1e-7)),
    theta = 2 pi u2, normals (r cos theta, r sin theta).
    """
    groups = (numel + 3) // 4
    counters = torch.arange(groups, dtype=torch.int64, device=device)
    counters = counters + torch.as_tensor(offset, dtype=torch.int64, device=device)
    u = [_uniform(word) for word in philox4x32_10(seed, counters)]
    normals = []
    for u1, u2 in ((u[0], u[1]), (u[2], u[3])):
        radius = torch.sqrt(-2.0 * torch.log(torch.clamp(u1, min=1.0e-7)))
        theta = 6.283185307179586 * u2
        normals += [radius * torch.cos(theta), radius * torch.sin(theta)]
    return torch.stack(normals, dim=-1).reshape(-1)[:numel]


def draw_stream(like: torch.Tensor, elements: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """int64 [seed, offset] of a call drawing `elements` normals on like's device.

    Taken as every backend takes it, through fastgen's op philox_state (so the
    reference draws the kernels' noise for the same generator state). Where
    the extension has no kernels for the device, a fresh seed drawn from the
    generator as tensor work, offset 0.
    """
    try:
        return torch.ops.fastgen.philox_state(like, generator, elements)
    except (AttributeError, NotImplementedError):
        state = torch.zeros(2, dtype=torch.int64, device=like.device)
        state[0].random_(-(2**63), None, generator=generator)
        return state


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.mean()
    return per_sample


def _sum_events(terms: torch.Tensor, event_dims: int) -> torch.Tensor:
    if event_dims == 0:
        return terms
    return terms.sum(dim=tuple(range(terms.dim() - event_dims, terms.dim())))


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32: half types compute in float32."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def philox_uniform(numel: int, seed: int | torch.Tensor, offset: int | torch.Tensor = 0, device=None) -> torch.Tensor:
    """numel float32 uniforms in [0, 1): element i is Triton's tl.rand(seed, offset + i).

    That is word 0 of Philox4x32-10 at counter offset + i, through
    uint_to_uniform_float: one counter per value (the gradient penalty's
    interpolation weights, one per sample).
    """
    counters = torch.arange(numel, dtype=torch.int64, device=device)
    counters = counters + torch.as_tensor(offset, dtype=torch.int64, device=device)
    return _uniform(philox4x32_10(seed, counters)[0])


def _noise(like: torch.Tensor, shape, generator) -> torch.Tensor:
    """float32 N(0, I) noise of `shape` from the stream of like's device (draw_stream)."""
    numel = math.prod(shape)
    seed, offset = draw_stream(like, numel, generator)
    return philox_normal(numel, seed, offset, device=like.device).reshape(shape)


def reparameterize(mu, logvar, *, num_samples=None, generator=None):
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I); shape (num_samples, *mu.shape) when given."""
    shape = torch.broadcast_shapes(mu.shape, logvar.shape)
    if num_samples is not None:
        shape = (num_samples, *shape)
    eps = _noise(mu, shape, generator)
    dtype = torch.promote_types(mu.dtype, logvar.dtype)
    return (mu + torch.exp(0.5 * logvar) * eps.to(_compute_dtype(mu, logvar))).to(dtype)


def gaussian_kl(mu, logvar, prior_mu=None, prior_logvar=None, *, event_dims=1, reduction="none"):
    """KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)), summed over the event dims.

    Per element: (plv - lv + (e^lv + (mu - pm)^2) e^-plv - 1) / 2, with pm = 0 and
    plv = 0 for a missing prior (N(0, I)): (e^lv + mu^2 - 1 - lv) / 2.
    """
    dtype = _compute_dtype(mu, logvar, prior_mu, prior_logvar)
    mu, logvar = mu.to(dtype), logvar.to(dtype)
    if prior_mu is None and prior_logvar is None:
        terms = 0.5 * (torch.exp(logvar) + mu * mu - 1.0 - logvar)
    else:
        pm = torch.zeros((), dtype=dtype, device=mu.device) if prior_mu is None else prior_mu.to(dtype)
        plv = torch.zeros((), dtype=dtype, device=mu.device) if prior_logvar is None else prior_logvar.to(dtype)
        terms = 0.5 * (plv - logvar + (torch.exp(logvar) + (mu - pm) ** 2) * torch.exp(-plv) - 1.0)
    return _reduce(_sum_events(terms, event_dims), reduction)


def reparameterize_kl(mu, logvar, *, num_samples=None, generator=None, event_dims=1):
    """(reparameterize(mu, logvar), per-sample KL(N(mu, e^logvar) || N(0, I)))."""
    z = reparameterize(mu, logvar, num_samples=num_samples, generator=generator)
    return z, gaussian_kl(mu, logvar, event_dims=event_dims)


def reparameterize_log_weights(mu, logvar, *, num_samples=None, generator=None, event_dims=1, prior_mu=None,
                               prior_logvar=None):
    """(z, log p(z) - log q(z|x)): the samples of reparameterize and, per sample, IWAE's log-weight terms.

    z_k = mu + exp(logvar / 2) eps_k with eps_k the noise of `reparameterize`
    (the same z for the same generator state), and over the event dims
    log q(z_k|x) = -1/2 sum(log 2 pi + logvar + eps_k^2),
    log p(z_k) = -1/2 sum(log 2 pi + prior_logvar + (z_k - prior_mu)^2 e^-prior_logvar)
    (N(0, I) when the prior is None: -1/2 sum(log 2 pi + z_k^2)).
    """
    tensors = [t for t in (mu, logvar, prior_mu, prior_logvar) if t is not None]
    shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    samples_shape = shape if num_samples is None else (num_samples, *shape)
    compute = _compute_dtype(*tensors)
    eps = _noise(mu, samples_shape, generator).to(compute)
    mu_c, logvar_c = mu.to(compute).expand(shape), logvar.to(compute).expand(shape)
    z = mu_c + torch.exp(0.5 * logvar_c) * eps
    log_q = -0.5 * (LOG_2PI + logvar_c + eps * eps)
    if prior_mu is None and prior_logvar is None:
        log_p = -0.5 * (LOG_2PI + z * z)
    else:
        pm = torch.zeros((), dtype=compute, device=mu.device) if prior_mu is None else prior_mu.to(compute)
        plv = torch.zeros((), dtype=compute, device=mu.device) if prior_logvar is None else prior_logvar.to(compute)
        log_p = -0.5 * (LOG_2PI + plv + (z - pm) ** 2 * torch.exp(-plv))
    dtype = torch.promote_types(mu.dtype, logvar.dtype)
    for t in (prior_mu, prior_logvar):
        dtype = dtype if t is None else torch.promote_types(dtype, t.dtype)
    return z.to(dtype), _sum_events(log_p - log_q, event_dims)


def grad_norm_penalty(grad, center=1.0, event_dims=...):
    """(||grad||_2 - center)^2, the norm over the last event_dims dims (default ...: every dim but the first)."""
    if event_dims is ...:
        event_dims = max(grad.dim() - 1, 0)
    g = grad.to(_compute_dtype(grad))
    if event_dims == 0:
        norm = g.abs()
    else:
        norm = torch.linalg.vector_norm(g, dim=tuple(range(g.dim() - event_dims, g.dim())))
    return (norm - center) ** 2


def random_interpolate(real, fake, generator=None):
    """eps_i real_i + (1 - eps_i) fake_i, one eps_i ~ U[0, 1) per sample i (dim 0), eps_i = tl.rand(seed, offset + i).

    The stream's counters are taken as for 4 normals per sample (draw_stream), so
    every backend advances a generator alike.
    """
    shape = torch.broadcast_shapes(real.shape, fake.shape)
    rows = shape[0] if len(shape) else 1
    seed, offset = draw_stream(real, 4 * rows, generator)
    compute = _compute_dtype(real, fake)
    weights = philox_uniform(rows, seed, offset, device=real.device).to(compute)
    weights = weights.reshape(rows, *([1] * (len(shape) - 1))) if len(shape) else weights.reshape(())
    out = weights * real.to(compute) + (1 - weights) * fake.to(compute)
    return out.to(torch.promote_types(real.dtype, fake.dtype))


def gradient_penalty(critic, real, fake, *, weight=10.0, center=1.0, generator=None):
    """WGAN-GP: weight * mean_i (||grad_x D(x_i)||_2 - center)^2 at x_i = eps_i real_i + (1 - eps_i) fake_i.

    The gradient is taken with create_graph=True, so the penalty trains the critic.
    """
    with torch.enable_grad():
        interpolate = random_interpolate(real, fake, generator)
        if not interpolate.requires_grad:
            interpolate.requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(interpolate).sum(), interpolate, create_graph=True)
        return weight * grad_norm_penalty(grad, center).mean()


def bernoulli_log_likelihood(logits, target, *, event_dims=1, reduction="none"):
    """sum(target * logits - softplus(logits)) over the event dims: log Bernoulli(target; sigmoid(logits))."""
    dtype = _compute_dtype(logits, target)
    logits, target = logits.to(dtype), target.to(dtype)
    terms = target * logits - torch.nn.functional.softplus(logits)
    return _reduce(_sum_events(terms, event_dims), reduction)


def gaussian_log_likelihood(x, mean, logvar=None, *, event_dims=1, reduction="none"):
    """sum over the event dims of -(log 2 pi + logvar + (x - mean)^2 e^-logvar) / 2 (logvar = 0 if None)."""
    dtype = _compute_dtype(x, mean, logvar)
    diff = x.to(dtype) - mean.to(dtype)
    if logvar is None:
        terms = -0.5 * (LOG_2PI + diff * diff)
    else:
        logvar = logvar.to(dtype)
        terms = -0.5 * (LOG_2PI + logvar + diff * diff * torch.exp(-logvar))
    return _reduce(_sum_events(terms, event_dims), reduction)


@torch.no_grad()
def clamp_(tensors, min, max):
    """Clamps every tensor of the list to [min, max] in place; a bound beyond a dtype's range clamps nothing."""
    for t in tensors:
        largest = torch.finfo(t.dtype).max
        t.clamp_(min if min >= -largest else -math.inf, max if max <= largest else math.inf)
