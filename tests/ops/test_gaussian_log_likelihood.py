"""fastgen.gaussian_log_likelihood against torch.distributions.Normal.log_prob."""

from __future__ import annotations

import pytest
import torch
from fastgen_checks import DTYPES, LONG_ROW, SHAPES, assert_close, oracle_gaussian_ll, rand, reduce

import fastgen


@pytest.mark.parametrize("shape,event_dims", SHAPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("with_logvar", [False, True])
def test_matches_normal_log_prob(device, backend, shape, event_dims, reduction, with_logvar):
    x = rand(shape, torch.float64, device, low=-3, high=3, seed=1)
    mean = rand(shape, torch.float64, device, seed=2)
    logvar = rand(shape, torch.float64, device, low=-2, high=2, seed=3) if with_logvar else None
    out = fastgen.gaussian_log_likelihood(x, mean, logvar, event_dims=event_dims, reduction=reduction)
    assert_close(out, oracle_gaussian_ll(x, mean, logvar, event_dims, reduction))


def test_long_rows(device):
    shape, event_dims = LONG_ROW
    x, mean = rand(shape, device=device, seed=1), rand(shape, device=device, seed=2)
    logvar = rand(shape, device=device, seed=3)
    out = fastgen.gaussian_log_likelihood(x, mean, logvar, event_dims=event_dims)
    assert_close(out, oracle_gaussian_ll(x, mean, logvar, event_dims), rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_logvar", [False, True])
def test_dtypes_forward_and_backward(device, backend, dtype, with_logvar):
    x = rand((5, 33), dtype, device, low=-3, high=3, seed=1, requires_grad=True)
    mean = rand((5, 33), dtype, device, seed=2, requires_grad=True)
    logvar = rand((5, 33), dtype, device, low=-1, high=1, seed=3, requires_grad=True) if with_logvar else None
    inputs = [t for t in (x, mean, logvar) if t is not None]
    out = fastgen.gaussian_log_likelihood(x, mean, logvar)
    assert out.dtype == dtype and out.shape == (5,)
    ref = [t.detach().double().requires_grad_() for t in inputs]
    expected = oracle_gaussian_ll(*ref)
    assert_close(out, expected, scale=4)
    grad = rand((5,), dtype, device, low=-2, high=2, seed=9)
    grads = torch.autograd.grad(out, inputs, grad)
    expected_grads = torch.autograd.grad(expected, ref, grad.double())
    for a, e, t in zip(grads, expected_grads, inputs):
        assert a.dtype == dtype and a.shape == t.shape
        assert_close(a, e, scale=4)


@pytest.mark.parametrize("event_dims", [0, 1, 2])
@pytest.mark.parametrize("case", ["full", "unit", "broadcast_mean", "broadcast_x", "scalar_logvar"])
def test_gradcheck(device, event_dims, case):
    shape = (3, 2, 4)
    x = rand(shape if case != "broadcast_x" else (2, 4), torch.float64, device, seed=1, requires_grad=True)
    mean = rand(shape if case != "broadcast_mean" else (4,), torch.float64, device, seed=2, requires_grad=True)
    if case == "unit":
        logvar = None
    elif case == "scalar_logvar":
        logvar = torch.tensor(0.3, dtype=torch.float64, device=device, requires_grad=True)
    else:
        logvar = rand(shape, torch.float64, device, seed=3, requires_grad=True)
    inputs = [t for t in (x, mean, logvar) if t is not None]

    def fn(*args):
        return fastgen.gaussian_log_likelihood(*args, event_dims=event_dims)

    assert torch.autograd.gradcheck(fn, inputs)
    assert_close(fn(*inputs), oracle_gaussian_ll(*inputs, event_dims=event_dims))


def test_broadcast_targets_against_samples(device, backend):
    """(B, D) data against (K, B, D) decoder means: gradients fold back to (B, D)."""
    x = rand((3, 10), torch.float32, device, seed=1, requires_grad=True)
    mean = rand((4, 3, 10), torch.float32, device, seed=2, requires_grad=True)
    logvar = rand((10,), torch.float32, device, seed=3, requires_grad=True)
    out = fastgen.gaussian_log_likelihood(x, mean, logvar, reduction="mean")
    ref = [t.detach().double().requires_grad_() for t in (x, mean, logvar)]
    expected = oracle_gaussian_ll(*ref, reduction="mean")
    assert_close(out, expected)
    grads = torch.autograd.grad(out * 1.7, (x, mean, logvar))
    expected_grads = torch.autograd.grad(expected * 1.7, ref)
    assert [g.shape for g in grads] == [(3, 10), (4, 3, 10), (10,)]
    for a, e in zip(grads, expected_grads):
        assert_close(a, e)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous(device, layout):
    base = [rand((9, 8), torch.float32, device, seed=s) for s in (1, 2, 3)]
    views = [t.t() for t in base] if layout == "transposed" else [t[::2, 1::3] for t in base]
    assert not views[0].is_contiguous()
    for event_dims in (0, 1, 2):
        out = fastgen.gaussian_log_likelihood(*views, event_dims=event_dims)
        same = fastgen.gaussian_log_likelihood(*[v.contiguous() for v in views], event_dims=event_dims)
        torch.testing.assert_close(out, same, rtol=0, atol=0)
        assert_close(out, oracle_gaussian_ll(*views, event_dims=event_dims))
    leaves = [v.detach().requires_grad_() for v in views]  # non-contiguous leaves
    assert not leaves[0].is_contiguous()
    refs = [v.detach().double().requires_grad_() for v in views]
    g = rand(views[0].shape[:1], torch.float32, device, seed=7)
    grads = torch.autograd.grad(fastgen.gaussian_log_likelihood(*leaves), leaves, g)
    expected = torch.autograd.grad(oracle_gaussian_ll(*refs), refs, g.double())
    for a, e, leaf in zip(grads, expected, leaves):
        assert a.shape == leaf.shape
        assert_close(a, e)


@pytest.mark.parametrize(
    "shape,event_dims,batch", [((0, 5), 1, (0,)), ((4, 0), 1, (4,)), ((4, 0), 2, ()), ((0, 3, 2), 0, (0, 3, 2))]
)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_zero_size(device, shape, event_dims, batch, reduction):
    x = torch.zeros(shape, device=device, requires_grad=True)
    mean = torch.zeros(shape, device=device, requires_grad=True)
    logvar = torch.zeros(shape, device=device, requires_grad=True)
    out = fastgen.gaussian_log_likelihood(x, mean, logvar, event_dims=event_dims, reduction=reduction)
    assert out.shape == (batch if reduction == "none" else ())
    torch.testing.assert_close(
        out.double().cpu(), reduce(torch.zeros(batch, dtype=torch.float64), reduction), equal_nan=True
    )
    grads = torch.autograd.grad(out.sum(), (x, mean, logvar))
    assert [g.shape for g in grads] == [shape] * 3


def test_opcheck(device):
    x = rand((3, 6), torch.float32, device, seed=1, requires_grad=True)
    mean = rand((3, 6), torch.float32, device, seed=2, requires_grad=True)
    mean_row = rand((6,), torch.float32, device, seed=3, requires_grad=True)
    logvar = rand((3, 6), torch.float32, device, seed=4, requires_grad=True)
    op = torch.ops.fastgen.gaussian_log_likelihood.default
    cases = [(x, mean, logvar, 1), (x, mean, None, 1), (x, mean_row, logvar, 1), (x, mean, logvar, 0), (x, mean, None, 2)]
    for args, reduction in zip(cases, ["none", "sum", "mean", "none", "sum"]):
        torch.library.opcheck(op, (*args, reduction))
    kernel = torch.ops.fastgen._gaussian_log_likelihood.default
    for args in cases:
        torch.library.opcheck(kernel, [t.detach() if isinstance(t, torch.Tensor) else t for t in args])
    bwd = torch.ops.fastgen._gaussian_log_likelihood_backward.default
    g = rand((3,), torch.float32, device, seed=5)
    d = [t.detach() for t in (x, mean, mean_row, logvar)]
    torch.library.opcheck(bwd, (g, d[0], d[1], d[3], 1))
    torch.library.opcheck(bwd, (g, d[0], d[2], None, 1))
    torch.library.opcheck(bwd, (g[:1], d[0], d[1], d[3], 2))
