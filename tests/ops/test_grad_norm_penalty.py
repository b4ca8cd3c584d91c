"""fastgen.grad_norm_penalty, random_interpolate and gradient_penalty: WGAN-GP's penalty, fused.

The critic-step tests hold the fused penalty to the eager one as WGAN-GP code
writes it (`grad.view(B, -1).norm(2, dim=1)`, minus 1, squared, mean) on the
same interpolates: the penalty and the critic's parameter gradients agree.
"""

from __future__ import annotations

import pytest
import torch
from fastgen_checks import DTYPES, SHAPES, assert_close, f64, rand
from torch import nn

import fastgen
from fastgen import reference


def _generator(device, seed=99):
    return torch.Generator(device=device).manual_seed(seed)


def oracle_penalty(grad, center=1.0, event_dims=1):
    """(||g|| - c)^2 with the norm of torch.Tensor.norm over the flattened event dims, float64."""
    g = f64(grad)
    batch = g.shape[: g.dim() - event_dims]
    return (g.reshape(*batch, -1).norm(2, dim=-1) - center) ** 2


@pytest.mark.parametrize("shape,event_dims", SHAPES)
@pytest.mark.parametrize("center", [1.0, 0.0, 2.5])
def test_matches_the_norm_formula(device, backend, shape, event_dims, center):
    grad = rand(shape, torch.float64, device, seed=1)
    out = fastgen.grad_norm_penalty(grad, center, event_dims=event_dims)
    assert out.shape == shape[: len(shape) - event_dims]
    assert_close(out, oracle_penalty(grad, center, event_dims))


def test_long_rows(device, backend):
    grad = rand((3, 40000), torch.float64, device, seed=1)
    assert_close(fastgen.grad_norm_penalty(grad), oracle_penalty(grad), scale=10)


def test_default_event_dims_is_every_dim_but_the_first(device):
    grad = rand((4, 3, 5, 5), torch.float32, device, seed=1)
    out = fastgen.grad_norm_penalty(grad)
    assert out.shape == (4,)
    torch.testing.assert_close(out, fastgen.grad_norm_penalty(grad, event_dims=3))
    assert fastgen.grad_norm_penalty(grad[0, 0, 0]).shape == (5,)  # a batch of 5 one-element samples
    assert fastgen.grad_norm_penalty(torch.tensor(3.0, device=device)).item() == 4.0  # 0-dim: |g|


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_forward_and_backward(device, backend, dtype):
    grad = rand((6, 300), dtype, device, seed=1, requires_grad=True)
    out = fastgen.grad_norm_penalty(grad, 1.0)
    assert out.dtype == dtype and out.shape == (6,)
    leaf = grad.detach().double().requires_grad_()
    expected = oracle_penalty(leaf)
    assert_close(out, expected, scale=4)
    upstream = rand((6,), dtype, device, low=-2, high=2, seed=2)
    (actual,) = torch.autograd.grad(out, grad, upstream)
    (wanted,) = torch.autograd.grad(expected, leaf, upstream.double())
    assert actual.dtype == dtype
    assert_close(actual, wanted, scale=4)


@pytest.mark.parametrize("event_dims", [0, 1, 2])
@pytest.mark.parametrize("center", [1.0, 0.3])
def test_gradcheck(device, event_dims, center):
    grad = rand((3, 4, 5), torch.float64, device, seed=1, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g: fastgen.grad_norm_penalty(g, center, event_dims=event_dims), (grad,))


def test_zero_norm_has_a_zero_gradient_as_torch_norm(device):
    grad = torch.zeros(3, 4, device=device, dtype=torch.float64)
    grad[1] = torch.tensor([3.0, 4.0, 0.0, 0.0])
    grad.requires_grad_()
    out = fastgen.grad_norm_penalty(grad)
    torch.testing.assert_close(out.cpu(), torch.tensor([1.0, 16.0, 1.0], dtype=torch.float64))
    (g,) = torch.autograd.grad(out.sum(), grad)
    leaf = grad.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(((leaf.norm(2, dim=1) - 1) ** 2).sum(), leaf)
    torch.testing.assert_close(g, expected)
    assert (g[0] == 0).all() and (g[2] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("event_dims", [0, 1])
def test_zero_rows_among_many(device, backend, dtype, event_dims):
    """Norms and gradient factors are computed a SIMD vector of rows at a time: zero rows
    scattered over whole vectors and a partial last one still give a zero gradient."""
    grad = rand((301, 3), dtype, device, seed=3)
    grad[::4] = 0
    grad.requires_grad_()
    out = fastgen.grad_norm_penalty(grad, 1.0, event_dims=event_dims)
    leaf = grad.detach().double().requires_grad_()
    expected = oracle_penalty(leaf, 1.0, event_dims)
    assert_close(out, expected, scale=4)
    upstream = rand(out.shape, dtype, device, low=-2, high=2, seed=4)
    (actual,) = torch.autograd.grad(out, grad, upstream)
    (wanted,) = torch.autograd.grad(expected, leaf, upstream.double())
    assert_close(actual, wanted, scale=4)
    assert (actual[::4] == 0).all()


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
def test_non_contiguous(device, layout):
    base = rand((8, 6), device=device, seed=1)
    grad = {"transposed": base.t(), "sliced": base[::2, 1:], "expanded": base[:1].expand(5, 6)}[layout]
    assert not grad.is_contiguous()
    torch.testing.assert_close(fastgen.grad_norm_penalty(grad), fastgen.grad_norm_penalty(grad.contiguous()), rtol=0, atol=0)
    leaf = grad.detach().requires_grad_()  # keeps the strides
    (a,) = torch.autograd.grad(fastgen.grad_norm_penalty(leaf).sum(), leaf)
    contiguous = grad.detach().contiguous().requires_grad_()
    (b,) = torch.autograd.grad(fastgen.grad_norm_penalty(contiguous).sum(), contiguous)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("shape,event_dims,batch", [((0, 5), 1, (0,)), ((4, 0), 1, (4,)), ((2, 0, 3), 1, (2, 0))])
def test_zero_size(device, shape, event_dims, batch):
    grad = torch.zeros(shape, device=device, requires_grad=True)
    out = fastgen.grad_norm_penalty(grad, 2.0, event_dims=event_dims)
    assert out.shape == batch and out.dtype == torch.float32
    assert (out == 4.0).all()  # the norm of nothing is 0
    (g,) = torch.autograd.grad(out.sum(), grad)
    assert g.shape == shape


def test_nan_in_a_row_gives_nan_in_that_row_only(device):
    grad = rand((3, 5), device=device, seed=1, requires_grad=True)
    with torch.no_grad():
        grad[1, 2] = float("nan")
    out = fastgen.grad_norm_penalty(grad)
    assert torch.isnan(out).tolist() == [False, True, False]
    (g,) = torch.autograd.grad(out.sum(), grad)
    assert torch.isnan(g[1]).all() and not torch.isnan(g[0]).any() and not torch.isnan(g[2]).any()


def test_errors_name_the_argument():
    x = torch.zeros(3, 4)
    for center, kind in ((None, "NoneType"), ("1", "str"), (torch.tensor(1.0), "Tensor"), (True, "bool")):
        with pytest.raises(TypeError, match=rf"fastgen\.grad_norm_penalty: center must be a real number, got {kind}"):
            fastgen.grad_norm_penalty(x, center)
    with pytest.raises(TypeError, match=r"fastgen\.grad_norm_penalty: event_dims must be an int, got NoneType"):
        fastgen.grad_norm_penalty(x, event_dims=None)
    with pytest.raises(ValueError, match=r"fastgen\.grad_norm_penalty: event_dims must be in \[0, 2\].*got 3"):
        fastgen.grad_norm_penalty(x, event_dims=3)
    with pytest.raises(TypeError, match=r"fastgen\.grad_norm_penalty: grad must be a torch.Tensor, got list"):
        fastgen.grad_norm_penalty([1.0, 2.0])
    with pytest.raises(TypeError, match=r"fastgen\.grad_norm_penalty: grad must be a floating tensor .*torch.int64"):
        fastgen.grad_norm_penalty(torch.zeros(3, 4, dtype=torch.int64))
    assert fastgen.grad_norm_penalty(x, 2).tolist() == [4.0, 4.0, 4.0]  # an int center is a real number
    with pytest.raises(RuntimeError, match=r"fastgen\.grad_norm_penalty_backward: norm has 2 elements, expected 3"):
        torch.ops.fastgen._grad_norm_penalty_backward(torch.ones(3), x, torch.ones(2), 1.0, 1)


def test_second_derivative_of_the_penalty_raises_naming_the_op():
    grad = rand((4, 6), torch.float64, seed=1, requires_grad=True)
    (g,) = torch.autograd.grad(fastgen.grad_norm_penalty(grad).sum(), grad, create_graph=True)
    with pytest.raises(RuntimeError, match=r"fastgen\.grad_norm_penalty: second derivatives are not implemented"):
        g.sum().backward()


def test_compiles_without_graph_break():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    def penalty(g):
        return 10.0 * fastgen.grad_norm_penalty(g * 2.0).mean()

    grad = rand((5, 3, 4), seed=1, requires_grad=True)
    out = torch.compile(penalty, fullgraph=True, backend="inductor")(grad)
    (g,) = torch.autograd.grad(out, grad)
    assert not torch._dynamo.utils.counters["graph_break"]
    expected = penalty(grad)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(g, torch.autograd.grad(expected, grad)[0])
    torch._dynamo.reset()


# ----------------------------------------------------------------------------- the WGAN-GP critic step


def _critic(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Softplus(),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 1),
    ).double()  # fmt: skip


def _eager_penalty(critic, real, fake, weights):
    """WGAN-GP as eager code writes it: interpolate, autograd.grad(create_graph=True), view, norm, -1, square, mean."""
    w = weights.reshape(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    interpolate = (w * real + (1 - w) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(interpolate).sum(), interpolate, create_graph=True)
    return ((grad.view(grad.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()


def _interpolation_weights(real, generator):
    """The eps_i that random_interpolate draws for this generator state, read back through real=1, fake=0."""
    ones = torch.ones(real.shape[0], 1, dtype=real.dtype, device=real.device)
    return torch.ops.fastgen.random_interpolate(ones, torch.zeros_like(ones), generator).reshape(-1)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_critic_step_parameter_gradients_equal_the_eager_penalty(device, backend, kind):
    critic = _critic(kind).to(device)
    real, fake = rand((8, 2, 6, 6), torch.float64, device, seed=1), rand((8, 2, 6, 6), torch.float64, device, seed=2)
    # The last layer's bias does not change the critic's input gradient: no penalty gradient.
    params = [p for p in critic.parameters()][:-1]
    penalty = fastgen.gradient_penalty(critic, real, fake, weight=10.0, generator=_generator(device))
    fused = torch.autograd.grad(penalty, params)
    weights = _interpolation_weights(real, _generator(device))
    eager = 10.0 * _eager_penalty(critic, real, fake, weights)
    expected = torch.autograd.grad(eager, params)
    torch.testing.assert_close(penalty, eager, rtol=1e-12, atol=1e-12)
    for a, e in zip(fused, expected):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    # The same through grad_norm_penalty on the eager interpolates: the penalty's
    # gradient flows into the critic's create_graph=True graph.
    w = weights.reshape(-1, 1, 1, 1)
    interpolate = (w * real + (1 - w) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(interpolate).sum(), interpolate, create_graph=True)
    loss = fastgen.grad_norm_penalty(grad).mean()
    loss.backward()
    for p, e in zip(params, expected):
        torch.testing.assert_close(10.0 * p.grad, e, rtol=1e-10, atol=1e-12)


def test_gradient_penalty_matches_the_reference_and_draws_one_weight_per_sample(device):
    critic = _critic("mlp").to(device)
    real, fake = rand((16, 2, 6, 6), torch.float64, device, seed=1), rand((16, 2, 6, 6), torch.float64, device, seed=2)
    penalty = fastgen.gradient_penalty(critic, real, fake, center=0.5, weight=3.0, generator=_generator(device))
    expected = reference.gradient_penalty(critic, real, fake, center=0.5, weight=3.0, generator=_generator(device))
    torch.testing.assert_close(penalty, expected, rtol=1e-10, atol=1e-12)
    weights = _interpolation_weights(real, _generator(device))
    assert weights.shape == (16,) and ((weights >= 0) & (weights < 1)).all()
    assert len(set(weights.tolist())) == 16  # one weight per sample, not one for the batch
    out = torch.ops.fastgen.random_interpolate(real, fake, _generator(device))
    w = weights.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out, w * real + (1 - w) * fake, rtol=1e-12, atol=1e-12)


def test_gradient_penalty_follows_the_seed_and_the_generator():
    critic = _critic("mlp").float()
    real, fake = rand((4, 2, 6, 6), seed=1), rand((4, 2, 6, 6), seed=2)
    torch.manual_seed(3)
    a = fastgen.gradient_penalty(critic, real, fake)
    torch.manual_seed(3)
    b = fastgen.gradient_penalty(critic, real, fake)
    c = fastgen.gradient_penalty(critic, real, fake)
    assert torch.equal(a, b) and not torch.equal(a, c)
    with torch.no_grad():  # it needs the critic's gradient, so it turns grad mode on
        assert fastgen.gradient_penalty(critic, real, fake).requires_grad


def test_gradient_penalty_errors():
    critic = _critic("mlp").float()
    x = torch.zeros(4, 2, 6, 6)
    with pytest.raises(TypeError, match=r"fastgen\.gradient_penalty: critic must be callable .*got Tensor"):
        fastgen.gradient_penalty(x, x, x)
    with pytest.raises(TypeError, match=r"fastgen\.gradient_penalty: fake must be a torch.Tensor, got NoneType"):
        fastgen.gradient_penalty(critic, x, None)
    with pytest.raises(TypeError, match=r"fastgen\.gradient_penalty: weight must be a real number, got str"):
        fastgen.gradient_penalty(critic, x, x, weight="10")
    with pytest.raises(ValueError, match=r"fastgen\.gradient_penalty: shapes do not broadcast: real \(4, 2, 6, 6\), fake \(3, 2, 6, 6\)"):
        fastgen.gradient_penalty(critic, x, torch.zeros(3, 2, 6, 6))
    with pytest.raises(TypeError, match=r"fastgen\.gradient_penalty: real must be a floating tensor"):
        fastgen.gradient_penalty(critic, x.long(), x)
    with pytest.raises(TypeError, match=r"fastgen\.gradient_penalty: generator must be a torch.Generator, got int"):
        fastgen.gradient_penalty(critic, x, x, generator=3)
    with pytest.raises(ValueError, match=r"fastgen\.gradient_penalty: real and fake must be batched"):
        fastgen.gradient_penalty(lambda t: t, torch.zeros(()), torch.zeros(()))


# ----------------------------------------------------------------------------- random_interpolate


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3), (7,), (3, 2, 300), ()])
def test_interpolate_matches_the_reference(device, backend, dtype, shape):
    real, fake = rand(shape, dtype, device, seed=1), rand(shape, dtype, device, seed=2)
    out = torch.ops.fastgen.random_interpolate(real, fake, _generator(device))
    expected = reference.random_interpolate(real, fake, _generator(device))
    assert out.dtype == dtype and out.shape == shape
    assert_close(out, expected)


def test_interpolate_gradients(device):
    real = rand((4, 3), torch.float64, device, seed=1, requires_grad=True)
    fake = rand((3,), torch.float64, device, seed=2, requires_grad=True)  # broadcast over samples
    fn = lambda r, f: torch.ops.fastgen.random_interpolate(r, f, _generator(device))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (real, fake))
    assert torch.autograd.gradgradcheck(fn, (real, fake))  # linear: differentiable again


def test_interpolate_zero_size_and_non_contiguous(device):
    out = torch.ops.fastgen.random_interpolate(torch.zeros(0, 3, device=device), torch.zeros(0, 3, device=device), None)
    assert out.shape == (0, 3)
    out = torch.ops.fastgen.random_interpolate(torch.zeros(4, 0, device=device), torch.zeros(4, 0, device=device), None)
    assert out.shape == (4, 0)
    base = rand((6, 8), device=device, seed=1)
    a = torch.ops.fastgen.random_interpolate(base.t(), base.t() * 2, _generator(device))
    b = torch.ops.fastgen.random_interpolate(base.t().contiguous(), base.t() * 2, _generator(device))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_interpolate_errors():
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"fastgen\.random_interpolate: shapes do not broadcast: real \(3, 4\), fake \(3, 5\)"):
        torch.ops.fastgen.random_interpolate(x, torch.zeros(3, 5), None)
    with pytest.raises(TypeError, match=r"fastgen\.random_interpolate: fake must be a floating tensor"):
        torch.ops.fastgen.random_interpolate(x, x.long(), None)
    with pytest.raises(ValueError, match=r"fastgen\.random_interpolate: generator is on cpu but the tensors are on meta"):
        torch.ops.fastgen.random_interpolate(x.to("meta"), x.to("meta"), torch.Generator())


def test_opcheck(device):
    grad = rand((3, 5), torch.float32, device, seed=1, requires_grad=True)
    op = torch.ops.fastgen.grad_norm_penalty.default
    torch.library.opcheck(op, (grad, 1.0, 1))
    torch.library.opcheck(op, (grad, 0.5, 0))
    torch.library.opcheck(op, (grad, 1.0, 2))
    kernel = torch.ops.fastgen._grad_norm_penalty.default
    torch.library.opcheck(kernel, (grad.detach(), 1.0, 1))
    torch.library.opcheck(kernel, (grad.detach(), 2.0, 0))
    _, norm = kernel(grad.detach(), 1.0, 1)
    bwd = torch.ops.fastgen._grad_norm_penalty_backward.default
    torch.library.opcheck(bwd, (rand((3,), device=device, seed=2), grad.detach(), norm, 1.0, 1))
    real = rand((4, 3), torch.float32, device, seed=3, requires_grad=True)
    fake = rand((4, 3), torch.float32, device, seed=4)
    interpolate = torch.ops.fastgen.random_interpolate.default
    torch.library.opcheck(interpolate, (real, fake, None))
    torch.library.opcheck(
        interpolate, (real, fake, _generator(device)),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )  # fmt: skip
    torch.library.opcheck(torch.ops.fastgen._random_interpolate.default, (real.detach(), fake, None))
