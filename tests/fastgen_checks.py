"""Helpers shared by fastgen's tests: tolerances, inputs, the torch oracles, a dispatch counter.

The oracles are torch.distributions / torch.nn.functional, evaluated in
float64, never fastgen.reference (which tests/test_reference.py checks
against the same oracles).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence
from torch.utils._python_dispatch import TorchDispatchMode

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF = (torch.float16, torch.bfloat16)

# (rtol, atol) of a result in each dtype against the float64 oracle computed on
# the same (already rounded) inputs. Half types compute in float32 and round
# once at the end, so their error is about one unit in the last place.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}

# (shape, event_dims) cases: scalars per element, vectors, images, rows longer
# than a kernel block (256) and a row longer than a parallel chunk (16384).
SHAPES = [
    ((7,), 0),
    ((7,), 1),
    ((4, 9), 1),
    ((4, 9), 2),
    ((3, 4, 5), 0),
    ((3, 4, 5), 1),
    ((3, 4, 5), 2),
    ((2, 3, 300), 1),
    ((2, 3, 300), 3),
    # Element-wise in whole 128-bit groups, an operand of the last dimension repeating in whole groups.
    ((6, 16), 0),
]
LONG_ROW = ((2, 20000), 1)


def assert_close(actual, expected, dtype=None, rtol=None, atol=None, scale=1.0):
    """actual == expected (compared in float64) within the tolerance of `dtype` (actual's by default)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    dtype = dtype or actual.dtype
    drtol, datol = TOL[dtype]
    torch.testing.assert_close(
        actual.detach().to("cpu", torch.float64),
        expected.detach().to("cpu", torch.float64),
        rtol=(rtol if rtol is not None else drtol) * scale,
        atol=(atol if atol is not None else datol) * scale,
    )


def rand(shape, dtype=torch.float32, device="cpu", low=-1.5, high=1.5, seed=0, requires_grad=False):
    """Uniform values in [low, high), reproducible, rounded to `dtype`."""
    g = torch.Generator().manual_seed(seed)
    t = (torch.rand(shape, generator=g, dtype=torch.float64) * (high - low) + low).to(dtype).to(device)
    return t.requires_grad_(requires_grad)


def f64(t):
    return None if t is None else t.to(torch.float64)


def reduce(per_sample, reduction):
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.mean()
    return per_sample


def _event_sum(terms, event_dims):
    if event_dims == 0:
        return terms
    return terms.sum(dim=tuple(range(terms.dim() - event_dims, terms.dim())))


def normal(mu, logvar, event_dims):
    d = Normal(mu, torch.exp(0.5 * logvar))
    return Independent(d, event_dims) if event_dims > 0 else d


def oracle_gaussian_kl(mu, logvar, prior_mu=None, prior_logvar=None, event_dims=1, reduction="none"):
    """KL via torch.distributions.kl_divergence of Independent Normals, float64."""
    mu, logvar = f64(mu), f64(logvar)
    shape = torch.broadcast_shapes(*(t.shape for t in (mu, logvar, prior_mu, prior_logvar) if t is not None))
    standard = torch.zeros((), dtype=torch.float64, device=mu.device)  # the N(0, I) prior's parameters
    pm = standard if prior_mu is None else f64(prior_mu)
    plv = standard if prior_logvar is None else f64(prior_logvar)
    pm, plv = pm.to(torch.float64).expand(shape), plv.to(torch.float64).expand(shape)
    mu, logvar = mu.expand(shape), logvar.expand(shape)
    kl = kl_divergence(normal(mu, logvar, event_dims), normal(pm, plv, event_dims))
    return reduce(kl, reduction)


def oracle_bernoulli(logits, target, event_dims=1, reduction="none"):
    """-BCE-with-logits summed over the event dims, float64."""
    logits, target = f64(logits), f64(target)
    shape = torch.broadcast_shapes(logits.shape, target.shape)
    terms = -F.binary_cross_entropy_with_logits(logits.expand(shape), target.expand(shape), reduction="none")
    return reduce(_event_sum(terms, event_dims), reduction)


def oracle_gaussian_ll(x, mean, logvar=None, event_dims=1, reduction="none"):
    """Normal(mean, e^(logvar/2)).log_prob(x) summed over the event dims, float64."""
    x, mean = f64(x), f64(mean)
    lv = torch.zeros((), dtype=torch.float64, device=x.device) if logvar is None else f64(logvar)
    shape = torch.broadcast_shapes(x.shape, mean.shape, lv.shape)
    log_prob = normal(mean.expand(shape), lv.expand(shape), event_dims).log_prob(x.expand(shape))
    return reduce(log_prob, reduction)


def seeded(fn, seed=1234):
    """fn(..., generator=g) with a freshly seeded CPU generator on every call: deterministic for gradcheck."""

    def wrapped(*args, **kwargs):
        device = next(a for a in args if isinstance(a, torch.Tensor)).device
        g = torch.Generator(device=device).manual_seed(seed)
        return fn(*args, generator=g, **kwargs)

    return wrapped


class DispatchedOps(TorchDispatchMode):
    """Records the name of every operator that reaches the dispatcher, in order, in ``names``."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))
