"""bernoulli_log_likelihood: the log-likelihood of (soft) binary data under Bernoulli logits."""

from __future__ import annotations

from torch import Tensor

from fastgen import reference

from . import _common

OP = "bernoulli_log_likelihood"
_ROUTE = _common.route(OP)


def bernoulli_log_likelihood(
    logits: Tensor, target: Tensor, *, event_dims: int = 1, reduction: str = "none"
) -> Tensor:
    r"""log Bernoulli(target; sigmoid(logits)), summed over the last `event_dims` dims.

    Per element :math:`t\,x - \mathrm{softplus}(x)` with :math:`x` = logits and
    :math:`t` = target, stable for any finite logits; targets in [0, 1] may be
    soft (non-binarized pixels). Gradients: :math:`t - \sigma(x)` to logits and
    :math:`x` to target if it needs one. target may broadcast (a (B, D) batch
    against (K, B, D) logits of K samples). `reduction` is "none", "sum" or
    "mean"; half inputs are summed in float32.
    """
    if (
        type(event_dims) is not int
        or type(reduction) is not str
        or reduction not in _common.REDUCTIONS
        or not isinstance(logits, Tensor)
        or not isinstance(target, Tensor)
    ):
        _common.check_tensors(OP, logits=logits, target=target)
        _common.check_event_dims(OP, event_dims)
        _common.check_reduction(OP, reduction)
    op = _ROUTE[1 if logits.is_cuda else 0]
    if op is None:
        return _reference(logits, target, event_dims, reduction)
    out = op(logits, target, event_dims, reduction)
    return out if out.dtype is logits.dtype else _common.result_dtype(out, logits, target)


def _reference(logits, target, event_dims, reduction):
    shape, _, _ = _common.check_reference_inputs(OP, logits=logits, target=target)
    _common.check_reference_event_dims(OP, event_dims, len(shape))
    out = reference.bernoulli_log_likelihood(logits, target, event_dims=event_dims, reduction=reduction)
    return _common.result_dtype(out, logits, target)


def _fake(logits, target, event_dims, reduction):
    return _common.fake_rows_result((logits, target), event_dims, reduction)


def _fake_kernel(logits, target, event_dims):
    return _common.fake_rows(logits, (target,), event_dims)


def _fake_kernel_backward(grad, logits, target, event_dims, target_grad):
    return (
        _common.fake_full(logits, (target,), event_dims),
        _common.fake_full(logits, (target,), event_dims, target_grad),
    )


_common.register_fake(OP, _fake)
_common.register_fake(f"_{OP}", _fake_kernel)
_common.register_fake(f"_{OP}_backward", _fake_kernel_backward)
_common.register(
    _common.OpInfo(OP, bernoulli_log_likelihood, reference.bernoulli_log_likelihood, "rows", ("logits", "target"))
)
