"""reparameterize_log_weights, grad_norm_penalty and random_interpolate under the "triton" backend,
against fastgen.reference for the same generator state: samples, log-weights, penalties, the
interpolation weights (tl.rand of one Philox counter per sample), and every gradient.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="needs Triton")


import fastgen  # noqa: E402  (after the Triton check)
from fastgen import reference  # noqa: E402  (after the Triton check)

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
TOL = {
    torch.float64: (1e-6, 1e-6),  # eps is float32 on every backend
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}


def rand(shape, dtype, device, low=-1.5, high=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g, dtype=torch.float64) * (high - low) + low
    return t.to(dtype).to(device).requires_grad_()


def run(backend, fn, inputs):
    """fn(*inputs, generator) with a fresh generator, and the gradients of a weighted sum of its outputs."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    with fastgen.use_backend(backend):
        outs = fn(*leaves, torch.Generator(device=leaves[0].device).manual_seed(7))
    outs = outs if isinstance(outs, tuple) else (outs,)
    total = sum(
        (o.double() * torch.linspace(-1.0, 1.0, o.numel(), dtype=torch.float64, device=o.device).reshape(o.shape)).sum()
        for o in outs
    )
    return outs, torch.autograd.grad(total, [t for t in leaves if t is not None])


def assert_matches_reference(fn, inputs, dtype, scale=1.0, grad_scale=1.0):
    outs, grads = run("triton", fn, inputs)
    expected, expected_grads = run("reference", fn, inputs)
    rtol, atol = TOL[dtype]
    for out, e in zip(outs, expected):
        assert out.dtype == e.dtype and out.shape == e.shape
        torch.testing.assert_close(out.double().cpu(), e.double().cpu(), rtol=rtol * scale, atol=atol * scale)
    for grad, e in zip(grads, expected_grads):
        assert grad.dtype == e.dtype and grad.shape == e.shape
        torch.testing.assert_close(grad.double().cpu(), e.double().cpu(), rtol=rtol * grad_scale, atol=atol * grad_scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,event_dims,num_samples", [((4, 9), 1, None), ((7,), 0, 3), ((3, 4, 5), 2, 2),
                                                          ((2, 3, 300), 1, 2)])
def test_reparameterize_log_weights(device, dtype, shape, event_dims, num_samples):
    mu, logvar = rand(shape, dtype, device, seed=1), rand(shape, dtype, device, seed=2)

    def fn(m, lv, generator):
        return fastgen.reparameterize_log_weights(m, lv, num_samples=num_samples, event_dims=event_dims,
                                                  generator=generator)

    assert_matches_reference(fn, [mu, logvar], dtype, scale=20, grad_scale=20)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reparameterize_log_weights_with_a_prior(device, dtype):
    """A learned (D,) prior against (B, D) and K = 3, and a prior with a mean only."""
    mu, logvar = rand((5, 6), dtype, device, seed=1), rand((5, 6), dtype, device, seed=2)
    pm, plv = rand((6,), dtype, device, low=-0.5, high=0.5, seed=3), rand((6,), dtype, device, low=-0.5, high=0.5, seed=4)
    assert_matches_reference(
        lambda m, lv, a, b, generator: fastgen.reparameterize_log_weights(
            m, lv, num_samples=3, prior_mu=a, prior_logvar=b, generator=generator),
        [mu, logvar, pm, plv], dtype, scale=20, grad_scale=200,
    )  # fmt: skip
    assert_matches_reference(
        lambda m, lv, a, generator: fastgen.reparameterize_log_weights(m, lv, prior_mu=a, generator=generator),
        [mu, logvar, pm], dtype, scale=20, grad_scale=200,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,event_dims", [((4, 9), 1), ((7,), 0), ((3, 4, 5), 2), ((2, 17000), 1)])
def test_grad_norm_penalty(device, dtype, shape, event_dims):
    grad = rand(shape, dtype, device, seed=1)
    assert_matches_reference(
        lambda g, generator: fastgen.grad_norm_penalty(g, 0.7, event_dims=event_dims), [grad], dtype, scale=10
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3), (7,), (3, 2, 300)])
def test_random_interpolate(device, dtype, shape):
    real, fake = rand(shape, dtype, device, seed=1), rand(shape, dtype, device, seed=2)
    assert_matches_reference(
        lambda r, f, generator: torch.ops.fastgen_triton.random_interpolate(r, f, generator)
        if fastgen.get_backend() == "triton" else reference.random_interpolate(r, f, generator),
        [real, fake], dtype,
    )  # fmt: skip


def test_interpolation_weights_are_the_reference_uniforms(device):
    ones = torch.ones(37, 1, device=device)
    rng_state = torch.tensor([1234, 5], dtype=torch.int64, device=device)
    from fastgen.kernels import grad_norm_penalty as kernels

    weights = torch.empty(37, device=device)
    kernels.uniform_kernel[(1,)](rng_state, weights, 37, BLOCK=64)
    torch.testing.assert_close(weights.cpu(), reference.philox_uniform(37, 1234, 5), rtol=0, atol=0)
    out, w = torch.ops.fastgen_triton._random_interpolate(ones, torch.zeros_like(ones), None)
    assert torch.equal(out.reshape(-1), w) and w.unique().numel() == 37


def test_zero_sizes(device):
    ops = torch.ops.fastgen_triton
    penalty, norm = ops._grad_norm_penalty(torch.zeros(3, 0, device=device), 2.0, 1)
    assert penalty.tolist() == [4.0] * 3 and norm.tolist() == [0.0] * 3
    z, log_w, _ = ops._reparameterize_log_weights(torch.zeros(0, 4, device=device), torch.zeros(0, 4, device=device),
                                                  None, None, 2, 1, None)
    assert z.shape == (2, 0, 4) and log_w.shape == (0,)
