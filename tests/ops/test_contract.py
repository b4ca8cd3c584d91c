"""design.md's contract, checked on every op of the registry (fastgen.ops.REGISTRY): adding an
op adds it here without an edit. NaN in gives NaN out; a required argument given as None is a
TypeError naming it; a second derivative raises an error naming the op; zero-size and
non-contiguous inputs behave; every backend draws the same noise as the reference."""

from __future__ import annotations

import pytest
import torch
from fastgen_checks import DTYPES, rand

import fastgen
from fastgen.ops import REGISTRY

DIFFERENTIABLE = sorted(name for name, info in REGISTRY.items() if info.kind in ("rows", "sample"))
ROWS = sorted(name for name, info in REGISTRY.items() if info.kind == "rows")
SAMPLERS = sorted(name for name, info in REGISTRY.items() if info.kind == "sample")


def _args(name, shape=(3, 40), dtype=torch.float32, device="cpu", requires_grad=False):
    """Tensors for every tensor argument of op `name`, in [0.1, 0.9] (valid targets too)."""
    return [
        rand(shape, dtype, device, low=0.1, high=0.9, seed=i, requires_grad=requires_grad)
        for i, _ in enumerate(REGISTRY[name].tensor_args)
    ]


def _outputs(out):
    return list(out) if isinstance(out, tuple) else [out]


def test_registry_lists_every_public_op():
    assert set(REGISTRY) == {
        "reparameterize", "reparameterize_kl", "gaussian_kl", "bernoulli_log_likelihood",
        "gaussian_log_likelihood", "clamp_", "reparameterize_log_weights", "grad_norm_penalty",
    }  # fmt: skip
    for name, info in REGISTRY.items():
        assert getattr(fastgen, name) is info.function


# The first two tensor arguments of each op (grad_norm_penalty has one).
REQUIRED = [(name, position) for name in DIFFERENTIABLE for position in range(min(2, len(REGISTRY[name].tensor_args)))]


@pytest.mark.parametrize("name,position", REQUIRED)
def test_none_for_a_required_tensor_is_a_type_error(name, position):
    args = _args(name)
    arg_name = REGISTRY[name].tensor_args[position]
    args[position] = None
    with pytest.raises(TypeError, match=rf"fastgen\.{name}: {arg_name} must be a torch.Tensor, got NoneType"):
        REGISTRY[name].function(*args)


def _nan_pattern(name, args):
    """Which elements of the outputs and of the gradients are NaN."""
    torch.manual_seed(5)
    outs = _outputs(REGISTRY[name].function(*args))
    grads = torch.autograd.grad(sum(o.float().sum() for o in outs), args)
    return [torch.isnan(t) for t in outs + list(grads)]


@pytest.mark.parametrize("name", DIFFERENTIABLE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_nan_out(device, backend, name, dtype):
    """A NaN in any argument gives NaN exactly where the textbook formula (the reference) does, forward and backward."""
    for position in range(len(REGISTRY[name].tensor_args)):
        args = _args(name, dtype=dtype, device=device, requires_grad=True)
        with torch.no_grad():
            args[position][1, 7] = float("nan")
        actual = _nan_pattern(name, args)
        with fastgen.use_backend("reference"):
            expected = _nan_pattern(name, args)
        assert actual[0].any(), (name, position)
        for a, e in zip(actual, expected):
            assert torch.equal(a.cpu(), e.cpu()), (name, position, a, e)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_second_derivative_raises_naming_the_op(name):
    args = _args(name, requires_grad=True)
    loss = sum(o.sum() for o in _outputs(REGISTRY[name].function(*args)))
    grads = torch.autograd.grad(loss, args, create_graph=True, allow_unused=True)
    penalty = sum((g * g).sum() for g in grads if g is not None)
    with pytest.raises(RuntimeError, match=rf"fastgen\.{name}: second derivatives are not implemented"):
        penalty.backward()


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_first_derivative_under_create_graph_is_exact(name):
    """create_graph=True gives the same first derivatives (only differentiating them again is refused)."""
    args = _args(name, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(3)
    plain = torch.autograd.grad(sum(o.sum() for o in _outputs(REGISTRY[name].function(*args))), args)
    torch.manual_seed(3)
    graph = torch.autograd.grad(
        sum(o.sum() for o in _outputs(REGISTRY[name].function(*args))), args, create_graph=True
    )
    for a, b in zip(plain, graph):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_non_contiguous_equals_contiguous(name):
    args = _args(name, shape=(40, 3))
    transposed = [a.t().contiguous().t() for a in args]  # same values, column-major
    assert not transposed[0].is_contiguous()
    torch.manual_seed(11)
    expected = _outputs(REGISTRY[name].function(*args))
    torch.manual_seed(11)
    actual = _outputs(REGISTRY[name].function(*transposed))
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("num_samples", [None, 3])
def test_reference_draws_the_backends_noise(name, num_samples):
    """The same generator state gives the same z on the reference backend as on the C++ CPU kernels."""
    mu, logvar = _args(name, shape=(5, 37))
    outputs = {}
    for backend in ("auto", "reference"):
        with fastgen.use_backend(backend):
            g = torch.Generator().manual_seed(77)
            outputs[backend] = _outputs(REGISTRY[name].function(mu, logvar, num_samples=num_samples, generator=g))
    for a, r in zip(outputs["auto"], outputs["reference"]):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


# Row lengths around the CPU kernels' cases: one element, the unrolled widths 2-31, whole
# and partial SIMD vectors, blocks of one row (128-255), and rows longer than a block.
ROW_LENGTHS = [1, 2, 3, 5, 7, 8, 15, 16, 17, 20, 31, 32, 33, 63, 64, 100, 127, 128, 129, 255, 256, 257, 1000]


@pytest.mark.parametrize("name", DIFFERENTIABLE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_sums_at_every_row_length(name, dtype):
    """Per-row results equal the reference's for every row length (rows packed into blocks,
    summed unrolled, in vectors or in chunks), on a row count that leaves a partial last block."""
    # The noise is specified to 1e-5 (the kernels' SIMD sin/cos/log against torch's), in any dtype.
    tolerance = 2e-5 if dtype == torch.float32 or name in SAMPLERS else 1e-12
    for cols in ROW_LENGTHS:
        args = _args(name, shape=(37, cols), dtype=dtype)
        kwargs = lambda: {"generator": torch.Generator().manual_seed(5)} if name in SAMPLERS else {}  # noqa: E731
        with fastgen.use_backend("auto"):
            actual = _outputs(REGISTRY[name].function(*args, **kwargs()))
        with fastgen.use_backend("reference"):
            expected = _outputs(REGISTRY[name].function(*args, **kwargs()))
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, rtol=tolerance, atol=tolerance * cols, msg=lambda m: f"{cols} columns: {m}")
