"""The CUDA kernels of csrc/cuda against the CPU kernels and the noise contract.

What the device-parametrized op tests (tests/ops) do not cover: CUDA equal to
CPU for the same (seed, offset) and the same inputs, op by op and dtype by
dtype, through the kernel ops (torch.ops.fastgen._<op>); the generator's Philox state (advance,
reproducibility, CUDA-graph replays drawing fresh noise); torch.compile;
64-bit indexing; the multi-tensor clamp. Skipped without a GPU (tests/cuda/test_noise_backends.py:
the stream across the CUDA, Triton and reference backends).
"""

from __future__ import annotations

import math

import pytest
import torch

import fastgen

ops = torch.ops.fastgen

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# (rtol, atol) of a CUDA result against the CPU kernel's: the same formulas in
# the same compute type, differing in summation order and libm.
TOLERANCE = {
    torch.float32: (1e-4, 1e-5),
    torch.float64: (1e-10, 1e-10),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-2),
}
# rows x cols: a group of lanes per row (cols up to a warp's reach, some not a
# whole 128-bit pack), a block per row, and rows split into chunks.
ROW_SHAPES = ((64, 1), (33, 3), (16, 8), (7, 37), (5, 1000), (3, 5000), (2, 20001), (1, 40000))


@pytest.fixture(autouse=True)
def _cuda_backend():
    """Public ops in these tests run the CUDA kernels (auto might pick Triton)."""
    # The kernel ops (_<op>) have a CUDA kernel; the public ops are CompositeExplicitAutograd.
    if not torch._C._dispatch_has_kernel_for_dispatch_key("fastgen::_gaussian_kl", "CUDA"):
        pytest.skip("needs fastgen built with its CUDA kernels")
    with fastgen.use_backend("cuda"):
        yield


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=rtol, atol=atol * scale, equal_nan=False)


def assert_noisy_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    """assert_close for values carrying eps drawn on two devices: eps is computed in float32 on every
    backend, and CUDA's logf/sincosf and the CPU's differ in its last bits (the design's 1e-5), so a
    float64 result can only match to float32 rounding (measured on an H200: up to 6e-7 absolute)."""
    assert_close(actual, expected, torch.float32 if dtype == torch.float64 else dtype, scale)


def cpu_noise(seed: int, offset: int, n: int, start: int = 0) -> torch.Tensor:
    """Elements [start, start + n) of the stream (seed, offset), from the CPU kernel (start % 4 == 0)."""
    assert start % 4 == 0
    return ops.philox_normal_(torch.empty(n), seed, offset + start // 4)


def seed_offset(rng_state: torch.Tensor) -> tuple[int, int]:
    seed, offset = rng_state.cpu().tolist()
    return seed, offset


def inputs(shape, dtype, device, *, low=-2.0, high=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (high - low) + low).to(dtype).to(device)


# ------------------------------------------------------------------ the noise stream


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1023, 4096, 100_003])
@pytest.mark.parametrize("seed,offset", [(0, 0), (1234, 7), (-(2**62) + 5, 2**40 + 3)])
def test_philox_normal_matches_cpu(n, seed, offset):
    expected = ops.philox_normal_(torch.empty(n), seed, offset)
    actual = ops.philox_normal_(torch.empty(n, device="cuda"), seed, offset)
    torch.testing.assert_close(actual.cpu(), expected, rtol=0, atol=1e-5)
    # An output that is not 16-byte aligned takes the scalar path: the same numbers.
    unaligned = torch.empty(n + 1, device="cuda")[1:]
    ops.philox_normal_(unaligned, seed, offset)
    torch.testing.assert_close(unaligned.cpu(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,num_samples", [((8, 16), None), ((5, 7), 3), ((3, 1000), 2), ((1,), None)])
def test_reparameterize_matches_cpu_stream(dtype, shape, num_samples):
    mu = inputs(shape, dtype, "cuda", seed=1)
    logvar = inputs(shape, dtype, "cuda", seed=2)
    z, rng_state = ops._reparameterize(mu, logvar, num_samples, None)
    assert rng_state.device.type == "cuda" and rng_state.dtype == torch.int64
    seed, offset = seed_offset(rng_state)
    samples = num_samples or 1
    eps = cpu_noise(seed, offset, samples * mu.numel()).reshape(z.shape).double()
    expected = mu.cpu().double() + torch.exp(0.5 * logvar.cpu().double()) * eps
    assert_noisy_close(z.double(), expected.to(dtype).double(), dtype, scale=4)

    # Backward regenerates the same eps from rng_state, on either device.
    grad_z = inputs(z.shape, dtype, "cuda", seed=3)
    grad_logvar = ops._reparameterize_backward(grad_z, logvar, rng_state, num_samples)
    expected_grad = ops._reparameterize_backward(grad_z.cpu(), logvar.cpu(), rng_state.cpu(), num_samples)
    assert_noisy_close(grad_logvar, expected_grad, dtype, scale=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,num_samples,event_dims", [((8, 16), None, 1), ((5, 7), 3, 1), ((4, 3, 5), 2, 2),
                                                           ((3, 6000), None, 1), ((2, 20000), 2, 1),
                                                           ((6, 16), 2, 0), ((5, 7), 2, 0)])
def test_reparameterize_kl_matches_cpu(dtype, shape, num_samples, event_dims):
    mu = inputs(shape, dtype, "cuda", seed=4)
    logvar = inputs(shape, dtype, "cuda", seed=5)
    generator = torch.Generator("cuda").manual_seed(99)
    z, kl, rng_state = ops._reparameterize_kl(mu, logvar, num_samples, event_dims, generator)
    # The same z as reparameterize for the same generator state.
    z_alone, _ = ops._reparameterize(mu, logvar, num_samples, torch.Generator("cuda").manual_seed(99))
    torch.testing.assert_close(z, z_alone)

    _, expected_kl, _ = ops._reparameterize_kl(mu.cpu(), logvar.cpu(), num_samples, event_dims, None)
    cols = math.prod(shape[len(shape) - event_dims :])
    assert_close(kl, expected_kl, dtype, scale=cols)

    grad_z = inputs(z.shape, dtype, "cuda", seed=6)
    grad_kl = inputs(kl.shape, kl.dtype, "cuda", seed=7)
    for gz, gk in ((grad_z, grad_kl), (grad_z, None), (None, grad_kl)):
        actual = ops._reparameterize_kl_backward(gz, gk, mu, logvar, rng_state, num_samples, event_dims)
        expected = ops._reparameterize_kl_backward(
            None if gz is None else gz.cpu(), None if gk is None else gk.cpu(), mu.cpu(), logvar.cpu(),
            rng_state.cpu(), num_samples, event_dims)
        for a, e in zip(actual, expected):
            assert_noisy_close(a, e, dtype, scale=4)


def test_generator_offset_advances_by_the_counters_used():
    generator = torch.Generator("cuda").manual_seed(5)
    mu = torch.zeros(10, device="cuda")
    _, first = ops._reparameterize(mu, mu, 3, generator)
    _, second = ops._reparameterize(mu, mu, None, generator)
    seed1, offset1 = seed_offset(first)
    seed2, offset2 = seed_offset(second)
    assert seed1 == seed2 == 5
    # 30 normals use 8 randn4x counters.
    assert (offset1, offset2) == (0, 8)


def test_manual_seed_reproduces_noise():
    mu = torch.zeros(1000, device="cuda")
    logvar = torch.zeros(1000, device="cuda")
    torch.manual_seed(123)
    first = fastgen.reparameterize(mu, logvar)
    second_draw = fastgen.reparameterize(mu, logvar)
    torch.manual_seed(123)
    again = fastgen.reparameterize(mu, logvar)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, second_draw)


# --------------------------------------------------------------- deterministic row ops


def _row_operands(rows, cols, dtype, count, broadcast=()):
    """count operands of shape (rows, cols); those whose index is in `broadcast` of shape (cols,)."""
    return [inputs((cols,) if i in broadcast else (rows, cols), dtype, "cuda", seed=10 + i) for i in range(count)]


def _compare_op(forward, backward, cuda_args, dtype, cols):
    cpu_args = [a.cpu() if isinstance(a, torch.Tensor) else a for a in cuda_args]
    out = forward(*cuda_args)
    expected = forward(*cpu_args)
    assert out.dtype == expected.dtype
    assert_close(out, expected, dtype, scale=max(cols, 1))
    grad = inputs(out.shape, out.dtype, "cuda", seed=50)
    grads = backward(grad, cuda_args)
    expected_grads = backward(grad.cpu(), cpu_args)
    for a, e in zip(grads, expected_grads):
        assert a.shape == e.shape
        assert_close(a, e, dtype, scale=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", ROW_SHAPES)
@pytest.mark.parametrize("prior", ["none", "full", "broadcast", "mean_only"])
def test_gaussian_kl_matches_cpu(dtype, rows, cols, prior):
    mu, logvar, prior_mu, prior_logvar = _row_operands(rows, cols, dtype, 4, broadcast=(2, 3) if prior == "broadcast" else ())
    if prior == "none":
        prior_mu = prior_logvar = None
    if prior == "mean_only":
        prior_logvar = None
    _compare_op(
        lambda *a: ops._gaussian_kl(*a, 1),
        lambda g, a: ops._gaussian_kl_backward(g, *a, 1, a[3] is not None),
        [mu, logvar, prior_mu, prior_logvar], dtype, cols)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", ROW_SHAPES)
@pytest.mark.parametrize("broadcast_target", [False, True])
def test_bernoulli_log_likelihood_matches_cpu(dtype, rows, cols, broadcast_target):
    logits = inputs((rows, cols), dtype, "cuda", low=-8, high=8, seed=20)
    target = inputs((cols,) if broadcast_target else (rows, cols), dtype, "cuda", low=0, high=1, seed=21)
    for target_grad in (False, True):
        _compare_op(
            lambda *a: ops._bernoulli_log_likelihood(*a, 1),
            lambda g, a: ops._bernoulli_log_likelihood_backward(g, *a, 1, target_grad),
            [logits, target], dtype, cols)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", ROW_SHAPES)
@pytest.mark.parametrize("with_logvar", [False, True])
def test_gaussian_log_likelihood_matches_cpu(dtype, rows, cols, with_logvar):
    x, mean, logvar = _row_operands(rows, cols, dtype, 3, broadcast=(1,))
    _compare_op(
        lambda *a: ops._gaussian_log_likelihood(*a, 1),
        lambda g, a: ops._gaussian_log_likelihood_backward(g, *a, 1),
        [x, mean, logvar if with_logvar else None], dtype, cols)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 16), (6, 5), (64,), (35,)])
@pytest.mark.parametrize("prior", ["full", "broadcast"])
def test_element_wise_terms_match_cpu(dtype, shape, prior):
    """event_dims=0: one term per element. Whole 128-bit groups ((6, 16), (64,)) take the flat
    vectorized path, a prior of the last dimension repeating every 16 elements in whole groups;
    the others the one-element path, the (5,) prior's period not being whole groups."""
    mu = inputs(shape, dtype, "cuda", seed=60)
    logvar = inputs(shape, dtype, "cuda", seed=61)
    prior_shape = shape if prior == "full" else shape[-1:]
    prior_mu = inputs(prior_shape, dtype, "cuda", seed=62)
    prior_logvar = inputs(prior_shape, dtype, "cuda", seed=63)
    _compare_op(
        lambda *a: ops._gaussian_kl(*a, 0),
        lambda g, a: ops._gaussian_kl_backward(g, *a, 0, True),
        [mu, logvar, prior_mu, prior_logvar], dtype, 1)
    target = inputs(prior_shape, dtype, "cuda", low=0, high=1, seed=64)
    _compare_op(
        lambda *a: ops._bernoulli_log_likelihood(*a, 0),
        lambda g, a: ops._bernoulli_log_likelihood_backward(g, *a, 0, True),
        [mu, target], dtype, 1)


def test_unaligned_operands_match_aligned():
    """An operand that is not 16-byte aligned takes the scalar path with the same result."""
    mu = inputs((64, 32), torch.float32, "cuda", seed=30)
    logvar = inputs((64, 32), torch.float32, "cuda", seed=31)
    shifted = torch.empty(mu.numel() + 1, device="cuda")[1:].view(64, 32)
    shifted.copy_(mu)
    expected = ops._gaussian_kl(mu, logvar, None, None, 1)
    torch.testing.assert_close(ops._gaussian_kl(shifted, logvar, None, None, 1), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cols", [3, 1000, 50_000])
def test_row_sums_are_identical_run_to_run(cols):
    x = inputs((64, cols), torch.float32, "cuda", seed=40)
    mean = inputs((64, cols), torch.float32, "cuda", seed=41)
    first = ops._gaussian_log_likelihood(x, mean, None, 1)
    for _ in range(3):
        assert torch.equal(ops._gaussian_log_likelihood(x, mean, None, 1), first)


# ------------------------------------------------------------------------- clamp


def _clamp_case(sizes, dtype=torch.float32):
    tensors = [inputs((n,), dtype, "cuda", low=-3, high=3, seed=i % 7) for i, n in enumerate(sizes)]
    expected = [t.clamp(-1.0, 1.5) for t in tensors]
    ops._clamp_(tensors, -1.0, 1.5)
    for t, e in zip(tensors, expected):
        assert torch.equal(t, e)


def test_clamp_more_tensors_than_one_launch_holds():
    # One launch holds 1360 tensors (160 with a toolkit before CUDA 12.1): 3000 take
    # three launches, the last one the small argument struct; empty tensors between.
    sizes = [(i * 37) % 300 for i in range(3000)]
    _clamp_case(sizes)


def test_clamp_large_tensor_among_many_small_ones():
    # Hundreds of chunks of the large tensor and one chunk per small one, in one launch
    # of the large argument struct (more than 160 tensors); the list ends empty.
    _clamp_case([5, 400 * 65536 + 3] + [17] * 200 + [0])
    _clamp_case([5, 400 * 65536 + 3, 17, 0])
    _clamp_case([0])
    _clamp_case([10, 0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_clamp_dtypes_unaligned_and_nan(dtype):
    base = inputs((70_001,), dtype, "cuda", low=-3, high=3, seed=8)
    unaligned = torch.empty(base.numel() + 1, dtype=dtype, device="cuda")[1:]
    unaligned.copy_(base)
    unaligned[5] = float("nan")
    expected = unaligned.clone().clamp_(-0.1, 0.3)
    ops._clamp_([unaligned, base], -0.1, 0.3)
    assert torch.equal(unaligned.isnan(), expected.isnan())
    torch.testing.assert_close(unaligned, expected, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(base, base.cpu().clamp(-0.1, 0.3).cuda(), rtol=0, atol=0)


def test_clip_weights_module_one_group_per_dtype():
    module = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.Linear(20, 3)).cuda()
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(10)
    fastgen.clip_weights_(module, 0.01)
    assert all(p.abs().max() <= 0.01 for p in module.parameters())


# ----------------------------------------------------------------- CUDA graphs


def test_cuda_graph_replays_draw_fresh_noise_and_correct_gradients():
    mu = inputs((64, 32), torch.float32, "cuda", seed=60).requires_grad_()
    logvar = inputs((64, 32), torch.float32, "cuda", seed=61).requires_grad_()
    weight = inputs((64, 32), torch.float32, "cuda", seed=62)

    def step():
        z = fastgen.reparameterize(mu, logvar)
        (z * weight).sum().backward()
        return z

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside capture, as torch.cuda.graphs asks
            step()
            mu.grad = logvar.grad = None
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_z = step()

    draws = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        z = static_z.detach().clone()
        std = torch.exp(0.5 * logvar.detach())
        eps = (z - mu.detach()) / std
        torch.testing.assert_close(mu.grad, weight)
        torch.testing.assert_close(logvar.grad, 0.5 * weight * std * eps, rtol=1e-4, atol=1e-5)
        draws.append(z)
    assert not torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[1], draws[2])
    # Each replay's noise is a standard normal sample.
    eps = (draws[0] - mu.detach()) / torch.exp(0.5 * logvar.detach())
    assert abs(eps.mean().item()) < 0.1 and abs(eps.std().item() - 1) < 0.1


# ----------------------------------------------------------------- torch.compile


def test_torch_compile_fullgraph_on_cuda():
    mu = inputs((16, 8), torch.float32, "cuda", seed=70).requires_grad_()
    logvar = inputs((16, 8), torch.float32, "cuda", seed=71).requires_grad_()
    data = inputs((16, 8), torch.float32, "cuda", low=0, high=1, seed=72)

    def loss(mu, logvar, data):
        z, kl = fastgen.reparameterize_kl(mu, logvar)
        recon = fastgen.bernoulli_log_likelihood(z, data, reduction="sum")
        prior = fastgen.gaussian_kl(mu, logvar, torch.zeros(8, device="cuda"), None, reduction="sum")
        return kl.sum() - recon + prior + fastgen.gaussian_log_likelihood(z, mu, logvar, reduction="mean")

    compiled = torch.compile(loss, fullgraph=True)
    # Compile (forward and backward) first, so that compiling draws nothing below.
    torch.autograd.grad(compiled(mu, logvar, data), (mu, logvar))
    torch.manual_seed(0)
    expected = loss(mu, logvar, data)
    expected_grads = torch.autograd.grad(expected, (mu, logvar))
    torch.manual_seed(0)
    actual = compiled(mu, logvar, data)
    actual_grads = torch.autograd.grad(actual, (mu, logvar))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    for a, e in zip(actual_grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- 64-bit indexing


def _free_gpu_bytes() -> int:
    free, _ = torch.cuda.mem_get_info()
    return free


def test_reparameterize_beyond_2_31_elements():
    n = 2**31 + 7  # float16: 4 GiB per tensor; mu, logvar and z
    if _free_gpu_bytes() < 3 * 2 * n + (1 << 30):
        pytest.skip("needs about 14 GB of free GPU memory")
    mu = torch.zeros(n, dtype=torch.float16, device="cuda")
    logvar = torch.zeros(n, dtype=torch.float16, device="cuda")
    z, rng_state = ops._reparameterize(mu, logvar, None, None)
    del mu, logvar
    seed, offset = seed_offset(rng_state)
    start = (n - 20) // 4 * 4
    expected = cpu_noise(seed, offset, n - start, start=start).to(torch.float16)
    torch.testing.assert_close(z[start:].cpu(), expected, rtol=1e-3, atol=1e-3)
    head = cpu_noise(seed, offset, 16).to(torch.float16)
    torch.testing.assert_close(z[:16].cpu(), head, rtol=1e-3, atol=1e-3)


def test_clamp_beyond_2_31_elements():
    n = 2**31 + 5  # float16, and a bool tensor to check it
    if _free_gpu_bytes() < 3 * n + (1 << 30):
        pytest.skip("needs about 8 GB of free GPU memory")
    t = torch.full((n,), 3.0, dtype=torch.float16, device="cuda")
    t[-1] = -3.0
    ops._clamp_([t], -1.0, 1.0)
    assert t[-1].item() == -1.0
    assert t[-6:-1].eq(1.0).all().item()
    assert t.eq(1.0).sum().item() == n - 1
