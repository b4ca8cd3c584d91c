"""gaussian_kl: the analytic KL divergence between diagonal Gaussians."""

from __future__ import annotations

from torch import Tensor

from fastgen import reference

from . import _common

OP = "gaussian_kl"
_ROUTE = _common.route(OP)


def gaussian_kl(
    mu: Tensor,
    logvar: Tensor,
    prior_mu: Tensor | None = None,
    prior_logvar: Tensor | None = None,
    *,
    event_dims: int = 1,
    reduction: str = "none",
) -> Tensor:
    r"""KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)), summed over the last `event_dims` dims.

    Per element :math:`\tfrac12\,(p - l + (e^{l} + (\mu - m)^2)\,e^{-p} - 1)` with
    :math:`l` = logvar, :math:`m` = prior_mu, :math:`p` = prior_logvar; a missing
    half of the prior is N(0, 1)'s (m = 0, p = 0), so with no prior this is
    :math:`\tfrac12\,(e^{l} + \mu^2 - 1 - l)`. Every argument broadcasts: a
    learned prior of shape (D,) is read once per row, never expanded in memory,
    and its gradient is summed over the batch. `reduction` is "none" (one value
    per batch element), "sum" or "mean". Half inputs are summed in float32.
    """
    if (
        type(event_dims) is not int
        or type(reduction) is not str
        or reduction not in _common.REDUCTIONS
        or not isinstance(mu, Tensor)
        or not isinstance(logvar, Tensor)
        or not (prior_mu is None or isinstance(prior_mu, Tensor))
        or not (prior_logvar is None or isinstance(prior_logvar, Tensor))
    ):
        _common.check_tensors(
            OP, ("prior_mu", "prior_logvar"), mu=mu, logvar=logvar, prior_mu=prior_mu, prior_logvar=prior_logvar
        )
        _common.check_event_dims(OP, event_dims)
        _common.check_reduction(OP, reduction)
    op = _ROUTE[1 if mu.is_cuda else 0]
    if op is None:
        return _reference(mu, logvar, prior_mu, prior_logvar, event_dims, reduction)
    out = op(mu, logvar, prior_mu, prior_logvar, event_dims, reduction)
    return out if out.dtype is mu.dtype else _common.result_dtype(out, mu, logvar, prior_mu, prior_logvar)


def _reference(mu, logvar, prior_mu, prior_logvar, event_dims, reduction):
    shape, _, _ = _common.check_reference_inputs(OP, mu=mu, logvar=logvar, prior_mu=prior_mu, prior_logvar=prior_logvar)
    _common.check_reference_event_dims(OP, event_dims, len(shape))
    out = reference.gaussian_kl(mu, logvar, prior_mu, prior_logvar, event_dims=event_dims, reduction=reduction)
    return _common.result_dtype(out, mu, logvar, prior_mu, prior_logvar)


def _fake(mu, logvar, prior_mu, prior_logvar, event_dims, reduction):
    return _common.fake_rows_result((mu, logvar, prior_mu, prior_logvar), event_dims, reduction)


def _fake_kernel(mu, logvar, prior_mu, prior_logvar, event_dims):
    return _common.fake_rows(mu, (logvar, prior_mu, prior_logvar), event_dims)


def _fake_kernel_backward(grad, mu, logvar, prior_mu, prior_logvar, event_dims, prior_logvar_grad):
    others = (logvar, prior_mu, prior_logvar)
    return (
        _common.fake_full(mu, others, event_dims),
        _common.fake_full(mu, others, event_dims),
        _common.fake_full(mu, others, event_dims, prior_logvar_grad),
    )


_common.register_fake(OP, _fake)
_common.register_fake(f"_{OP}", _fake_kernel)
_common.register_fake(f"_{OP}_backward", _fake_kernel_backward)
_common.register(_common.OpInfo(OP, gaussian_kl, reference.gaussian_kl, "rows", ("mu", "logvar", "prior_mu", "prior_logvar")))
