"""Every bad input of design.md gets a clear error naming the argument, before any kernel runs."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import fastgen

X = torch.zeros(3, 4)
OTHER_DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])

# The differentiable ops of the registry and their tensor arguments, in order.
ARGS = {
    name: list(info.tensor_args) for name, info in fastgen.ops.REGISTRY.items() if info.kind in ("rows", "sample")
}
CASES = [(op, arg) for op, args in ARGS.items() for arg in args]
# Shapes and devices can only disagree between two tensors (grad_norm_penalty takes one).
PAIRED = [(op, arg) for op, arg in CASES if len(ARGS[op]) > 1]


def _call(op, bad_arg, bad_value):
    tensors = {name: X.clone() for name in ARGS[op]}
    tensors[bad_arg] = bad_value
    return fastgen.ops.REGISTRY[op].function(*tensors.values())


@pytest.mark.parametrize("op,arg", PAIRED)
def test_shape_mismatch(op, arg):
    with pytest.raises(ValueError, match=rf"fastgen\.{op}: shapes do not broadcast: .*{arg} \(3, 5\)"):
        _call(op, arg, torch.zeros(3, 5))


@pytest.mark.parametrize("op,arg", CASES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64, torch.uint8])
def test_non_floating_dtype(op, arg, dtype):
    with pytest.raises(TypeError, match=rf"fastgen\.{op}: {arg} must be a floating tensor .*got {dtype}"):
        _call(op, arg, torch.zeros(3, 4, dtype=dtype))


@pytest.mark.parametrize("op,arg", CASES)
def test_not_a_tensor(op, arg):
    with pytest.raises(TypeError, match=rf"fastgen\.{op}: {arg} must be a torch.Tensor, got list"):
        _call(op, arg, [[0.0] * 4] * 3)


@pytest.mark.parametrize("op,arg", CASES)
def test_sparse_layout(op, arg):
    with pytest.raises(TypeError, match=rf"fastgen\.{op}: {arg} must be a dense \(strided\) tensor"):
        _call(op, arg, torch.zeros(3, 4).to_sparse())


@pytest.mark.parametrize("op,arg", PAIRED)
@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_mixed_devices(op, arg, other):
    with pytest.raises(ValueError, match=rf"fastgen\.{op}: all tensors must be on one device, got .*{arg} on {other}"):
        _call(op, arg, torch.zeros(3, 4, device=other))


def _takes(name, parameter):
    return parameter in inspect.signature(fastgen.ops.REGISTRY[name].function).parameters


LOSSES = sorted(name for name in ARGS if _takes(name, "event_dims"))
REDUCED = sorted(name for name in ARGS if _takes(name, "reduction"))
SAMPLERS = sorted(name for name in ARGS if _takes(name, "num_samples"))


def _loss(op, **kwargs):
    return getattr(fastgen, op)(*(X for _ in ARGS[op]), **kwargs)


@pytest.mark.parametrize("op", LOSSES)
@pytest.mark.parametrize("event_dims", [-1, 3, 100])
def test_event_dims_out_of_range(op, event_dims):
    with pytest.raises(ValueError, match=rf"fastgen\.{op}: event_dims must be in \[0, 2\].*got {event_dims}"):
        _loss(op, event_dims=event_dims)


@pytest.mark.parametrize("op", LOSSES)
@pytest.mark.parametrize("event_dims,kind", [(1.0, "float"), ("1", "str"), (None, "NoneType"), (True, "bool")])
def test_event_dims_not_an_int(op, event_dims, kind):
    with pytest.raises(TypeError, match=rf"fastgen\.{op}: event_dims must be an int, got {kind}"):
        _loss(op, event_dims=event_dims)


@pytest.mark.parametrize("op", REDUCED)
@pytest.mark.parametrize("reduction", ["avg", "Sum", "", None, "batchmean"])
def test_unknown_reduction(op, reduction):
    with pytest.raises(ValueError, match=rf"fastgen\.{op}: reduction must be one of 'none', 'sum', 'mean', got {reduction!r}"):
        getattr(fastgen, op)(X, X, reduction=reduction)


@pytest.mark.parametrize("op", SAMPLERS)
@pytest.mark.parametrize("num_samples", [0, -3])
def test_num_samples_too_small(op, num_samples):
    with pytest.raises(ValueError, match=rf"fastgen\.{op}: num_samples must be >= 1, got {num_samples}"):
        getattr(fastgen, op)(X, X, num_samples=num_samples)


@pytest.mark.parametrize("op", SAMPLERS)
@pytest.mark.parametrize("num_samples,kind", [(2.0, "float"), ("2", "str"), (True, "bool"), (torch.tensor(2), "Tensor")])
def test_num_samples_not_an_int(op, num_samples, kind):
    with pytest.raises(TypeError, match=rf"fastgen\.{op}: num_samples must be an int or None, got {kind}"):
        getattr(fastgen, op)(X, X, num_samples=num_samples)


@pytest.mark.parametrize("op", SAMPLERS)
def test_generator_on_wrong_device(op):
    mu = torch.zeros(3, 4, device="meta")
    with pytest.raises(ValueError, match=rf"fastgen\.{op}: generator is on cpu but the tensors are on meta"):
        getattr(fastgen, op)(mu, mu, generator=torch.Generator())
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=rf"fastgen\.{op}: generator is on cuda.* but the tensors are on cpu"):
            getattr(fastgen, op)(X, X, generator=torch.Generator(device="cuda"))


@pytest.mark.parametrize("op", SAMPLERS)
def test_generator_not_a_generator(op):
    with pytest.raises(TypeError, match=rf"fastgen\.{op}: generator must be a torch.Generator, got int"):
        getattr(fastgen, op)(X, X, generator=1234)


def test_errors_come_before_the_generator_advances():
    g = torch.Generator().manual_seed(1)
    expected = fastgen.reparameterize(X, X, generator=g)
    g.manual_seed(1)
    for bad in ({"num_samples": 0}, {"event_dims": 5}, {"num_samples": 1.5}):
        with pytest.raises((ValueError, TypeError)):
            fastgen.reparameterize_kl(X, X, generator=g, **bad)
    assert torch.equal(fastgen.reparameterize(X, X, generator=g), expected)


@pytest.mark.parametrize("clip_value", [-0.01, -1, float("-inf")])
def test_clip_value_negative(clip_value):
    t = torch.ones(3)
    with pytest.raises(ValueError, match=r"fastgen\.clip_weights_: clip_value must be >= 0, got -"):
        fastgen.clip_weights_([t], clip_value)
    assert (t == 1).all()  # untouched


@pytest.mark.parametrize("clip_value", [float("nan"), "0.1", None, True, torch.tensor(0.1)])
def test_clip_value_not_a_number(clip_value):
    with pytest.raises(TypeError, match=r"fastgen\.clip_weights_: clip_value must be a real number"):
        fastgen.clip_weights_([torch.ones(3)], clip_value)


def test_min_greater_than_max():
    t = torch.linspace(-2, 2, 9)
    before = t.clone()
    with pytest.raises(ValueError, match=r"fastgen\.clamp_: min \(1\.0\) must not exceed max \(0\.5\)"):
        fastgen.clamp_([t], 1.0, 0.5)
    assert torch.equal(t, before)
    with pytest.raises(TypeError, match=r"fastgen\.clamp_: max must be a real number"):
        fastgen.clamp_([t], 0.0, float("nan"))
    with pytest.raises(TypeError, match=r"fastgen\.clamp_: min must be a real number"):
        fastgen.clamp_([t], "0", 1.0)


def test_clamp_bad_tensors():
    with pytest.raises(TypeError, match=r"fastgen\.clamp_: tensors\[1\] must be a torch.Tensor, got float"):
        fastgen.clamp_([torch.ones(2), 3.0], 0.0, 1.0)
    with pytest.raises(TypeError, match=r"fastgen\.clamp_: tensors\[0\] must be a floating tensor .*torch.int64"):
        fastgen.clamp_([torch.ones(2, dtype=torch.int64)], 0.0, 1.0)
    with pytest.raises(TypeError, match=r"fastgen\.clamp_: expected an nn.Module or an iterable of tensors, got int"):
        fastgen.clamp_(5, 0.0, 1.0)
    with pytest.raises(TypeError, match=r"fastgen\.clip_weights_: tensors\[0\] must be a floating tensor"):
        fastgen.clip_weights_([torch.ones(2, dtype=torch.int32)], 0.1)


def test_clip_module_params_untouched_on_error():
    layer = nn.Linear(3, 3)
    before = [p.detach().clone() for p in layer.parameters()]
    with pytest.raises(ValueError):
        fastgen.clip_weights_(layer, -1.0)
    assert all(torch.equal(p, b) for p, b in zip(layer.parameters(), before))


# The registry's ops check their own contract too (for callers that skip fastgen.ops).


def test_raw_op_errors():
    """The kernel ops check the row contract that the op layer hands them."""
    with pytest.raises(RuntimeError, match=r"fastgen\.gaussian_kl: event_dims must be in \[0, 2\], got 3"):
        torch.ops.fastgen._gaussian_kl(X, X, None, None, 3)
    with pytest.raises(RuntimeError, match=r"fastgen\.gaussian_kl: operands must be contiguous"):
        torch.ops.fastgen._gaussian_kl(X, torch.zeros(4, 3).t(), None, None, 1)
    with pytest.raises(RuntimeError, match=r"fastgen\.bernoulli_log_likelihood: operands must share one dtype"):
        torch.ops.fastgen._bernoulli_log_likelihood(X, X.double(), 1)
    with pytest.raises(RuntimeError, match=r"does not repeat evenly"):
        torch.ops.fastgen._gaussian_log_likelihood(X, torch.zeros(5), None, 1)
    with pytest.raises(RuntimeError, match=r"fastgen\.philox_normal_: out must be a contiguous float32 tensor"):
        torch.ops.fastgen.philox_normal_(torch.zeros(4, dtype=torch.float64), 1, 0)
    with pytest.raises(RuntimeError, match=r"fastgen\.reparameterize: num_samples must be >= 1"):
        torch.ops.fastgen._reparameterize(X, X, 0, None)
    with pytest.raises(RuntimeError, match=r"fastgen\.reparameterize: mu and logvar must share shape and dtype"):
        torch.ops.fastgen._reparameterize(X, X.double(), None, None)
    with pytest.raises(RuntimeError, match=r"rng_state must be an int64 tensor \[seed, offset\]"):
        torch.ops.fastgen._reparameterize_backward(X, X, torch.zeros(2), None)
    with pytest.raises(RuntimeError, match=r"grad_z has 24 elements, expected 12"):
        torch.ops.fastgen._reparameterize_backward(torch.zeros(2, 3, 4), X, torch.zeros(2, dtype=torch.int64), None)
    with pytest.raises(RuntimeError, match=r"fastgen\.clamp_: min \(1\) must not exceed max \(0\)"):
        torch.ops.fastgen._clamp_([X.clone()], 1.0, 0.0)
    with pytest.raises(RuntimeError, match=r"fastgen\.clamp_: every tensor of a group must share one dtype"):
        torch.ops.fastgen._clamp_([X.clone(), X.double()], 0.0, 1.0)


def test_public_ops_check_their_arguments_in_cpp():
    """Called directly (as torch.compile's graphs call them), the public ops give the same errors."""
    with pytest.raises(ValueError, match=r"fastgen\.gaussian_kl: event_dims must be in \[0, 2\].*got 3"):
        torch.ops.fastgen.gaussian_kl(X, X, None, None, 3, "none")
    with pytest.raises(ValueError, match=r"fastgen\.gaussian_kl: reduction must be one of 'none', 'sum', 'mean', got 'avg'"):
        torch.ops.fastgen.gaussian_kl(X, X, None, None, 1, "avg")
    with pytest.raises(TypeError, match=r"fastgen\.bernoulli_log_likelihood: target must be a floating tensor .*torch\.int64"):
        torch.ops.fastgen.bernoulli_log_likelihood(X, X.long(), 1, "none")
    with pytest.raises(ValueError, match=r"fastgen\.reparameterize: num_samples must be >= 1, got 0"):
        torch.ops.fastgen.reparameterize(X, X, 0, None)
    with pytest.raises(ValueError, match=r"fastgen\.clamp_: min \(1\) must not exceed max \(0\)"):
        torch.ops.fastgen.clamp_([X.clone()], 1.0, 0.0)
    with pytest.raises(TypeError, match=r"fastgen\.clamp_: tensors\[1\] must be a floating tensor .*torch\.int64"):
        torch.ops.fastgen.clamp_([X.clone(), X.long()], 0.0, 1.0)
