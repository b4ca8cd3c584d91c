"""fastgen.reparameterize_kl: the z of reparameterize and the KL to N(0, I) in one pass."""

from __future__ import annotations

import pytest
import torch
from fastgen_checks import DTYPES, SHAPES, assert_close, oracle_gaussian_kl, rand, seeded

import fastgen


def _generator(device, seed=99):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("shape,event_dims", SHAPES)
@pytest.mark.parametrize("num_samples", [None, 2])
def test_matches_reparameterize_and_kl_divergence(device, backend, shape, event_dims, num_samples):
    mu = rand(shape, torch.float64, device, seed=1)
    logvar = rand(shape, torch.float64, device, seed=2)
    z, kl = fastgen.reparameterize_kl(
        mu, logvar, num_samples=num_samples, generator=_generator(device), event_dims=event_dims
    )
    same_z = fastgen.reparameterize(mu, logvar, num_samples=num_samples, generator=_generator(device))
    torch.testing.assert_close(z, same_z, rtol=0, atol=0)  # exactly the same sample
    assert kl.shape == shape[: len(shape) - event_dims]
    assert_close(kl, oracle_gaussian_kl(mu, logvar, event_dims=event_dims))


def test_same_z_under_manual_seed(device):
    mu, logvar = rand((4, 6), device=device, seed=1), rand((4, 6), device=device, seed=2)
    torch.manual_seed(5)
    z, _ = fastgen.reparameterize_kl(mu, logvar, num_samples=3)
    torch.manual_seed(5)
    torch.testing.assert_close(z, fastgen.reparameterize(mu, logvar, num_samples=3), rtol=0, atol=0)


def test_rng_state_output(device):
    mu, logvar = rand((3, 5), device=device, seed=1), rand((3, 5), device=device, seed=2)
    z, kl, rng_state = torch.ops.fastgen._reparameterize_kl(mu, logvar, 2, 1, _generator(device))
    z2, rng_state2 = torch.ops.fastgen._reparameterize(mu, logvar, 2, _generator(device))
    assert torch.equal(rng_state.cpu(), rng_state2.cpu()) and rng_state.dtype == torch.int64
    torch.testing.assert_close(z, z2, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_samples", [None, 3])
def test_dtypes_forward_and_backward(device, backend, dtype, num_samples):
    mu = rand((5, 40), dtype, device, seed=1, requires_grad=True)
    logvar = rand((5, 40), dtype, device, seed=2, requires_grad=True)
    z, kl = fastgen.reparameterize_kl(mu, logvar, num_samples=num_samples, generator=_generator(device))
    assert z.dtype == dtype and kl.dtype == dtype and kl.shape == (5,)
    ref_mu, ref_lv = (t.detach().double().requires_grad_() for t in (mu, logvar))
    expected_kl = oracle_gaussian_kl(ref_mu, ref_lv)
    assert_close(kl, expected_kl, scale=4)
    # z from reparameterize with the same generator; its gradient is known in
    # closed form from z itself: grad_logvar = 0.5 * g * (z - mu).
    z_ref = fastgen.reparameterize(mu.detach(), logvar.detach(), num_samples=num_samples, generator=_generator(device))
    torch.testing.assert_close(z, z_ref, rtol=0, atol=0)
    gz = rand(z.shape, dtype, device, low=-2, high=2, seed=3)
    gkl = rand(kl.shape, dtype, device, low=-2, high=2, seed=4)
    grad_mu, grad_lv = torch.autograd.grad((z, kl), (mu, logvar), (gz, gkl))
    kl_grad_mu, kl_grad_lv = torch.autograd.grad(expected_kl, (ref_mu, ref_lv), gkl.double())
    zd, mud, gzd = z.detach().double(), mu.detach().double(), gz.double()
    # z - mu computed in float64 from a rounded z: allow for z's rounding.
    z_grad_lv = 0.5 * gzd * (zd - mud)
    if num_samples is not None:
        gzd, z_grad_lv = gzd.sum(0), z_grad_lv.sum(0)
    assert grad_mu.dtype == dtype and grad_lv.dtype == dtype
    assert_close(grad_mu, gzd + kl_grad_mu, scale=4)
    # z - mu taken from the rounded z: float32 and float64 within a few ulps of z.
    tol = {torch.float64: {"rtol": 1e-9, "atol": 1e-9}, torch.float32: {"rtol": 2e-5, "atol": 2e-4}}
    assert_close(grad_lv, z_grad_lv + kl_grad_lv, **tol.get(dtype, {"scale": 4}))


@pytest.mark.parametrize("num_samples", [None, 3])
@pytest.mark.parametrize("event_dims", [0, 1, 2])
@pytest.mark.parametrize("outputs", ["both", "z", "kl"])
def test_gradcheck(device, num_samples, event_dims, outputs):
    mu = rand((3, 4), torch.float64, device, seed=1, requires_grad=True)
    logvar = rand((3, 4), torch.float64, device, seed=2, requires_grad=True)

    def fn(mu, logvar, generator):
        z, kl = fastgen.reparameterize_kl(
            mu, logvar, num_samples=num_samples, generator=generator, event_dims=event_dims
        )
        return {"both": (z, kl), "z": z, "kl": kl}[outputs]

    assert torch.autograd.gradcheck(seeded(fn), (mu, logvar))


def test_broadcast_inputs(device):
    mu = rand((6,), torch.float64, device, seed=1, requires_grad=True)
    logvar = rand((4, 6), torch.float64, device, seed=2, requires_grad=True)
    z, kl = fastgen.reparameterize_kl(mu, logvar, generator=_generator(device))
    assert z.shape == (4, 6) and kl.shape == (4,)
    assert_close(kl, oracle_gaussian_kl(mu, logvar))
    assert torch.autograd.gradcheck(seeded(lambda a, b, generator: fastgen.reparameterize_kl(a, b, generator=generator)), (mu, logvar))


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous(device, layout):
    mu, logvar = rand((8, 6), device=device, seed=1), rand((8, 6), device=device, seed=2)
    mu, logvar = (mu.t(), logvar.t()) if layout == "transposed" else (mu[::2, 1:], logvar[::2, 1:])
    a = fastgen.reparameterize_kl(mu, logvar, num_samples=2, generator=_generator(device))
    b = fastgen.reparameterize_kl(mu.contiguous(), logvar.contiguous(), num_samples=2, generator=_generator(device))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("shape,event_dims,batch", [((0, 5), 1, (0,)), ((4, 0), 1, (4,)), ((4, 0), 2, ()), ((2, 0, 3), 1, (2, 0))])
@pytest.mark.parametrize("num_samples", [None, 2])
def test_zero_size(device, shape, event_dims, batch, num_samples):
    mu = torch.zeros(shape, device=device, requires_grad=True)
    logvar = torch.zeros(shape, device=device, requires_grad=True)
    z, kl = fastgen.reparameterize_kl(mu, logvar, num_samples=num_samples, event_dims=event_dims)
    assert z.shape == (shape if num_samples is None else (num_samples, *shape))
    assert kl.shape == batch and kl.dtype == torch.float32
    assert (kl == 0).all()
    grads = torch.autograd.grad(z.sum() + kl.sum(), (mu, logvar))
    assert [g.shape for g in grads] == [shape, shape]


def test_opcheck(device):
    mu = rand((3, 5), torch.float32, device, seed=1, requires_grad=True)
    logvar = rand((3, 5), torch.float32, device, seed=2, requires_grad=True)
    op = torch.ops.fastgen.reparameterize_kl.default
    # nondeterministic_seeded: opcheck's aot_dispatch test skips comparing outputs.
    torch.library.opcheck(op, (mu, logvar, None, 1, None))
    torch.library.opcheck(op, (mu, logvar, 2, 2, None))
    torch.library.opcheck(op, (mu, logvar, 2, 0, None))
    # An explicit generator advances between opcheck's runs (see test_reparameterize.py).
    torch.library.opcheck(
        op, (mu, logvar, 2, 1, _generator(device)), test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
    )
    kernel = torch.ops.fastgen._reparameterize_kl.default
    d = (mu.detach(), logvar.detach())
    torch.library.opcheck(kernel, (*d, None, 1, None))
    torch.library.opcheck(kernel, (*d, 2, 0, None))
    _, _, rng_state = kernel(*d, 2, 1, _generator(device))
    bwd = torch.ops.fastgen._reparameterize_kl_backward.default
    gz, gkl = rand((2, 3, 5), device=device, seed=3), rand((3,), device=device, seed=4)
    d = (mu.detach(), logvar.detach())
    torch.library.opcheck(bwd, (gz, gkl, *d, rng_state, 2, 1))
    torch.library.opcheck(bwd, (None, gkl, *d, rng_state, 2, 1))
    torch.library.opcheck(bwd, (gz[0], None, *d, rng_state, None, 1))
    torch.library.opcheck(bwd, (gz, gkl[:1], *d, rng_state, 2, 2))
