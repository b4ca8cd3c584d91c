"""fastgen.gaussian_kl against torch.distributions.kl_divergence."""

from __future__ import annotations

import pytest
import torch
from fastgen_checks import DTYPES, LONG_ROW, SHAPES, assert_close, oracle_gaussian_kl, rand, reduce

import fastgen

PRIORS = ["none", "full", "learned", "mu_only", "logvar_only"]


def _prior(kind, shape, event_dims, dtype, device, requires_grad=False):
    """(prior_mu, prior_logvar) of the given kind; "learned" is a broadcast prior of the event shape."""
    if kind == "none":
        return None, None
    pshape = shape if kind != "learned" else shape[len(shape) - max(event_dims, 1) :]
    pm = rand(pshape, dtype, device, seed=11, requires_grad=requires_grad)
    plv = rand(pshape, dtype, device, low=-1.0, high=1.0, seed=12, requires_grad=requires_grad)
    if kind == "mu_only":
        return pm, None
    if kind == "logvar_only":
        return None, plv
    return pm, plv


@pytest.mark.parametrize("shape,event_dims", SHAPES)
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_matches_kl_divergence(device, backend, shape, event_dims, prior, reduction):
    mu = rand(shape, torch.float64, device, seed=1)
    logvar = rand(shape, torch.float64, device, seed=2)
    pm, plv = _prior(prior, shape, event_dims, torch.float64, device)
    out = fastgen.gaussian_kl(mu, logvar, pm, plv, event_dims=event_dims, reduction=reduction)
    expected = oracle_gaussian_kl(mu, logvar, pm, plv, event_dims, reduction)
    assert out.dtype == torch.float64 and out.device == mu.device
    assert_close(out, expected)


def test_default_event_dims_and_reduction(device):
    mu, logvar = rand((3, 5), device=device, seed=1), rand((3, 5), device=device, seed=2)
    out = fastgen.gaussian_kl(mu, logvar)
    assert out.shape == (3,)
    assert_close(out, oracle_gaussian_kl(mu, logvar))
    assert (out >= 0).all()


def test_long_rows(device):
    shape, event_dims = LONG_ROW
    mu = rand(shape, torch.float32, device, seed=1)
    logvar = rand(shape, torch.float32, device, seed=2)
    out = fastgen.gaussian_kl(mu, logvar, event_dims=event_dims)
    assert_close(out, oracle_gaussian_kl(mu, logvar, event_dims=event_dims), rtol=1e-5, atol=1e-3)


def test_identical_distributions_have_zero_kl(device):
    mu, logvar = rand((4, 6), device=device, seed=1), rand((4, 6), device=device, seed=2)
    out = fastgen.gaussian_kl(mu, logvar, mu, logvar)
    torch.testing.assert_close(out, torch.zeros(4, device=device), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prior", ["none", "full", "learned"])
def test_dtypes_forward_and_backward(device, backend, dtype, prior):
    shape, event_dims = (6, 40), 1
    mu = rand(shape, dtype, device, seed=1, requires_grad=True)
    logvar = rand(shape, dtype, device, seed=2, requires_grad=True)
    pm, plv = _prior(prior, shape, event_dims, dtype, device, requires_grad=True)
    inputs = [t for t in (mu, logvar, pm, plv) if t is not None]
    out = fastgen.gaussian_kl(mu, logvar, pm, plv, event_dims=event_dims)
    assert out.dtype == dtype
    # The oracle on the same (rounded) inputs, in float64.
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref_mu, ref_lv, *ref_prior = ref_inputs
    expected = oracle_gaussian_kl(ref_mu, ref_lv, *(ref_prior or [None, None]))
    assert_close(out, expected, scale=4)
    grad = rand(out.shape, dtype, device, low=-2.0, high=2.0, seed=5)  # not all ones
    grads = torch.autograd.grad(out, inputs, grad)
    expected_grads = torch.autograd.grad(expected, ref_inputs, grad.double().cpu().to(expected.device))
    for actual, wanted, t in zip(grads, expected_grads, inputs):
        assert actual.dtype == dtype and actual.shape == t.shape
        assert_close(actual, wanted, scale=4)


@pytest.mark.parametrize("event_dims", [0, 1, 2])
@pytest.mark.parametrize("prior", PRIORS)
def test_gradcheck(device, event_dims, prior):
    shape = (3, 2, 4)
    mu = rand(shape, torch.float64, device, seed=1, requires_grad=True)
    logvar = rand(shape, torch.float64, device, seed=2, requires_grad=True)
    pm, plv = _prior(prior, shape, event_dims, torch.float64, device, requires_grad=True)

    def fn(mu, logvar, *prior_tensors):
        it = iter(prior_tensors)
        a = next(it) if pm is not None else None
        b = next(it) if plv is not None else None
        return fastgen.gaussian_kl(mu, logvar, a, b, event_dims=event_dims)

    inputs = [t for t in (mu, logvar, pm, plv) if t is not None]
    assert torch.autograd.gradcheck(fn, inputs)


def test_broadcast_prior_gradient(device):
    """A learned (D,) prior against (B, D) posteriors: gradients sum over the batch."""
    mu = rand((5, 8), torch.float64, device, seed=1, requires_grad=True)
    logvar = rand((5, 8), torch.float64, device, seed=2, requires_grad=True)
    pm = rand((8,), torch.float64, device, seed=3, requires_grad=True)
    plv = rand((1, 8), torch.float64, device, seed=4, requires_grad=True)
    g = rand((5,), torch.float64, device, seed=5)
    out = fastgen.gaussian_kl(mu, logvar, pm, plv)
    grads = torch.autograd.grad(out, (mu, logvar, pm, plv), g)
    refs = [t.detach().clone().requires_grad_() for t in (mu, logvar, pm, plv)]
    expected = oracle_gaussian_kl(*refs)
    expected_grads = torch.autograd.grad(expected, refs, g)
    assert grads[2].shape == (8,) and grads[3].shape == (1, 8)
    for a, e in zip(grads, expected_grads):
        assert_close(a, e)


def test_broadcast_mu_against_logvar(device):
    """Any argument may broadcast, mu too."""
    mu = rand((6,), torch.float64, device, seed=1, requires_grad=True)
    logvar = rand((4, 6), torch.float64, device, seed=2, requires_grad=True)
    out = fastgen.gaussian_kl(mu, logvar, reduction="sum")
    expected = oracle_gaussian_kl(mu, logvar, reduction="sum")
    assert_close(out, expected)
    assert torch.autograd.gradcheck(lambda a, b: fastgen.gaussian_kl(a, b), (mu, logvar))


def test_mixed_dtypes_promote(device):
    mu = rand((3, 4), torch.float16, device, seed=1)
    logvar = rand((3, 4), torch.float32, device, seed=2)
    pm = rand((4,), torch.float64, device, seed=3)
    out = fastgen.gaussian_kl(mu, logvar, pm)
    assert out.dtype == torch.float64
    assert_close(out, oracle_gaussian_kl(mu, logvar, pm))


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
def test_non_contiguous(device, layout):
    base_mu = rand((8, 6), torch.float32, device, seed=1)
    base_lv = rand((8, 6), torch.float32, device, seed=2)
    base_pm = rand((8, 6), torch.float32, device, seed=3)
    if layout == "transposed":
        views = [t.t() for t in (base_mu, base_lv, base_pm)]
    elif layout == "sliced":
        views = [t[1::2, ::2] for t in (base_mu, base_lv, base_pm)]
    else:
        views = [t[:1].expand(5, 6) for t in (base_mu, base_lv, base_pm)]
    assert not views[0].is_contiguous()
    contiguous = [v.contiguous() for v in views]
    for event_dims in (1, 2):
        out = fastgen.gaussian_kl(*views, event_dims=event_dims)
        expected = fastgen.gaussian_kl(*contiguous, event_dims=event_dims)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        assert_close(out, oracle_gaussian_kl(*views, event_dims=event_dims))
    # Gradients through the non-contiguous views, to their bases.
    bases = [t.detach().clone().requires_grad_() for t in (base_mu, base_lv, base_pm)]
    ref_bases = [t.detach().double().requires_grad_() for t in bases]

    def view(t):
        return t.t() if layout == "transposed" else t[1::2, ::2] if layout == "sliced" else t[:1].expand(5, 6)

    g = rand(views[0].shape[:1], torch.float32, device, seed=7)
    grads = torch.autograd.grad(fastgen.gaussian_kl(*map(view, bases)), bases, g)
    expected = torch.autograd.grad(oracle_gaussian_kl(*map(view, ref_bases)), ref_bases, g.double())
    for a, e in zip(grads, expected):
        assert_close(a, e)


@pytest.mark.parametrize(
    "shape,event_dims,batch",
    [((0, 5), 1, (0,)), ((4, 0), 1, (4,)), ((4, 0), 2, ()), ((0,), 1, ()), ((2, 0, 3), 1, (2, 0)), ((3, 0), 0, (3, 0))],
)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_zero_size(device, shape, event_dims, batch, reduction):
    mu = torch.zeros(shape, device=device, requires_grad=True)
    logvar = torch.zeros(shape, device=device, requires_grad=True)
    pm = torch.zeros(shape[-1:], device=device, requires_grad=True)
    out = fastgen.gaussian_kl(mu, logvar, pm, event_dims=event_dims, reduction=reduction)
    expected = reduce(torch.zeros(batch, dtype=torch.float64), reduction)  # nothing to sum: zeros
    assert out.shape == (batch if reduction == "none" else ())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double().cpu(), expected.cpu(), equal_nan=True)  # mean of nothing is nan
    grads = torch.autograd.grad(out.sum(), (mu, logvar, pm), allow_unused=True)
    for g, t in zip(grads, (mu, logvar, pm)):
        assert g is None or (g.shape == t.shape and (g == 0).all())


def test_opcheck(device):
    mu = rand((3, 5), torch.float32, device, seed=1, requires_grad=True)
    logvar = rand((3, 5), torch.float32, device, seed=2, requires_grad=True)
    pm = rand((5,), torch.float32, device, seed=3, requires_grad=True)
    plv = rand((5,), torch.float32, device, seed=4, requires_grad=True)
    op = torch.ops.fastgen.gaussian_kl.default
    cases = [(mu, logvar, None, None, 1), (mu, logvar, pm, plv, 1), (mu, logvar, (mu.detach() * 0.5).requires_grad_(), None, 2), (mu, logvar, None, plv, 0)]
    for args, reduction in zip(cases, ["none", "sum", "mean", "none"]):
        torch.library.opcheck(op, (*args, reduction))
    kernel = torch.ops.fastgen._gaussian_kl.default
    for args in cases:
        torch.library.opcheck(kernel, [t.detach() if isinstance(t, torch.Tensor) else t for t in args])
    grad = rand((3,), torch.float32, device, seed=5)
    bwd = torch.ops.fastgen._gaussian_kl_backward.default
    d = [t.detach() for t in (mu, logvar, pm, plv)]
    torch.library.opcheck(bwd, (grad, d[0], d[1], d[2], d[3], 1, True))
    torch.library.opcheck(bwd, (grad, d[0], d[1], None, None, 1, False))
    torch.library.opcheck(bwd, (grad[:1], d[0], d[1], d[0] * 0.5, None, 2, False))
    torch.library.opcheck(bwd, (grad.repeat(5), d[0], d[1], None, d[3], 0, True))


@pytest.mark.parametrize("pshape", [(), (1,), (6,), (1, 6), (4, 1), (1, 1)])
@pytest.mark.parametrize("event_dims", [0, 1, 2])
def test_prior_broadcast_shapes(device, pshape, event_dims):
    """Scalar, per-dimension and per-sample priors against (4, 6) posteriors, values and gradients."""
    mu = rand((4, 6), torch.float64, device, seed=1, requires_grad=True)
    logvar = rand((4, 6), torch.float64, device, seed=2, requires_grad=True)
    pm = rand(pshape, torch.float64, device, seed=3, requires_grad=True)
    plv = rand(pshape, torch.float64, device, seed=4, requires_grad=True)
    out = fastgen.gaussian_kl(mu, logvar, pm, plv, event_dims=event_dims)
    assert_close(out, oracle_gaussian_kl(mu, logvar, pm, plv, event_dims=event_dims))
    fn = lambda *t: fastgen.gaussian_kl(*t, event_dims=event_dims)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (mu, logvar, pm, plv))
