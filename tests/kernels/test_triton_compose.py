"""The Triton ops compose with torch.compile (one graph, no break), autocast and CUDA graphs.

On a CUDA GPU torch.compile runs Inductor, which sees the kernels (triton_op); under
the interpreter it runs Dynamo with the eager backend, which checks that the whole
path from fastgen's public ops down to the kernels is traced as one graph.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="needs Triton")


import fastgen  # noqa: E402  (after the Triton check)
from fastgen import reference  # noqa: E402  (after the Triton check)



def vae_loss(mu, logvar, logits, x):
    """A VAE-style loss through every op with gradients."""
    z, kl = fastgen.reparameterize_kl(mu, logvar, num_samples=2)
    return (
        kl.sum()
        + fastgen.gaussian_kl(mu, logvar, torch.zeros_like(mu[0]), reduction="sum")
        - fastgen.bernoulli_log_likelihood(logits, x, reduction="sum")
        - fastgen.gaussian_log_likelihood(z, mu, logvar, reduction="sum")
        + fastgen.reparameterize(mu, logvar).square().sum()
    )


def _inputs(device):
    g = torch.Generator().manual_seed(0)
    mu, logvar, logits = (torch.randn(4, 8, generator=g).to(device).requires_grad_() for _ in range(3))
    return mu, logvar, logits, torch.rand(4, 8, generator=g).to(device)


def _loss_and_grads(fn, inputs):
    torch.manual_seed(1)
    if inputs[0].is_cuda:
        torch.cuda.manual_seed(1)
    loss = fn(*inputs)
    return (loss, *torch.autograd.grad(loss, inputs[:3]))


def test_compile_fullgraph(device):
    backend = "inductor" if device.type == "cuda" else "eager"
    inputs = _inputs(device)
    torch._dynamo.reset()
    compiled = torch.compile(vae_loss, backend=backend, fullgraph=True)
    # Inductor draws the seed with its own RNG unless told to fall back to eager's.
    with torch._inductor.config.patch(fallback_random=True):
        actual = _loss_and_grads(compiled, inputs)
    expected = _loss_and_grads(vae_loss, inputs)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_autocast(device):
    """Under autocast the ops run on what they are given; half inputs give float32 sums."""
    mu = torch.randn(3, 16, device=device, dtype=torch.float16)
    with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16):
        kl = fastgen.gaussian_kl(mu, mu)
    assert kl.dtype == torch.float32
    with fastgen.use_backend("reference"):
        torch.testing.assert_close(kl, fastgen.gaussian_kl(mu.float(), mu.float()), rtol=1e-3, atol=1e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("op", ["reparameterize", "reparameterize_kl"])
def test_cuda_graph_replays_draw_fresh_noise(op, device):
    mu = torch.randn(64, 32, device=device)
    logvar = torch.randn(64, 32, device=device)
    triton_ops = torch.ops.fastgen_triton  # the kernel ops, which also return rng_state

    def step():
        if op == "reparameterize":
            return triton_ops._reparameterize(mu, logvar, 2, None)
        z, _, rng_state = triton_ops._reparameterize_kl(mu, logvar, 2, 1, None)
        return z, rng_state

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # autotuning and compilation happen before capture
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        z, rng_state = step()
    samples = []
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        seed, offset = rng_state.tolist()
        eps = reference.philox_normal(z.numel(), seed, offset, device=device).reshape(z.shape)
        torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps, rtol=1e-5, atol=1e-5)
        samples.append(z.clone())
    assert not torch.equal(samples[0], samples[1])

