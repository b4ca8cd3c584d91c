"""fastgen.bernoulli_log_likelihood against F.binary_cross_entropy_with_logits."""

from __future__ import annotations

import pytest
import torch
from fastgen_checks import DTYPES, LONG_ROW, SHAPES, assert_close, oracle_bernoulli, rand, reduce

import fastgen


def _target(shape, dtype, device, soft, seed=7, requires_grad=False):
    t = rand(shape, torch.float64, device, low=0.0, high=1.0, seed=seed)
    if not soft:
        t = (t > 0.5).double()
    return t.to(dtype).requires_grad_(requires_grad)


@pytest.mark.parametrize("shape,event_dims", SHAPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("soft", [False, True])
def test_matches_bce_with_logits(device, backend, shape, event_dims, reduction, soft):
    logits = rand(shape, torch.float64, device, low=-6, high=6, seed=1)
    target = _target(shape, torch.float64, device, soft)
    out = fastgen.bernoulli_log_likelihood(logits, target, event_dims=event_dims, reduction=reduction)
    assert_close(out, oracle_bernoulli(logits, target, event_dims, reduction))


def test_matches_bernoulli_log_prob(device):
    logits = rand((5, 12), torch.float64, device, low=-4, high=4, seed=1)
    target = _target((5, 12), torch.float64, device, soft=False)
    expected = torch.distributions.Independent(torch.distributions.Bernoulli(logits=logits), 1).log_prob(target)
    assert_close(fastgen.bernoulli_log_likelihood(logits, target), expected)


def test_long_rows(device):
    shape, event_dims = LONG_ROW
    logits = rand(shape, torch.float32, device, low=-5, high=5, seed=1)
    target = _target(shape, torch.float32, device, soft=True)
    out = fastgen.bernoulli_log_likelihood(logits, target, event_dims=event_dims)
    assert_close(out, oracle_bernoulli(logits, target, event_dims), rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_for_extreme_logits(device, dtype):
    logits = torch.tensor([[-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4]], dtype=dtype, device=device, requires_grad=True)
    target = torch.tensor([[0.0, 1.0, 0.5, 0.3, 1.0, 0.0, 0.25]], dtype=dtype, device=device)
    out = fastgen.bernoulli_log_likelihood(logits, target)
    assert torch.isfinite(out).all()
    expected = oracle_bernoulli(logits, target)
    assert_close(out, expected, rtol=1e-6 if dtype == torch.float32 else None)
    (grad,) = torch.autograd.grad(out.sum(), logits)
    assert torch.isfinite(grad).all()
    assert_close(grad, target - torch.sigmoid(logits.detach()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target_grad", [False, True])
def test_dtypes_forward_and_backward(device, backend, dtype, target_grad):
    logits = rand((6, 50), dtype, device, low=-4, high=4, seed=1, requires_grad=True)
    target = _target((6, 50), dtype, device, soft=True, requires_grad=target_grad)
    out = fastgen.bernoulli_log_likelihood(logits, target)
    assert out.dtype == dtype and out.shape == (6,)
    ref = [logits.detach().double().requires_grad_(), target.detach().double().requires_grad_(target_grad)]
    expected = oracle_bernoulli(*ref)
    assert_close(out, expected, scale=4)
    inputs = [logits, target] if target_grad else [logits]
    grad = rand(out.shape, dtype, device, low=-2, high=2, seed=5)
    grads = torch.autograd.grad(out, inputs, grad)
    expected_grads = torch.autograd.grad(expected, ref[: len(inputs)], grad.double())
    for a, e, t in zip(grads, expected_grads, inputs):
        assert a.dtype == dtype and a.shape == t.shape
        assert_close(a, e, scale=4)


@pytest.mark.parametrize("event_dims", [0, 1, 2])
@pytest.mark.parametrize("broadcast", ["none", "target", "logits"])
def test_gradcheck(device, event_dims, broadcast):
    lshape, tshape = (2, 3, 4), (2, 3, 4)
    if broadcast == "target":  # (B, D) data against (K, B, D) logits
        tshape = (3, 4)
    elif broadcast == "logits":
        lshape = (1, 3, 4)
    logits = rand(lshape, torch.float64, device, low=-3, high=3, seed=1, requires_grad=True)
    target = _target(tshape, torch.float64, device, soft=True, requires_grad=True)

    def fn(logits, target):
        return fastgen.bernoulli_log_likelihood(logits, target, event_dims=event_dims)

    assert torch.autograd.gradcheck(fn, (logits, target))
    assert torch.autograd.gradcheck(lambda a: fn(a, target.detach()), (logits,))


def test_broadcast_target_against_samples(device, backend):
    """(B, D) targets against (K, B, D) logits: per (k, b) values and a (B, D) target gradient."""
    logits = rand((4, 3, 10), torch.float32, device, low=-3, high=3, seed=1, requires_grad=True)
    target = _target((3, 10), torch.float32, device, soft=True, requires_grad=True)
    out = fastgen.bernoulli_log_likelihood(logits, target)
    assert out.shape == (4, 3)
    ref = [logits.detach().double().requires_grad_(), target.detach().double().requires_grad_()]
    expected = oracle_bernoulli(*ref)
    assert_close(out, expected)
    g = rand((4, 3), torch.float32, device, seed=3)
    grads = torch.autograd.grad(out, (logits, target), g)
    expected_grads = torch.autograd.grad(expected, ref, g.double())
    assert grads[1].shape == (3, 10)
    for a, e in zip(grads, expected_grads):
        assert_close(a, e)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous(device, layout):
    logits = rand((10, 8), torch.float32, device, low=-3, high=3, seed=1)
    target = _target((10, 8), torch.float32, device, soft=True)
    if layout == "transposed":
        logits, target = logits.t(), target.t()
    else:
        logits, target = logits[::3, 1:], target[::3, 1:]
    assert not logits.is_contiguous()
    for event_dims in (0, 1, 2):
        out = fastgen.bernoulli_log_likelihood(logits, target, event_dims=event_dims)
        same = fastgen.bernoulli_log_likelihood(logits.contiguous(), target.contiguous(), event_dims=event_dims)
        torch.testing.assert_close(out, same, rtol=0, atol=0)
        assert_close(out, oracle_bernoulli(logits, target, event_dims))
    leaf = logits.detach().requires_grad_()
    (grad,) = torch.autograd.grad(fastgen.bernoulli_log_likelihood(leaf, target).sum(), leaf)
    assert_close(grad, target - torch.sigmoid(logits))


@pytest.mark.parametrize(
    "shape,event_dims,batch", [((0, 5), 1, (0,)), ((4, 0), 1, (4,)), ((4, 0), 2, ()), ((2, 0, 3), 2, (2,))]
)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_zero_size(device, shape, event_dims, batch, reduction):
    logits = torch.zeros(shape, device=device, requires_grad=True)
    target = torch.zeros(shape, device=device)
    out = fastgen.bernoulli_log_likelihood(logits, target, event_dims=event_dims, reduction=reduction)
    assert out.shape == (batch if reduction == "none" else ())
    torch.testing.assert_close(
        out.double().cpu(), reduce(torch.zeros(batch, dtype=torch.float64), reduction), equal_nan=True
    )
    (grad,) = torch.autograd.grad(out.sum(), logits)
    assert grad.shape == shape


def test_opcheck(device):
    logits = rand((3, 6), torch.float32, device, low=-3, high=3, seed=1, requires_grad=True)
    target = _target((3, 6), torch.float32, device, soft=True, requires_grad=True)
    target_row = _target((6,), torch.float32, device, soft=True, requires_grad=True)
    op = torch.ops.fastgen.bernoulli_log_likelihood.default
    for args in [(logits, target, 1, "none"), (logits, target_row, 1, "sum"), (logits, target, 0, "mean"), (logits, target, 2, "none")]:
        torch.library.opcheck(op, args)
    kernel = torch.ops.fastgen._bernoulli_log_likelihood.default
    for args in [(logits, target, 1), (logits, target_row, 1), (logits, target, 0), (logits, target, 2)]:
        torch.library.opcheck(kernel, [t.detach() if isinstance(t, torch.Tensor) else t for t in args])
    bwd = torch.ops.fastgen._bernoulli_log_likelihood_backward.default
    g = rand((3,), torch.float32, device, seed=4)
    torch.library.opcheck(bwd, (g, logits.detach(), target.detach(), 1, True))
    torch.library.opcheck(bwd, (g, logits.detach(), target_row.detach(), 1, False))
    torch.library.opcheck(bwd, (g.repeat(6), logits.detach(), target.detach(), 0, True))
