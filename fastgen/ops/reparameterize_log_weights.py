"""reparameterize_log_weights: IWAE's samples and their log p(z) - log q(z|x) in one pass."""

from __future__ import annotations

import torch
from torch import Tensor

from fastgen import reference

from . import _common
from .reparameterize import samples_like

OP = "reparameterize_log_weights"
_ROUTE = _common.route(OP)


def reparameterize_log_weights(
    mu: Tensor,
    logvar: Tensor,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    event_dims: int = 1,
    prior_mu: Tensor | None = None,
    prior_logvar: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Samples of q = N(mu, e^logvar) and, per sample, :math:`\log p(z) - \log q(z\mid x)`, in one pass.

    Returns (z, log_p_minus_log_q): z exactly as `reparameterize` draws it for
    the same generator state (:math:`z_k = \mu + e^{l/2}\epsilon_k`, l = logvar),
    and summed over the last `event_dims` dims

    .. math:: \log p(z_k) - \log q(z_k\mid x) = \tfrac12 \sum \left(l + \epsilon_k^2 - p
              - (z_k - m)^2 e^{-p}\right),

    from :math:`\log q(z_k\mid x) = -\tfrac12\sum(\log 2\pi + l + \epsilon_k^2)` and the prior
    :math:`\log p(z_k) = -\tfrac12\sum(\log 2\pi + p + (z_k - m)^2 e^{-p})`
    (m = prior_mu, p = prior_logvar; a missing half is N(0, 1)'s, so no prior is N(0, I)).
    Add the decoder's :math:`\log p(x\mid z_k)` to get IWAE's log-weights. With
    `num_samples=K`, z has shape (K, *shape) and the log-weights (K, *batch).
    Every argument broadcasts (a learned prior of shape (D,) is read once per
    row). Backward regenerates eps: nothing of the K samples' size is kept.
    Half inputs give float32 log-weights under autocast and their own dtype otherwise.
    """
    if (
        type(event_dims) is not int
        or not isinstance(mu, Tensor)
        or not isinstance(logvar, Tensor)
        or not (num_samples is None or type(num_samples) is int)
        or not (generator is None or isinstance(generator, torch.Generator))
        or not (prior_mu is None or isinstance(prior_mu, Tensor))
        or not (prior_logvar is None or isinstance(prior_logvar, Tensor))
    ):
        _common.check_tensors(
            OP, ("prior_mu", "prior_logvar"), mu=mu, logvar=logvar, prior_mu=prior_mu, prior_logvar=prior_logvar
        )
        _common.check_sampling(OP, num_samples, generator)
        _common.check_event_dims(OP, event_dims)
    op = _ROUTE[1 if mu.is_cuda else 0]
    if op is None:
        return _reference(mu, logvar, num_samples, generator, event_dims, prior_mu, prior_logvar)
    z, log_weights = op(mu, logvar, prior_mu, prior_logvar, num_samples, event_dims, generator)
    if log_weights.dtype is not mu.dtype:
        log_weights = _common.result_dtype(log_weights, mu, logvar, prior_mu, prior_logvar)
    return z, log_weights


def _reference(mu, logvar, num_samples, generator, event_dims, prior_mu, prior_logvar):
    shape, _, device = _common.check_reference_inputs(
        OP, mu=mu, logvar=logvar, prior_mu=prior_mu, prior_logvar=prior_logvar
    )
    _common.check_reference_event_dims(OP, event_dims, len(shape))
    _common.check_reference_sampling(OP, num_samples, generator, device)
    z, log_weights = reference.reparameterize_log_weights(
        mu, logvar, num_samples=num_samples, generator=generator, event_dims=event_dims,
        prior_mu=prior_mu, prior_logvar=prior_logvar,
    )  # fmt: skip
    return z, _common.result_dtype(log_weights, mu, logvar, prior_mu, prior_logvar)


def _weights_like(tensors, num_samples, event_dims):
    """Fake log-weights: (num_samples, *batch) or the batch shape, in the sum dtype."""
    shape, dtype = _common.promoted(*tensors)
    batch = tuple(shape[: len(shape) - event_dims])
    return tensors[0].new_empty(batch if num_samples is None else (num_samples, *batch), dtype=_common.sum_dtype(dtype))


def _fake(mu, logvar, prior_mu, prior_logvar, num_samples, event_dims, generator):
    tensors = (mu, logvar, prior_mu, prior_logvar)
    shape, dtype = _common.promoted(*tensors)
    z = mu.new_empty(shape if num_samples is None else (num_samples, *shape), dtype=dtype)
    return z, _weights_like(tensors, num_samples, event_dims)


def _fake_kernel(mu, logvar, prior_mu, prior_logvar, num_samples, event_dims, generator):
    rows = _common.fake_rows(mu, (logvar, prior_mu, prior_logvar), event_dims).shape[0]
    return (
        samples_like(mu, logvar, num_samples),
        mu.new_empty(rows * (num_samples or 1), dtype=_common.sum_dtype(mu.dtype)),
        mu.new_empty(2, dtype=torch.int64),
    )


def _fake_kernel_backward(
    grad_z, grad_log_weights, mu, logvar, prior_mu, prior_logvar, rng_state, num_samples, event_dims,
    prior_mu_grad, prior_logvar_grad,
):  # fmt: skip
    n = mu.numel()
    return (
        mu.new_empty(mu.shape),
        logvar.new_empty(mu.shape),
        mu.new_empty(n if prior_mu_grad else 0),
        mu.new_empty(n if prior_logvar_grad else 0),
    )


_common.register_fake(OP, _fake)
_common.register_fake(f"_{OP}", _fake_kernel)
_common.register_fake(f"_{OP}_backward", _fake_kernel_backward)
_common.register(
    _common.OpInfo(OP, reparameterize_log_weights, reference.reparameterize_log_weights, "sample", ("mu", "logvar"))
)
