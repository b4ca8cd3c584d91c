"""reparameterize_kl: a Gaussian sample and its KL divergence to N(0, I) in one pass."""

from __future__ import annotations

import torch
from torch import Tensor

from fastgen import reference

from . import _common
from .reparameterize import samples_like

OP = "reparameterize_kl"
_ROUTE = _common.route(OP)


def reparameterize_kl(
    mu: Tensor,
    logvar: Tensor,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    event_dims: int = 1,
) -> tuple[Tensor, Tensor]:
    r"""One pass over (mu, logvar): the sample of `reparameterize` and the KL to N(0, I).

    Returns (z, kl): z exactly as `reparameterize` draws it for the same
    generator state, and :math:`\mathrm{kl} = \tfrac12 \sum (e^{l} + \mu^2 - 1 - l)`
    over the last `event_dims` dims (l = logvar), shaped like the batch dims.
    Half inputs give a float32 kl under autocast and their own dtype otherwise.
    """
    if (
        type(event_dims) is not int
        or not isinstance(mu, Tensor)
        or not isinstance(logvar, Tensor)
        or not (num_samples is None or type(num_samples) is int)
        or not (generator is None or isinstance(generator, torch.Generator))
    ):
        _common.check_tensors(OP, mu=mu, logvar=logvar)
        _common.check_sampling(OP, num_samples, generator)
        _common.check_event_dims(OP, event_dims)
    op = _ROUTE[1 if mu.is_cuda else 0]
    if op is None:
        return _reference(mu, logvar, num_samples, generator, event_dims)
    z, kl = op(mu, logvar, num_samples, event_dims, generator)
    return z, (kl if kl.dtype is mu.dtype else _common.result_dtype(kl, mu, logvar))


def _reference(mu, logvar, num_samples, generator, event_dims):
    shape, _, device = _common.check_reference_inputs(OP, mu=mu, logvar=logvar)
    _common.check_reference_event_dims(OP, event_dims, len(shape))
    _common.check_reference_sampling(OP, num_samples, generator, device)
    z, kl = reference.reparameterize_kl(mu, logvar, num_samples=num_samples, generator=generator, event_dims=event_dims)
    return z, _common.result_dtype(kl, mu, logvar)


def _fake(mu, logvar, num_samples, event_dims, generator):
    return samples_like(mu, logvar, num_samples), _common.fake_rows_result((mu, logvar), event_dims, "none")


def _fake_kernel(mu, logvar, num_samples, event_dims, generator):
    return (
        samples_like(mu, logvar, num_samples),
        _common.fake_rows(mu, (logvar,), event_dims),
        mu.new_empty(2, dtype=torch.int64),
    )


def _fake_kernel_backward(grad_z, grad_kl, mu, logvar, rng_state, num_samples, event_dims):
    return torch.empty_like(mu), torch.empty_like(logvar)


_common.register_fake(OP, _fake)
_common.register_fake(f"_{OP}", _fake_kernel)
_common.register_fake(f"_{OP}_backward", _fake_kernel_backward)
_common.register(_common.OpInfo(OP, reparameterize_kl, reference.reparameterize_kl, "sample", ("mu", "logvar")))
