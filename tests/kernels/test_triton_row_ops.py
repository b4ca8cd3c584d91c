"""The Triton row ops (gaussian_kl, reparameterize_kl's KL, the log-likelihoods), forward and backward,
against fastgen.reference, through the public API under the "triton" backend.

Shapes cover several rows per tile (short rows), rows of one element
(event_dims=0), broadcast operands that repeat over rows, and a row long
enough to be split into a two-stage reduction.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="needs Triton")


import fastgen  # noqa: E402  (after the Triton check)

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# (rtol, atol) of a result in each dtype against the reference on the same inputs.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}
# (shape, event_dims): rows packed into tiles, one-element rows, whole-tensor sums.
SHAPES = [((4, 9), 1), ((7,), 0), ((3, 4, 5), 2), ((2, 3, 300), 1)]
# Gradients of a broadcast operand are full-size gradients in the input dtype summed
# over the repeats (as for the C++ kernels), so half types lose a little more.
FOLD_SCALE = 10.0
# Longer than two splits of kernels._tiles.SPLIT_COLS with few rows: the two-stage reduction.
LONG_ROW = ((2, 17000), 1)


def rand(shape, dtype, device, low=-1.5, high=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g, dtype=torch.float64) * (high - low) + low
    return t.to(dtype).to(device).requires_grad_()


def run(backend, fn, inputs):
    """fn(*inputs) and the gradients of a weighted sum of its output, under `backend`."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    with fastgen.use_backend(backend):
        out = fn(*leaves)
    weights = torch.linspace(-1.0, 1.0, out.numel(), dtype=torch.float64, device=out.device).reshape(out.shape)
    grads = torch.autograd.grad((out.double() * weights).sum(), [t for t in leaves if t is not None])
    return out, grads


def assert_matches_reference(fn, inputs, dtype, scale=1.0, grad_scale=1.0):
    """Output within the dtype's tolerance times `scale`, gradients times `grad_scale`."""
    out, grads = run("triton", fn, inputs)
    expected, expected_grads = run("reference", fn, inputs)
    rtol, atol = TOL[dtype]
    assert out.dtype == expected.dtype and out.shape == expected.shape
    torch.testing.assert_close(out.double().cpu(), expected.double().cpu(), rtol=rtol * scale, atol=atol * scale)
    for grad, expected_grad in zip(grads, expected_grads):
        assert grad.dtype == expected_grad.dtype and grad.shape == expected_grad.shape
        torch.testing.assert_close(
            grad.double().cpu(), expected_grad.double().cpu(), rtol=rtol * grad_scale, atol=atol * grad_scale
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,event_dims", SHAPES)
def test_gaussian_kl_std_normal(device, dtype, shape, event_dims):
    mu, logvar = rand(shape, dtype, device, seed=1), rand(shape, dtype, device, seed=2)
    assert_matches_reference(lambda m, lv: fastgen.gaussian_kl(m, lv, event_dims=event_dims), [mu, logvar], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_kl_broadcast_prior(device, dtype):
    """A learned prior (D,) against (B, K, D), and a prior with only a log-variance."""
    mu, logvar = rand((2, 3, 300), dtype, device, seed=1), rand((2, 3, 300), dtype, device, seed=2)
    prior_mu, prior_logvar = rand((300,), dtype, device, seed=3), rand((300,), dtype, device, seed=4)
    assert_matches_reference(
        lambda m, lv, pm, plv: fastgen.gaussian_kl(m, lv, pm, plv),
        [mu, logvar, prior_mu, prior_logvar],
        dtype,
        grad_scale=FOLD_SCALE,
    )
    assert_matches_reference(
        lambda m, lv, plv: fastgen.gaussian_kl(m, lv, None, plv, event_dims=2),
        [mu, logvar, prior_logvar],
        dtype,
        grad_scale=FOLD_SCALE,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,event_dims", SHAPES)
def test_bernoulli_log_likelihood(device, dtype, shape, event_dims):
    # Within torch's softplus threshold (20), beyond which its gradient is 1, not sigmoid.
    logits = rand(shape, dtype, device, low=-15.0, high=15.0, seed=1)
    target = rand(shape, dtype, device, low=0.0, high=1.0, seed=2)
    assert_matches_reference(
        lambda lg, t: fastgen.bernoulli_log_likelihood(lg, t, event_dims=event_dims), [logits, target], dtype, scale=10
    )


def test_bernoulli_log_likelihood_stable_for_large_logits(device):
    logits = torch.tensor([[-200.0, -80.0, -1e-3, 0.0, 1e-3, 80.0, 200.0]], device=device)
    target = torch.tensor([[0.0, 0.3, 1.0, 0.5, 0.0, 0.7, 1.0]], device=device)
    result = fastgen.bernoulli_log_likelihood(logits, target)
    with fastgen.use_backend("reference"):
        expected = fastgen.bernoulli_log_likelihood(logits, target)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_log_likelihood_broadcast_target(device, dtype):
    """(B, D) data against (K, B, D) logits: the target repeats over the K samples."""
    logits, target = rand((3, 5, 6), dtype, device, seed=1), rand((5, 6), dtype, device, low=0.0, high=1.0, seed=2)
    assert_matches_reference(
        lambda lg, t: fastgen.bernoulli_log_likelihood(lg, t), [logits, target], dtype, grad_scale=FOLD_SCALE
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,event_dims", SHAPES)
def test_gaussian_log_likelihood(device, dtype, shape, event_dims):
    x, mean, logvar = (rand(shape, dtype, device, seed=s) for s in (1, 2, 3))
    assert_matches_reference(
        lambda a, m, lv: fastgen.gaussian_log_likelihood(a, m, lv, event_dims=event_dims), [x, mean, logvar], dtype
    )
    assert_matches_reference(
        lambda a, m: fastgen.gaussian_log_likelihood(a, m, event_dims=event_dims), [x, mean], dtype
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_log_likelihood_broadcast(device, dtype):
    """A (D,) mean and a (B, 1) log-variance against (B, D) data."""
    x, mean, logvar = rand((5, 6), dtype, device, seed=1), rand((6,), dtype, device, seed=2), rand((5, 1), dtype, device, seed=3)
    assert_matches_reference(
        lambda a, m, lv: fastgen.gaussian_log_likelihood(a, m, lv), [x, mean, logvar], dtype, grad_scale=FOLD_SCALE
    )


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_long_rows_two_stage_reduction(device, dtype):
    """Few long rows are split across programs; the partial sums add up to the reference."""
    (shape, event_dims) = LONG_ROW
    mu, logvar = rand(shape, dtype, device, seed=1), rand(shape, dtype, device, seed=2)
    prior_mu = rand(shape[-1:], dtype, device, seed=3)
    assert_matches_reference(lambda m, lv, pm: fastgen.gaussian_kl(m, lv, pm), [mu, logvar, prior_mu], dtype, scale=10)
    target = rand(shape, dtype, device, low=0.0, high=1.0, seed=4)
    assert_matches_reference(lambda lg, t: fastgen.bernoulli_log_likelihood(lg, t), [mu, target], dtype, scale=10)
    assert_matches_reference(lambda a, m: fastgen.gaussian_log_likelihood(a, m), [mu, logvar], dtype, scale=10)


def test_split_plan_splits_only_few_long_rows(device):
    from fastgen.kernels import _tiles

    assert _tiles.split_plan(2, 100, device) == (1, 100)
    splits, chunk = _tiles.split_plan(*LONG_ROW[0], device)
    assert splits > 1 and chunk % _tiles.SPLIT_COLS == 0 and (splits - 1) * chunk < LONG_ROW[0][1]
    assert _tiles.split_plan(10**6, LONG_ROW[0][1], device)[0] == 1


def test_row_sum_dtypes(device):
    """Per-row sums are float32 for half inputs (float64 for float64) at the op level."""
    ops = torch.ops.fastgen_triton
    for dtype, sum_dtype in ((torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float64, torch.float64)):
        mu = torch.zeros(3, 4, dtype=dtype, device=device)
        assert ops._gaussian_kl(mu, mu, None, None, 1).dtype == sum_dtype
        assert ops._bernoulli_log_likelihood(mu, mu, 1).dtype == sum_dtype
        assert ops._gaussian_log_likelihood(mu, mu, None, 1).dtype == sum_dtype


def test_zero_size_inputs(device):
    """Zero-size operands return zero sums without a launch, at the op level."""
    ops = torch.ops.fastgen_triton
    empty_rows = torch.zeros(0, 5, device=device)
    assert ops._gaussian_kl(empty_rows, empty_rows, None, None, 1).shape == (0,)
    no_cols = torch.zeros(3, 0, device=device)
    assert torch.equal(ops._bernoulli_log_likelihood(no_cols, no_cols, 1), torch.zeros(3, device=device))
