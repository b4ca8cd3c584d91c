"""grad_norm_penalty and gradient_penalty: WGAN-GP's per-sample penalty, fused, and the whole penalty."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from fastgen import reference

from . import _common

OP = "grad_norm_penalty"
INTERPOLATE = "random_interpolate"
_ROUTE = _common.route(OP)
_INTERPOLATE_ROUTE = _common.route(INTERPOLATE)


def _check_real(op: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"fastgen.{op}: {name} must be a real number, got {type(value).__name__}")
    return float(value)


def _all_but_first(t: Tensor) -> int:
    """The default event_dims (...): every dim but the first (one norm per sample of a batch)."""
    return t.dim() - 1 if t.dim() > 0 else 0


def grad_norm_penalty(grad: Tensor, center: float = 1.0, event_dims=...) -> Tensor:
    r"""WGAN-GP's per-sample penalty :math:`(\lVert g \rVert_2 - c)^2`, reading the gradient once.

    The norm is taken over the last `event_dims` dims of `grad` (default ``...``:
    every dim but the first, one norm per sample of a batch of any shape), so the
    result has the shape of the remaining (batch) dims. Its gradient,
    :math:`2(\lVert g\rVert - c)\,g / \lVert g\rVert` (0 where :math:`\lVert g\rVert = 0`, as
    torch's norm), is one more pass over `grad`; when `grad` comes from
    ``torch.autograd.grad(..., create_graph=True)`` it flows on into the critic's
    graph as WGAN-GP's training needs. Differentiating the penalty's gradient
    itself again raises an error naming the op. Half inputs are summed in float32.
    """
    if event_dims is ...:
        if not isinstance(grad, Tensor):
            _common.check_tensors(OP, grad=grad)
        event_dims = _all_but_first(grad)
    if type(event_dims) is not int or not isinstance(grad, Tensor) or type(center) is not float:
        _common.check_tensors(OP, grad=grad)
        center = _check_real(OP, "center", center)
        _common.check_event_dims(OP, event_dims)
    op = _ROUTE[1 if grad.is_cuda else 0]
    if op is None:
        return _reference(grad, center, event_dims)
    out = op(grad, center, event_dims)
    return out if out.dtype is grad.dtype else _common.result_dtype(out, grad)


def _reference(grad, center, event_dims):
    shape, _, _ = _common.check_reference_inputs(OP, grad=grad)
    _common.check_reference_event_dims(OP, event_dims, len(shape))
    return _common.result_dtype(reference.grad_norm_penalty(grad, center, event_dims), grad)


def random_interpolate(real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r""":math:`\epsilon_i x_i + (1 - \epsilon_i)\tilde x_i` with one :math:`\epsilon_i \sim U[0, 1)` per sample.

    Samples run along dim 0; :math:`\epsilon_i` is drawn in the kernel from
    fastgen's stream (Triton's ``tl.rand(seed, offset + i)``: word 0 of Philox at
    counter offset + i), seeded from the device's generator or `generator`.
    Gradients flow to `real` and `fake` where they require one.
    """
    op = _INTERPOLATE_ROUTE[1 if real.is_cuda else 0]
    if op is None:
        _, _, device = _common.check_reference_inputs(INTERPOLATE, real=real, fake=fake)
        _common.check_reference_sampling(INTERPOLATE, None, generator, device)
        return reference.random_interpolate(real, fake, generator)
    return op(real, fake, generator)


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    weight: float = 10.0,
    center: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The WGAN-GP penalty (Gulrajani et al., 2017) of `critic`, a scalar:

    .. math:: \lambda\,\frac1B \sum_{i=1}^B \left(\lVert \nabla_{\hat x} D(\hat x_i) \rVert_2 - c\right)^2,
              \qquad \hat x_i = \epsilon_i x_i + (1 - \epsilon_i)\,\tilde x_i,

    with :math:`\lambda` = `weight`, c = `center`, x = `real`, :math:`\tilde x` = `fake`
    and one :math:`\epsilon_i \sim U[0, 1)` per sample (dim 0), drawn inside the
    interpolation kernel from fastgen's noise stream (`generator` or the device's
    default one). The critic's gradient is taken with ``create_graph=True`` and its
    per-sample norm penalty is the fused `grad_norm_penalty` (one read of the
    gradient, one pass in backward), so ``penalty.backward()`` trains the critic.
    Gradients also reach `real` and `fake` where they require one: pass
    ``fake.detach()`` for a critic step, as WGAN-GP does. Runs under
    ``torch.enable_grad()`` (it needs the critic's gradient).
    """
    op = "gradient_penalty"
    if not callable(critic):
        raise TypeError(f"fastgen.{op}: critic must be callable (an nn.Module or a function), got "
                        f"{type(critic).__name__}")
    _common.check_tensors(op, real=real, fake=fake)
    weight = _check_real(op, "weight", weight)
    center = _check_real(op, "center", center)
    _common.check_sampling(op, None, generator)
    shape, _, device = _common.check_reference_inputs(op, real=real, fake=fake)
    _common.check_reference_sampling(op, None, generator, device)
    if len(shape) == 0:
        raise ValueError(f"fastgen.{op}: real and fake must be batched, shape (B, *features); got shape ()")
    with torch.enable_grad():
        interpolate = random_interpolate(real, fake, generator)
        if not interpolate.requires_grad:
            interpolate.requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(interpolate).sum(), interpolate, create_graph=True)
        penalty = grad_norm_penalty(grad, center, event_dims=_all_but_first(grad)).mean()
        return penalty if weight == 1.0 else penalty * weight


def _fake(grad, center, event_dims):
    return _common.fake_rows_result((grad,), event_dims, "none")


def _fake_kernel(grad, center, event_dims):
    return _common.fake_rows(grad, (), event_dims), _common.fake_rows(grad, (), event_dims)


def _fake_kernel_backward(grad_penalty, grad, norm, center, event_dims):
    return grad.new_empty(grad.shape)


def _fake_interpolate(real, fake, generator):
    shape, dtype = _common.promoted(real, fake)
    return real.new_empty(shape, dtype=dtype)


def _fake_interpolate_kernel(real, fake, generator):
    rows = real.shape[0] if real.dim() > 0 else 1
    return real.new_empty(real.shape), real.new_empty(rows, dtype=torch.float32)


_common.register_fake(OP, _fake)
_common.register_fake(f"_{OP}", _fake_kernel)
_common.register_fake(f"_{OP}_backward", _fake_kernel_backward)
_common.register_fake(INTERPOLATE, _fake_interpolate)
_common.register_fake(f"_{INTERPOLATE}", _fake_interpolate_kernel)
_common.register(_common.OpInfo(OP, grad_norm_penalty, reference.grad_norm_penalty, "rows", ("grad",)))
