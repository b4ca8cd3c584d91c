"""fastgen.clamp_ and fastgen.clip_weights_: in-place clamps equal to torch.clamp."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastgen


def _values(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 0.05).to(dtype).to(device)


def _check(tensors, fn, low, high):
    expected = [torch.clamp(t.clone(), low, high) for t in tensors]
    fn()
    for t, e in zip(tensors, expected):
        assert t.dtype == e.dtype and t.shape == e.shape
        torch.testing.assert_close(t, e, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_clamp_values(device, dtype):
    tensors = [_values(s, dtype, device, i) for i, s in enumerate([(5,), (3, 7), (40000,), (2, 3, 4)])]
    _check(tensors, lambda: fastgen.clamp_(tensors, -0.03, 0.021), -0.03, 0.021)


def test_clip_weights_module(device):
    """A small DCGAN-like critic: conv + batchnorm + linear, clipped in place."""
    torch.manual_seed(0)
    critic = nn.Sequential(
        nn.Conv2d(1, 8, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 16, 4, 2, 1),
        nn.BatchNorm2d(16),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 1),
    ).to(device)
    params = list(critic.parameters())
    before = [p.detach().clone() for p in params]
    buffers = [b.clone() for b in critic.buffers()]
    fastgen.clip_weights_(critic, 0.01)
    for p, b in zip(params, before):
        assert p.requires_grad and isinstance(p, nn.Parameter)
        torch.testing.assert_close(p.detach(), b.clamp(-0.01, 0.01), rtol=0, atol=0)
    assert any((b.abs() > 0.01).any() for b in before)  # something was clipped
    for new, old in zip(critic.buffers(), buffers):  # buffers (running stats) are left alone
        assert torch.equal(new, old)
    # Still trainable after clipping.
    critic(torch.randn(2, 1, 16, 16, device=device)).sum().backward()
    assert all(p.grad is not None for p in params)


def test_mixed_dtypes(device):
    tensors = [
        _values((10,), torch.float32, device, 1),
        _values((4, 4), torch.float64, device, 2),
        _values((33,), torch.bfloat16, device, 3),
        _values((7,), torch.float16, device, 4),
        _values((3,), torch.float32, device, 5),
    ]
    _check(tensors, lambda: fastgen.clip_weights_(tensors, 0.02), -0.02, 0.02)


def test_non_contiguous(device):
    base = _values((20, 30), torch.float32, device, 1)
    other = _values((20, 30), torch.float32, device, 2)
    views = [base.t(), other[::2, 3:17]]
    untouched = other.clone()
    _check(views, lambda: fastgen.clamp_(views, -0.01, 0.04), -0.01, 0.04)
    # Only the slice was written.
    mask = torch.ones_like(other, dtype=torch.bool)
    mask[::2, 3:17] = False
    assert torch.equal(other[mask], untouched[mask])


def test_empty_list_and_empty_tensors(device):
    fastgen.clamp_([], -1.0, 1.0)
    fastgen.clip_weights_([], 0.1)
    tensors = [torch.empty(0, device=device), _values((9,), torch.float32, device, 1), torch.empty(3, 0, device=device)]
    _check(tensors, lambda: fastgen.clip_weights_(tensors, 0.01), -0.01, 0.01)
    only_empty = [torch.empty(0, 5, device=device)]
    fastgen.clamp_(only_empty, 0.0, 0.0)
    assert only_empty[0].shape == (0, 5)


def test_many_tensors(device):
    tensors = [_values((i % 17 + 1,), torch.float32, device, i) for i in range(1000)]
    _check(tensors, lambda: fastgen.clip_weights_(tensors, 0.01), -0.01, 0.01)


def test_generator_single_tensor_and_parameters(device):
    tensors = [_values((6,), torch.float32, device, i) for i in range(3)]
    _check(tensors, lambda: fastgen.clamp_((t for t in tensors), -0.02, 0.0), -0.02, 0.0)
    single = _values((50,), torch.float64, device, 9)
    _check([single], lambda: fastgen.clamp_(single, 0.0, 0.01), 0.0, 0.01)
    layer = nn.Linear(5, 5).to(device)
    params = list(layer.parameters())
    _check([p.detach() for p in params], lambda: fastgen.clip_weights_(layer.parameters(), 0.05), -0.05, 0.05)


def test_special_values(device):
    t = torch.tensor([float("inf"), -float("inf"), 5.0, -5.0, 0.0, float("nan")], device=device)
    expected = torch.clamp(t.clone(), -1.0, 2.0)
    fastgen.clamp_([t], -1.0, 2.0)
    torch.testing.assert_close(t, expected, rtol=0, atol=0, equal_nan=True)
    zero = _values((8,), torch.float32, device, 1)
    fastgen.clip_weights_([zero], 0)
    assert (zero == 0).all()


def test_opcheck(device):
    tensors = [_values((5,), torch.float32, device, 1), _values((2, 3), torch.float32, device, 2)]
    torch.library.opcheck(torch.ops.fastgen.clamp_.default, (tensors, -0.01, 0.01))
    torch.library.opcheck(torch.ops.fastgen.clamp_.default, ([torch.empty(0, device=device)], -1.0, 1.0))
    torch.library.opcheck(torch.ops.fastgen._clamp_.default, ([t.clone() for t in tensors[:1]], -0.01, 0.01))


def test_in_place_changes_are_seen_by_autograd():
    """As torch's in-place ops: the version counter is bumped, so a graph that saved the tensor refuses."""
    w = torch.tensor([0.5, 2.0, -3.0], requires_grad=True)
    x = torch.ones(3)
    loss = (w * w * x).sum()
    version = w._version
    fastgen.clip_weights_([w], 1.0)
    assert w._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    t = torch.linspace(-2, 2, 9)
    version = t._version
    fastgen.clamp_([t, t[::2]], -1.0, 1.0)
    assert t._version > version


def test_leaf_that_requires_grad_is_refused_outside_no_grad():
    w = torch.tensor([0.5, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation"):
        fastgen.clamp_([w], -1.0, 1.0)
    assert torch.equal(w.detach(), torch.tensor([0.5, 2.0]))  # refused before any change
    with torch.no_grad():
        fastgen.clamp_([w], -1.0, 1.0)
    assert torch.equal(w.detach(), torch.tensor([0.5, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_bound_beyond_the_dtype_range(dtype):
    """A bound past the dtype's largest value clamps nothing on that side, contiguous or not, all or nothing."""
    contiguous = torch.tensor([[1.0, -3e4], [6e4, 0.5]], dtype=dtype)
    transposed = contiguous.clone().t()
    expected = contiguous.clone().clamp(min=-1.0)
    fastgen.clamp_([contiguous, transposed], -1.0, 1e5)
    torch.testing.assert_close(contiguous, expected, rtol=0, atol=0)
    torch.testing.assert_close(transposed, expected.t(), rtol=0, atol=0)
    params = [torch.full((3,), 6e4, dtype=dtype), torch.full((4, 2), -6e4, dtype=dtype).t()]
    fastgen.clip_weights_(params, 1e6)
    assert torch.equal(params[0], torch.full((3,), 6e4, dtype=dtype))
    assert torch.equal(params[1], torch.full((2, 4), -6e4, dtype=dtype))


def test_a_failing_call_changes_nothing():
    good = torch.linspace(-2, 2, 9)
    before = good.clone()
    with pytest.raises(TypeError, match=r"fastgen\.clamp_: tensors\[1\] must be a floating tensor"):
        fastgen.clamp_([good, torch.zeros(3, dtype=torch.int64)], -1.0, 1.0)
    assert torch.equal(good, before)
