"""gaussian_log_likelihood: the log-density of data under a diagonal Gaussian."""

from __future__ import annotations

from torch import Tensor

from fastgen import reference

from . import _common

OP = "gaussian_log_likelihood"
_ROUTE = _common.route(OP)


def gaussian_log_likelihood(
    x: Tensor,
    mean: Tensor,
    logvar: Tensor | None = None,
    *,
    event_dims: int = 1,
    reduction: str = "none",
) -> Tensor:
    r"""log N(x; mean, e^logvar), summed over the last `event_dims` dims.

    Per element :math:`-\tfrac12\,(\log 2\pi + l + (x - m)^2 e^{-l})` with
    :math:`m` = mean and :math:`l` = logvar; logvar=None means unit variance
    (l = 0). Every argument may broadcast. `reduction` is "none", "sum" or
    "mean"; half inputs are summed in float32.
    """
    if (
        type(event_dims) is not int
        or type(reduction) is not str
        or reduction not in _common.REDUCTIONS
        or not isinstance(x, Tensor)
        or not isinstance(mean, Tensor)
        or not (logvar is None or isinstance(logvar, Tensor))
    ):
        _common.check_tensors(OP, ("logvar",), x=x, mean=mean, logvar=logvar)
        _common.check_event_dims(OP, event_dims)
        _common.check_reduction(OP, reduction)
    op = _ROUTE[1 if x.is_cuda else 0]
    if op is None:
        return _reference(x, mean, logvar, event_dims, reduction)
    out = op(x, mean, logvar, event_dims, reduction)
    return out if out.dtype is x.dtype else _common.result_dtype(out, x, mean, logvar)


def _reference(x, mean, logvar, event_dims, reduction):
    shape, _, _ = _common.check_reference_inputs(OP, x=x, mean=mean, logvar=logvar)
    _common.check_reference_event_dims(OP, event_dims, len(shape))
    out = reference.gaussian_log_likelihood(x, mean, logvar, event_dims=event_dims, reduction=reduction)
    return _common.result_dtype(out, x, mean, logvar)


def _fake(x, mean, logvar, event_dims, reduction):
    return _common.fake_rows_result((x, mean, logvar), event_dims, reduction)


def _fake_kernel(x, mean, logvar, event_dims):
    return _common.fake_rows(x, (mean, logvar), event_dims)


def _fake_kernel_backward(grad, x, mean, logvar, event_dims):
    others = (mean, logvar)
    return _common.fake_full(x, others, event_dims), _common.fake_full(x, others, event_dims, logvar is not None)


_common.register_fake(OP, _fake)
_common.register_fake(f"_{OP}", _fake_kernel)
_common.register_fake(f"_{OP}_backward", _fake_kernel_backward)
_common.register(
    _common.OpInfo(OP, gaussian_log_likelihood, reference.gaussian_log_likelihood, "rows", ("x", "mean", "logvar"))
)
