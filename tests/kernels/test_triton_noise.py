"""reparameterize and reparameterize_kl under the "triton" backend: the noise stream against the
CPU kernel and the reference for the same seed and offset, samples and gradients against the
reference for the same generator state, eps regenerated in backward.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="needs Triton")


import fastgen  # noqa: E402  (after the Triton check)
from fastgen import reference  # noqa: E402  (after the Triton check)
from fastgen.kernels import reparameterize as triton_reparameterize  # noqa: E402

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
TOL = {
    torch.float64: (1e-6, 1e-6),  # eps is float32 on every backend
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}
SEEDS_AND_OFFSETS = [(0, 0), (12345, 3), (-(2**63), 2**33 + 5), (2**62 + 7, 1)]


def stream(device, seed, offset, numel, num_samples=None):
    """The noise of the Triton kernel for (seed, offset): z with mu = 0, logvar = 0."""
    zeros = torch.zeros(numel, device=device)
    rng_state = torch.tensor([seed, offset], dtype=torch.int64, device=device)
    return triton_reparameterize.reparameterize(zeros, zeros, rng_state, num_samples).reshape(-1)


@pytest.mark.parametrize("seed,offset", SEEDS_AND_OFFSETS)
@pytest.mark.parametrize("numel,num_samples", [(37, None), (4096 + 3, None), (10, 3)])
def test_stream_matches_reference(device, seed, offset, numel, num_samples):
    """Element i is lane i % 4 of randn4x(seed, offset + i // 4); 10 x 3 samples take the unaligned path."""
    eps = stream(device, seed, offset, numel, num_samples)
    expected = reference.philox_normal(eps.numel(), seed, offset, device=device)
    torch.testing.assert_close(eps, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(fastgen.ops._common._C is None, reason="needs the compiled extension (its CPU kernel)")
@pytest.mark.parametrize("seed,offset", SEEDS_AND_OFFSETS)
def test_stream_matches_cpu_kernel(device, seed, offset):
    eps = stream(device, seed, offset, 1031)
    expected = torch.ops.fastgen.philox_normal_(torch.empty(1031), seed, offset)
    torch.testing.assert_close(eps.cpu(), expected, rtol=1e-5, atol=1e-5)


def test_kl_kernel_draws_the_same_stream(device):
    """reparameterize_kl's tiled kernel, aligned (cols % 4 == 0) or not, draws the same noise."""
    for shape, num_samples in (((6, 8), None), ((5, 3), 2), ((3, 7), None)):
        zeros = torch.zeros(shape, device=device)
        rng_state = torch.tensor([99, 6], dtype=torch.int64, device=device)
        z, _ = triton_reparameterize.reparameterize_kl(zeros, zeros, rng_state, num_samples, 1)
        expected = reference.philox_normal(z.numel(), 99, 6, device=device)
        torch.testing.assert_close(z.reshape(-1), expected, rtol=1e-5, atol=1e-5)


def _inputs(shape, dtype, device):
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device).requires_grad_()
    logvar = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device).requires_grad_()
    return mu, logvar


def _run(backend, fn, mu, logvar):
    mu, logvar = mu.detach().clone().requires_grad_(), logvar.detach().clone().requires_grad_()
    with fastgen.use_backend(backend):
        outs = fn(mu, logvar, torch.Generator(device=mu.device).manual_seed(7))
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((out.double() * torch.linspace(-1, 1, out.numel(), dtype=torch.float64, device=out.device).reshape(out.shape)).sum() for out in outs)
    return outs, torch.autograd.grad(loss, (mu, logvar))


def _assert_close(actual, expected, dtype):
    rtol, atol = TOL[dtype]
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape
        torch.testing.assert_close(a.double().cpu(), e.double().cpu(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,num_samples", [((4, 9), None), ((3, 5), 3), ((2, 3, 8), 2)])
def test_reparameterize_matches_reference(device, dtype, shape, num_samples):
    """Same generator state, same z; gradients from eps regenerated in backward."""
    fn = lambda m, lv, g: fastgen.reparameterize(m, lv, num_samples=num_samples, generator=g)  # noqa: E731
    outs, grads = _run("triton", fn, *_inputs(shape, dtype, device))
    expected_outs, expected_grads = _run("reference", fn, *_inputs(shape, dtype, device))
    _assert_close(outs, expected_outs, dtype)
    _assert_close(grads, expected_grads, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,num_samples,event_dims", [((4, 8), None, 1), ((3, 5), 3, 1), ((2, 3, 6), 2, 2), ((7,), None, 0)])
def test_reparameterize_kl_matches_reference(device, dtype, shape, num_samples, event_dims):
    fn = lambda m, lv, g: fastgen.reparameterize_kl(m, lv, num_samples=num_samples, generator=g, event_dims=event_dims)  # noqa: E731
    outs, grads = _run("triton", fn, *_inputs(shape, dtype, device))
    expected_outs, expected_grads = _run("reference", fn, *_inputs(shape, dtype, device))
    _assert_close(outs, expected_outs, dtype)
    _assert_close(grads, expected_grads, dtype)


def test_reparameterize_kl_draws_the_sample_of_reparameterize(device):
    mu, logvar = _inputs((5, 6), torch.float32, device)
    z = fastgen.reparameterize(mu, logvar, generator=torch.Generator(device=device).manual_seed(3))
    z_kl, _ = fastgen.reparameterize_kl(mu, logvar, generator=torch.Generator(device=device).manual_seed(3))
    torch.testing.assert_close(z, z_kl)


def test_rng_state_and_fresh_noise(device):
    """rng_state is int64 [seed, offset] on the device, from the device's generator: on the CPU a new
    seed per call at offset 0; on CUDA the generator's seed, its offset advanced by each call."""
    mu, logvar = _inputs((4, 8), torch.float32, device)
    torch.manual_seed(5)
    _, rng_state = torch.ops.fastgen_triton._reparameterize(mu, logvar, None, None)
    _, next_state = torch.ops.fastgen_triton._reparameterize(mu, logvar, None, None)
    assert rng_state.dtype == torch.int64 and rng_state.device == mu.device and rng_state.shape == (2,)
    (seed, offset), (next_seed, next_offset) = rng_state.tolist(), next_state.tolist()
    if device.type == "cpu":
        assert offset == next_offset == 0 and seed != next_seed
    else:
        assert seed == next_seed == 5 and offset == 0 and next_offset >= 8  # 32 normals: 8 counters
    torch.manual_seed(0)
    first = fastgen.reparameterize(mu, logvar)
    second = fastgen.reparameterize(mu, logvar)
    assert not torch.equal(first, second)
    torch.manual_seed(0)
    torch.testing.assert_close(fastgen.reparameterize(mu, logvar), first)


def test_backward_saves_no_noise(device):
    """Autograd keeps logvar and rng_state, nothing of the size of the K samples."""
    mu, logvar = _inputs((4, 8), torch.float32, device)
    saved_sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved_sizes.append(t.numel()) or t, lambda t: t):
        z = fastgen.reparameterize(mu, logvar, num_samples=3)
    assert saved_sizes and max(saved_sizes) <= mu.numel()
    z.sum().backward()


def test_zero_size(device):
    empty = torch.zeros(0, 3, device=device, requires_grad=True)
    z = fastgen.reparameterize(empty, empty, num_samples=2)
    assert z.shape == (2, 0, 3)
    z.sum().backward()
    assert empty.grad.shape == (0, 3)
