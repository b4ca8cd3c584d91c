"""reparameterize: a Gaussian sample with its noise drawn inside the kernel and never stored."""

from __future__ import annotations

import torch
from torch import Tensor

from fastgen import reference

from . import _common

OP = "reparameterize"
_ROUTE = _common.route(OP)


def reparameterize(
    mu: Tensor,
    logvar: Tensor,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Reparameterized sample :math:`z = \mu + e^{l/2}\,\epsilon`, :math:`\epsilon \sim N(0, I)`, l = logvar.

    eps is drawn inside the kernel from design.md's Philox stream, seeded from
    the device's generator (or `generator`), and regenerated in backward: no
    tensor of it is kept. With `num_samples=K` the result has shape
    (K, *shape), each sample with its own noise. mu and logvar broadcast.
    Gradients: :math:`\partial/\partial\mu = \sum_k g_k`,
    :math:`\partial/\partial l = \tfrac12 e^{l/2} \sum_k g_k \epsilon_k`.
    """
    if (
        not isinstance(mu, Tensor)
        or not isinstance(logvar, Tensor)
        or not (num_samples is None or type(num_samples) is int)
        or not (generator is None or isinstance(generator, torch.Generator))
    ):
        _common.check_tensors(OP, mu=mu, logvar=logvar)
        _common.check_sampling(OP, num_samples, generator)
    op = _ROUTE[1 if mu.is_cuda else 0]
    if op is None:
        return _reference(mu, logvar, num_samples, generator)
    return op(mu, logvar, num_samples, generator)


def _reference(mu, logvar, num_samples, generator):
    _, _, device = _common.check_reference_inputs(OP, mu=mu, logvar=logvar)
    _common.check_reference_sampling(OP, num_samples, generator, device)
    return reference.reparameterize(mu, logvar, num_samples=num_samples, generator=generator)


def samples_like(mu: Tensor, logvar: Tensor, num_samples: int | None) -> Tensor:
    """Fake z: the broadcast shape, with a leading dim of num_samples when given."""
    shape, dtype = _common.promoted(mu, logvar)
    return mu.new_empty(shape if num_samples is None else (num_samples, *shape), dtype=dtype)


def _fake(mu, logvar, num_samples, generator):
    return samples_like(mu, logvar, num_samples)


def _fake_kernel(mu, logvar, num_samples, generator):
    return samples_like(mu, logvar, num_samples), mu.new_empty(2, dtype=torch.int64)


def _fake_kernel_backward(grad_z, logvar, rng_state, num_samples):
    return torch.empty_like(logvar)


def _fake_philox_normal(out, seed, offset):
    return out


def _fake_philox_state(like, generator, elements):
    return like.new_empty(2, dtype=torch.int64)


_common.register_fake(OP, _fake)
_common.register_fake(f"_{OP}", _fake_kernel)
_common.register_fake(f"_{OP}_backward", _fake_kernel_backward)
_common.register_fake("philox_normal_", _fake_philox_normal)
_common.register_fake("philox_state", _fake_philox_state)
_common.register(_common.OpInfo(OP, reparameterize, reference.reparameterize, "sample", ("mu", "logvar")))
