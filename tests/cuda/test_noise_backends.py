"""One noise stream on every CUDA backend (design.md, "The noise stream"), through the public ops.

* For the same generator state, the CUDA C++ backend, the Triton backend and the
  reference draw the same z (within 1e-5) for reparameterize and reparameterize_kl,
  with and without num_samples, and leave the generator in the same state.
* A call captured in a CUDA graph draws fresh noise on every replay, on the CUDA
  C++ and the Triton backend; re-seeding the generator and replaying draws the same
  noise again. A Triton kernel whose autotuning key is first seen under capture
  runs a pinned config instead of benchmarking (kernels/_tiles.py, autotune).

Skipped without a GPU; the Triton cases also without the triton backend.
"""

from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen import reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# (shape, num_samples, event_dims): odd rows that are not whole 128-bit packs, the
# sizes VAEs train at, a sample count that makes later samples start unaligned, and
# more than one event dim.
CASES = [
    ((4, 9), None, 1),
    ((4, 9), 3, 1),
    ((128, 20), None, 1),
    ((128, 20), 5, 1),
    ((3, 5, 8), 2, 2),
    ((1000,), None, 1),
]
SEED = 1234


def _need(backend: str) -> None:
    if backend not in fastgen.available_backends():
        pytest.skip(f"needs the {backend} backend")
    if "cuda" not in fastgen.ops.backend_device_types(backend):
        pytest.skip(f"the {backend} backend does not run on CUDA tensors here")


def _inputs(shape, dtype):
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).cuda()
    logvar = (0.5 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).cuda()
    return mu, logvar


def _draw(backend, op, mu, logvar, num_samples, event_dims):
    """Two draws from one fresh generator (the second checks how far the first advanced it)."""
    generator = torch.Generator("cuda").manual_seed(SEED)
    with fastgen.use_backend(backend):
        if op == "reparameterize":
            draws = [fastgen.reparameterize(mu, logvar, num_samples=num_samples, generator=generator)
                     for _ in range(2)]
        else:
            draws = [fastgen.reparameterize_kl(mu, logvar, num_samples=num_samples, generator=generator,
                                               event_dims=event_dims)[0] for _ in range(2)]
    return draws, generator.get_offset()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,num_samples,event_dims", CASES)
@pytest.mark.parametrize("op", ["reparameterize", "reparameterize_kl"])
def test_backends_draw_the_same_z(op, shape, num_samples, event_dims, dtype):
    mu, logvar = _inputs(shape, dtype)
    expected, expected_offset = _draw("reference", op, mu, logvar, num_samples, event_dims)
    assert not torch.equal(expected[0], expected[1])
    compared = []
    for backend in ("cuda", "triton"):
        if backend not in fastgen.available_backends():
            continue
        draws, offset = _draw(backend, op, mu, logvar, num_samples, event_dims)
        for actual, wanted in zip(draws, expected):
            assert actual.shape == wanted.shape and actual.dtype == wanted.dtype
            torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-5, msg=lambda m: f"{backend}: {m}")
        assert offset == expected_offset, f"{backend} advanced the generator to {offset}, the reference to {expected_offset}"
        compared.append(backend)
    if not compared:
        pytest.skip("needs the cuda or the triton backend")


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_reparameterize_kl_z_is_reparameterize_z(backend):
    """On each backend, reparameterize_kl draws exactly reparameterize's sample for one generator state."""
    _need(backend)
    mu, logvar = _inputs((64, 20), torch.float32)
    z, _ = _draw(backend, "reparameterize", mu, logvar, 3, 1)
    z_kl, _ = _draw(backend, "reparameterize_kl", mu, logvar, 3, 1)
    torch.testing.assert_close(z_kl, z, rtol=0, atol=0)


def _capture(step, warm_up: bool):
    """A CUDA graph of step(); warmed up on a side stream first (autotuning and compiling) when asked."""
    if warm_up:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph, out


def _replay(graph, out):
    graph.replay()
    torch.cuda.synchronize()
    return out.detach().clone()


def _check_replays(graph, z, mu, logvar):
    first = _replay(graph, z)
    second = _replay(graph, z)
    assert not torch.equal(first, second), "two replays drew the same noise"
    torch.cuda.manual_seed(SEED)
    again = _replay(graph, z)
    torch.cuda.manual_seed(SEED)
    once_more = _replay(graph, z)
    torch.testing.assert_close(once_more, again, rtol=0, atol=0)
    assert not torch.equal(again, second)
    # Each replay's noise is standard normal: (z - mu) / std has mean 0 and variance 1.
    eps = (first - mu) / torch.exp(0.5 * logvar)
    assert abs(eps.mean().item()) < 0.1 and abs(eps.std().item() - 1) < 0.1


@pytest.mark.parametrize("num_samples", [None, 2])
@pytest.mark.parametrize("op", ["reparameterize", "reparameterize_kl"])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_replays_draw_fresh_noise_and_reseeding_reproduces(backend, op, num_samples):
    _need(backend)
    mu, logvar = _inputs((64, 32), torch.float32)

    def step():
        with fastgen.use_backend(backend):
            if op == "reparameterize":
                return fastgen.reparameterize(mu, logvar, num_samples=num_samples)
            return fastgen.reparameterize_kl(mu, logvar, num_samples=num_samples)[0]

    graph, z = _capture(step, warm_up=True)
    _check_replays(graph, z, mu, logvar)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_replays_match_the_reference(backend):
    """A replay's z is the reference's for the generator state the replay read."""
    _need(backend)
    mu, logvar = _inputs((32, 16), torch.float32)
    generator = torch.cuda.default_generators[torch.cuda.current_device()]

    def step():
        with fastgen.use_backend(backend):
            return fastgen.reparameterize(mu, logvar, num_samples=2)

    graph, z = _capture(step, warm_up=True)
    for _ in range(2):
        torch.cuda.manual_seed(SEED)
        replayed = _replay(graph, z)
        torch.cuda.manual_seed(SEED)
        with fastgen.use_backend("reference"):
            expected = fastgen.reparameterize(mu, logvar, num_samples=2, generator=generator)
        torch.testing.assert_close(replayed, expected, rtol=1e-5, atol=1e-5)


def test_triton_key_first_seen_under_capture():
    """A shape whose autotuning key was never tuned is captured without benchmarking (a pinned config)."""
    _need("triton")
    from fastgen.kernels import _tiles

    warm_mu, warm_logvar = _inputs((64, 32), torch.float32)
    with fastgen.use_backend("triton"):  # compiles the kernels for this specialization
        fastgen.reparameterize_kl(warm_mu, warm_logvar)
        fastgen.reparameterize(warm_mu, warm_logvar)
    torch.cuda.synchronize()
    mu, logvar = _inputs((96, 48), torch.float32)  # new keys (rows, cols, numel)

    def step():
        with fastgen.use_backend("triton"):
            z, kl = fastgen.reparameterize_kl(mu, logvar)
            return z + 0 * kl[:, None] + fastgen.reparameterize(mu, logvar)

    graph, z = _capture(step, warm_up=False)
    first = _replay(graph, z)
    second = _replay(graph, z)
    assert not torch.equal(first, second)
    # Outside capture the new keys are tuned as usual, with the pinned config among the candidates.
    with fastgen.use_backend("triton"):
        fastgen.reparameterize_kl(mu, logvar)
    assert _tiles.CAPTURE_SHAPE in _tiles.TUNED_SHAPES
    # reference check of one replay: the z of reparameterize_kl plus that of reparameterize,
    # drawn one after the other from the default generator.
    torch.cuda.manual_seed(SEED)
    replayed = _replay(graph, z)
    torch.cuda.manual_seed(SEED)
    with fastgen.use_backend("reference"):
        expected = fastgen.reparameterize_kl(mu, logvar)[0] + fastgen.reparameterize(mu, logvar)
    torch.testing.assert_close(replayed, expected, rtol=1e-5, atol=1e-5)


def test_reference_stream_equals_philox_normal_under_the_same_state():
    """The reference backend's eps is philox_normal of the state philox_state hands out."""
    mu = torch.zeros(257, device="cuda")
    generator = torch.Generator("cuda").manual_seed(SEED)
    state = torch.ops.fastgen.philox_state(mu, generator, mu.numel())
    seed, offset = state.tolist()
    with fastgen.use_backend("reference"):
        z = fastgen.reparameterize(mu, torch.zeros_like(mu), generator=torch.Generator("cuda").manual_seed(SEED))
    torch.testing.assert_close(z, reference.philox_normal(mu.numel(), seed, offset, device="cuda"), rtol=0, atol=0)


FIRST_LAUNCH_SCRIPT = """
import torch, fastgen
backend = {backend!r}
mu = torch.randn(8, 12, dtype=torch.float64, device="cuda")
logvar = torch.zeros_like(mu)
graph = torch.cuda.CUDAGraph()
with fastgen.use_backend(backend):
    with torch.cuda.graph(graph):
        z, kl = fastgen.reparameterize_kl(mu, logvar, num_samples=3)
graph.replay(); torch.cuda.synchronize(); first = z.clone()
graph.replay(); torch.cuda.synchronize()
assert not torch.equal(first, z), "two replays drew the same noise"
print("ok")
"""


@pytest.mark.parametrize("backend", [
    "cuda",
    # torch asks for a warm-up before capture; whether Triton may compile and load a module
    # while a stream captures is what this finds out (XPASS: it may).
    pytest.param("triton", marks=pytest.mark.xfail(reason="compiles and loads a Triton module under capture",
                                                   strict=False)),
])
def test_first_launch_of_a_kernel_inside_capture(backend):
    """In a fresh process, a kernel's very first launch is captured: the CUDA kernels' occupancy
    query (cached per kernel) and philox_state, or Triton's compile and pinned config, under capture."""
    import subprocess
    import sys

    _need(backend)
    proc = subprocess.run([sys.executable, "-c", FIRST_LAUNCH_SCRIPT.format(backend=backend)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
