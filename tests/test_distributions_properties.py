"""The properties PyTorch's own distribution tests check for Normal, Bernoulli, Independent and
kl_divergence, checked here on fastgen's classes (written from the properties, against scipy
and torch's classes as oracles):

shapes (batch, event, sample, expand, Independent), log_prob against scipy, moments against
samples, the sampler against scipy (Kolmogorov-Smirnov), rsample gradients, entropy (scipy,
Monte Carlo, the exponential-family formula), cdf/icdf round trips and cdf' = pdf, support and
enumerate_support, argument validation and broadcasting, infinite and edge-case KLs, the KL
against Monte Carlo and against the exponential-family Bregman divergence, numerical stability
of gradients at extreme parameters, half precision, TorchScript tracing and pickling.
"""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.distributions as td
from torch.distributions import constraints
from torch.distributions.kl import _kl_expfamily_expfamily

from fastgen.distributions import Bernoulli, Independent, Normal

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


def _examples():
    """(name, factory) pairs spanning the parameterizations and parameter shapes."""
    loc = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]], dtype=torch.float64)
    scale = torch.tensor([[0.3, 1.0, 2.5], [1.5, 0.7, 0.1]], dtype=torch.float64)
    probs = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.01, 0.75]], dtype=torch.float64)
    return [
        ("normal", lambda: Normal(loc, scale)),
        ("normal-scalar", lambda: Normal(0.5, 2.0)),
        ("normal-0d", lambda: Normal(torch.tensor(0.5), torch.tensor(2.0))),
        ("normal-broadcast", lambda: Normal(loc, 0.5)),
        ("normal-logvar", lambda: Normal.from_logvar(loc, 2 * torch.log(scale))),
        ("bernoulli-probs", lambda: Bernoulli(probs)),
        ("bernoulli-logits", lambda: Bernoulli(logits=torch.logit(probs))),
        ("bernoulli-scalar", lambda: Bernoulli(0.3)),
    ]


EXAMPLES = _examples()
IDS = [name for name, _ in EXAMPLES]


def _scipy(distribution):
    """The frozen scipy distribution with the same parameters."""
    if isinstance(distribution, Normal):
        return scipy_stats.norm(distribution.loc.detach().numpy(), distribution.scale.detach().numpy())
    return scipy_stats.bernoulli(distribution.probs.detach().numpy())


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name, make", EXAMPLES, ids=IDS)
@pytest.mark.parametrize("sample_shape", [(), (1,), (4,), (2, 3), (0,), (3, 0)])
def test_sample_and_log_prob_shapes(name, make, sample_shape):
    d = make()
    sample_shape = torch.Size(sample_shape)
    assert d.event_shape == ()
    x = d.sample(sample_shape)
    assert x.shape == sample_shape + d.batch_shape
    assert d.log_prob(x).shape == sample_shape + d.batch_shape
    if d.has_rsample:
        assert d.rsample(sample_shape).shape == x.shape
    for moment in (d.mean, d.mode, d.variance, d.stddev, d.entropy()):
        assert moment.shape == d.batch_shape
    assert d._extended_shape(sample_shape) == x.shape


@pytest.mark.parametrize("name, make", EXAMPLES, ids=IDS)
@pytest.mark.parametrize("new_shape", [(5,), (4, 1), (2, 5)])
def test_expand(name, make, new_shape):
    d = make()
    new_shape = torch.Size(new_shape) + d.batch_shape
    expanded = d.expand(new_shape)
    assert type(expanded) is type(d) and expanded.batch_shape == new_shape
    assert expanded._validate_args == d._validate_args
    x = d.sample()
    # the expanded distribution scores a broadcast value as the original does
    torch.testing.assert_close(expanded.log_prob(x), d.log_prob(x).expand(new_shape))
    assert expanded.sample((3,)).shape == (3,) + new_shape
    torch.testing.assert_close(expanded.mean, d.mean.expand(new_shape))
    torch.testing.assert_close(expanded.variance, d.variance.expand(new_shape))
    torch.testing.assert_close(expanded.entropy(), d.entropy().expand(new_shape))
    if d.batch_shape:  # a dim of size > 1 expands to nothing else
        with pytest.raises(RuntimeError):
            d.expand(d.batch_shape[:-1] + (d.batch_shape[-1] + 1,))


@pytest.mark.parametrize("name, make", [e for e in EXAMPLES if e[0] in ("normal", "normal-logvar", "bernoulli-probs")])
@pytest.mark.parametrize("wrapper", [td.Independent, Independent])
def test_independent_shapes(name, make, wrapper):
    base = make()
    for n in range(len(base.batch_shape) + 1):
        d = wrapper(base, n)
        assert d.batch_shape == base.batch_shape[: len(base.batch_shape) - n]
        assert d.event_shape == base.batch_shape[len(base.batch_shape) - n:]
        x = d.sample((4,))
        assert x.shape == (4,) + base.batch_shape
        assert d.log_prob(x).shape == (4,) + d.batch_shape
        torch.testing.assert_close(d.log_prob(x), base.log_prob(x).sum(tuple(range(-n, 0))) if n else base.log_prob(x))
        torch.testing.assert_close(d.entropy(), base.entropy().sum(tuple(range(-n, 0))) if n else base.entropy())
        assert d.has_enumerate_support == (n == 0 and base.has_enumerate_support)
        assert d.support.event_dim == n
        expanded = d.expand((3,) + d.batch_shape)
        assert expanded.batch_shape == (3,) + d.batch_shape and expanded.event_shape == d.event_shape
        assert expanded.log_prob(x[:1]).shape == (3,) + d.batch_shape
    with pytest.raises(ValueError, match="reinterpreted_batch_ndims"):
        wrapper(base, len(base.batch_shape) + 1)


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("name, make", EXAMPLES, ids=IDS)
def test_log_prob_against_scipy(name, make):
    d = make()
    x = d.sample((5,))
    reference = _scipy(d)
    expected = reference.logpdf(x.numpy()) if isinstance(d, Normal) else reference.logpmf(x.numpy())
    torch.testing.assert_close(d.log_prob(x).double(), torch.as_tensor(expected, dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, make", EXAMPLES, ids=IDS)
def test_entropy_against_scipy_and_monte_carlo(name, make):
    d = make()
    torch.testing.assert_close(d.entropy().double(), torch.as_tensor(_scipy(d).entropy(), dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    monte_carlo = -d.log_prob(d.sample((40000,))).mean(0)
    torch.testing.assert_close(monte_carlo, d.entropy(), rtol=0, atol=0.03)


@pytest.mark.parametrize("name, make", EXAMPLES, ids=IDS)
def test_entropy_is_the_exponential_family_one(name, make):
    """ExponentialFamily.entropy (from the log-normalizer's gradient) agrees with the closed form."""
    d = make()
    if isinstance(d, Bernoulli) and ((d.probs == 0) | (d.probs == 1)).any():
        pytest.skip("the natural parameter is infinite")
    torch.testing.assert_close(td.ExponentialFamily.entropy(d), d.entropy())


@pytest.mark.parametrize("name, make", EXAMPLES, ids=IDS)
def test_moments_against_samples(name, make):
    d = make()
    torch.manual_seed(1)
    samples = d.sample((60000,)).double()
    torch.testing.assert_close(samples.mean(0), d.mean.double(), rtol=0, atol=0.03 * (1 + d.stddev.max().item()))
    torch.testing.assert_close(samples.var(0), d.variance.double(), rtol=0.05, atol=0.01)
    torch.testing.assert_close(d.stddev, d.variance.sqrt())


@pytest.mark.parametrize("make", [lambda: Normal(torch.tensor([0.5, -3.0]), torch.tensor([2.0, 0.1])),
                                  lambda: Normal.from_logvar(torch.tensor([0.5, -3.0]), torch.tensor([1.0, -4.0]))])
def test_sampler_against_scipy(make):
    """Kolmogorov-Smirnov: the samples are drawn from the distribution, each coordinate."""
    d = make()
    torch.manual_seed(2)
    samples = d.rsample((4000,)).detach()
    for i in range(2):
        reference = scipy_stats.norm(d.loc[i].item(), d.scale[i].item())
        assert scipy_stats.kstest(samples[:, i].numpy(), reference.cdf).pvalue > 1e-3


def test_bernoulli_sampler_frequencies():
    d = Bernoulli(torch.tensor([0.0, 0.2, 0.5, 1.0]))
    torch.manual_seed(3)
    samples = d.sample((20000,))
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(samples.mean(0), d.probs, rtol=0, atol=0.015)


# ----------------------------------------------------------------------------- gradients


def test_rsample_gradients():
    """dz/dloc = 1, dz/dscale = eps = (z - loc) / scale, and likewise for the log-variance."""
    loc = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    z = Normal(loc, scale).rsample((7,))
    assert z.requires_grad
    grad_loc, grad_scale = torch.autograd.grad(z.sum(), (loc, scale))
    torch.testing.assert_close(grad_loc, torch.full_like(loc, 7.0))
    torch.testing.assert_close(grad_scale, ((z - loc) / scale).detach().sum(0))
    logvar = (2 * torch.log(scale)).detach().requires_grad_(True)
    z = Normal.from_logvar(loc, logvar).rsample((7,))
    grad_logvar, = torch.autograd.grad(z.sum(), (logvar,))
    torch.testing.assert_close(grad_logvar, (0.5 * (z - loc)).detach().sum(0))
    assert not Normal(loc, scale).sample((2,)).requires_grad
    assert not Bernoulli(torch.tensor([0.5], requires_grad=True)).sample().requires_grad


def test_reparameterized_gradient_of_an_expectation():
    """d/dloc E[z^2] = 2 loc and d/dscale E[z^2] = 2 scale, estimated through rsample."""
    loc = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    torch.manual_seed(4)
    grad_loc, grad_scale = torch.autograd.grad(Normal(loc, scale).rsample((100000,)).pow(2).mean(0).sum(), (loc, scale))
    torch.testing.assert_close(grad_loc, 2 * loc.detach(), rtol=0, atol=0.05)
    torch.testing.assert_close(grad_scale, 2 * scale.detach(), rtol=0, atol=0.05)


def test_log_prob_gradients_by_finite_differences():
    loc = torch.tensor([0.3, -1.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.7, 2.0], dtype=torch.float64, requires_grad=True)
    value = torch.tensor([0.1, 0.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, s, x: Normal(m, s).log_prob(x), (loc, scale, value))
    assert torch.autograd.gradcheck(lambda m, s, x: Independent(Normal(m, s), 1).log_prob(x), (loc, scale, value))
    assert torch.autograd.gradcheck(lambda m, s: Normal(m, s).entropy(), (loc, scale))
    logits = torch.tensor([-2.0, 0.3, 4.0], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda l: Bernoulli(logits=l).log_prob(target), (logits,))
    assert torch.autograd.gradcheck(lambda l: Bernoulli(logits=l).entropy(), (logits,))
    assert torch.autograd.gradcheck(
        lambda m, s: td.kl_divergence(Normal(m, s), Normal(m.flip(0), s.flip(0) + 0.5)), (loc, scale))


# ----------------------------------------------------------------------------- cdf, icdf, support


@pytest.mark.parametrize("make", [lambda: Normal(torch.tensor([[0.5, -1.0]]), torch.tensor([[2.0, 0.3]])),
                                  lambda: Normal.from_logvar(torch.tensor([0.5, -1.0]), torch.tensor([0.0, -2.0]))])
def test_cdf_icdf(make):
    d = make()
    x = d.sample((50,))
    torch.testing.assert_close(d.icdf(d.cdf(x)), x, rtol=1e-4, atol=1e-4)
    u = torch.rand(50, *d.batch_shape)
    torch.testing.assert_close(d.cdf(d.icdf(u)), u, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d.cdf(x).double(), torch.as_tensor(_scipy(d).cdf(x.numpy()), dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)
    # the derivative of the cdf is the density
    x = x.detach().requires_grad_(True)
    density, = torch.autograd.grad(d.cdf(x).sum(), (x,))
    torch.testing.assert_close(density, d.log_prob(x).exp().detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, make", EXAMPLES, ids=IDS)
def test_samples_are_in_the_support(name, make):
    d = make()
    assert d.support is (constraints.real if isinstance(d, Normal) else constraints.boolean)
    assert constraints.is_dependent(d.support) is False
    assert d.support.check(d.sample((20,))).all()
    for param, constraint in d.arg_constraints.items():  # the parameters satisfy their constraints
        assert constraint.check(getattr(d, param)).all()


def test_enumerate_support():
    d = Bernoulli(torch.tensor([[0.1, 0.6, 0.9]]))
    assert d.has_enumerate_support and not Normal(0.0, 1.0).has_enumerate_support
    support = d.enumerate_support()
    assert support.shape == (2, 1, 3)
    torch.testing.assert_close(support[:, 0, 0], torch.tensor([0.0, 1.0]))
    assert d.enumerate_support(expand=False).shape == (2, 1, 1)
    # the log-probabilities of the support sum to one
    torch.testing.assert_close(d.log_prob(support).exp().sum(0), torch.ones(1, 3))
    assert Bernoulli(0.3).enumerate_support().shape == (2,)
    assert td.Independent(d, 0).enumerate_support().shape == (2, 1, 3)
    with pytest.raises(NotImplementedError):
        td.Independent(d, 1).enumerate_support()


def test_bernoulli_mode():
    d = Bernoulli(torch.tensor([0.2, 0.5, 0.8]))
    mode = d.mode
    assert mode[0] == 0 and math.isnan(mode[1]) and mode[2] == 1


# ----------------------------------------------------------------------------- validation, broadcasting


@pytest.mark.parametrize("make", [
    lambda: Normal(torch.tensor([0.0]), torch.tensor([0.0]), validate_args=True),
    lambda: Normal(torch.tensor([math.nan]), torch.tensor([1.0]), validate_args=True),
    lambda: Normal(0.0, -1.0, validate_args=True),
    lambda: Bernoulli(torch.tensor([1.5]), validate_args=True),
    lambda: Bernoulli(-0.1, validate_args=True),
    lambda: Bernoulli(logits=torch.tensor([math.nan]), validate_args=True),
    lambda: Normal.from_logvar(torch.tensor([0.0]), torch.tensor([math.nan]), validate_args=True),
])
def test_invalid_parameters_raise(make):
    with pytest.raises(ValueError, match="Expected parameter"):
        make()


def test_parameter_broadcasting():
    assert Normal(torch.zeros(2, 1), torch.ones(3)).batch_shape == td.Normal(torch.zeros(2, 1), torch.ones(3)).batch_shape == (2, 3)
    assert Normal(torch.zeros(3), 1.0).batch_shape == (3,)
    assert Normal(0.0, torch.ones(2, 3)).batch_shape == (2, 3)
    assert Normal.from_logvar(torch.zeros(4, 1), torch.zeros(5)).batch_shape == (4, 5)
    assert Bernoulli(torch.full((2, 3), 0.5)).batch_shape == (2, 3)
    for args in ((torch.zeros(2), torch.ones(3)), (torch.zeros(2, 2), torch.ones(3, 2))):
        with pytest.raises(RuntimeError) as ours:
            Normal(*args)
        with pytest.raises(RuntimeError) as theirs:
            td.Normal(*args)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="Input arguments must all be instances"):
        Normal("0", 1.0)


def test_value_broadcasting_in_log_prob():
    d = Normal(torch.zeros(2, 3), torch.ones(2, 3))
    assert d.log_prob(torch.zeros(3)).shape == (2, 3)
    assert d.log_prob(torch.zeros(5, 1, 3)).shape == (5, 2, 3)
    with pytest.raises(ValueError, match="not broadcastable"):
        d.log_prob(torch.zeros(4))


# ----------------------------------------------------------------------------- KL


def _kl_pairs():
    loc = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    scale = torch.tensor([[0.8, 1.0, 2.5]], dtype=torch.float64)
    return [
        ("normal", Normal(loc, scale), Normal(loc.flip(-1), scale.flip(-1) + 0.2)),
        ("normal-logvar-torch", Normal.from_logvar(loc, torch.log(scale)), td.Normal(0.0, 1.0)),
        ("torch-normal", td.Normal(loc, scale), Normal(0.3, 1.5)),
        ("bernoulli", Bernoulli(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)),
         Bernoulli(torch.tensor([0.6, 0.3, 0.8], dtype=torch.float64))),
        ("independent", Independent(Normal(loc, scale), 1), td.Independent(td.Normal(loc + 1, scale), 1)),
    ]


@pytest.mark.parametrize("name, p, q", _kl_pairs(), ids=[pair[0] for pair in _kl_pairs()])
def test_kl_against_monte_carlo(name, p, q):
    torch.manual_seed(5)
    x = p.sample((100000,))
    monte_carlo = (p.log_prob(x) - q.log_prob(x)).mean(0)
    kl = td.kl_divergence(p, q)
    assert kl.shape == torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    torch.testing.assert_close(kl, monte_carlo, rtol=0.05, atol=0.02)
    assert (kl >= 0).all()


_SAME_FAMILY = [pair for pair in _kl_pairs() if pair[0] in ("normal", "bernoulli")]


@pytest.mark.parametrize("name, p, q", _SAME_FAMILY, ids=[pair[0] for pair in _SAME_FAMILY])
def test_kl_is_the_exponential_family_bregman_divergence(name, p, q):
    torch.testing.assert_close(td.kl_divergence(p, q), _kl_expfamily_expfamily(p, q).expand_as(td.kl_divergence(p, q)))


def test_kl_of_a_distribution_with_itself_is_zero():
    for d in (Normal(torch.tensor([0.5, -2.0]), torch.tensor([0.1, 3.0])), Bernoulli(torch.tensor([0.0, 0.3, 1.0])),
              Independent(Normal(torch.zeros(2, 3), torch.ones(2, 3)), 1)):
        torch.testing.assert_close(td.kl_divergence(d, d), torch.zeros(d.batch_shape))


def test_infinite_and_edge_case_kls():
    zero, one, half = (Bernoulli(torch.tensor([p])) for p in (0.0, 1.0, 0.5))
    assert td.kl_divergence(zero, one).item() == math.inf
    assert td.kl_divergence(one, zero).item() == math.inf
    assert td.kl_divergence(one, one).item() == 0 and td.kl_divergence(zero, zero).item() == 0
    assert math.isfinite(td.kl_divergence(half, one).item()) is False
    assert math.isfinite(td.kl_divergence(one, half).item())
    # a Normal against one of vanishing width, and an infinitely wide one
    tiny = Normal(torch.tensor([0.0]), torch.tensor([1e-30], dtype=torch.float64).float())
    assert td.kl_divergence(Normal(torch.tensor([0.0]), torch.tensor([1.0])), tiny).item() == math.inf
    wide = Normal.from_logvar(torch.tensor([0.0]), torch.tensor([math.inf]), validate_args=False)
    assert td.kl_divergence(Normal(0.0, 1.0).expand((1,)), wide).isnan().item() == td.kl_divergence(
        td.Normal(0.0, 1.0).expand((1,)), td.Normal(torch.zeros(1), torch.tensor([math.inf]), validate_args=False)).isnan().item()


# ----------------------------------------------------------------------------- numerical stability


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_prob_and_gradient_at_extreme_parameters(dtype):
    eps = torch.finfo(dtype).eps
    cases = [  # (parameterization, parameter, value, log_prob, gradient, tolerance)
        ("probs", 0.0, 0.0, 0.0, 0.0, 1e-5),
        ("probs", 0.0, 1.0, math.log(eps), 0.0, 1e-5),
        ("probs", 1e-4, 1.0, math.log(1e-4), 1e4, 1e-3),
        ("probs", 1 - 1e-4, 0.0, math.log(1e-4), -1e4, 2.0),
        ("logits", math.log(9999), 0.0, math.log(1e-4), -1.0, 1e-3),
        ("logits", -1e38 if dtype == torch.float32 else -1e308, 0.0, 0.0, 0.0, 1e-5),
        ("logits", 1e38 if dtype == torch.float32 else 1e308, 1.0, 0.0, 0.0, 1e-5),
    ]
    for kind, parameter, value, expected, expected_grad, tolerance in cases:
        p = torch.tensor([parameter], dtype=dtype, requires_grad=True)
        for wrap in (lambda d: d, lambda d: Independent(d, 1)):
            d = Bernoulli(p) if kind == "probs" else Bernoulli(logits=p)
            log_prob = wrap(d).log_prob(torch.tensor([value], dtype=dtype))
            grad, = torch.autograd.grad(log_prob.sum(), (p,))
            torch.testing.assert_close(log_prob.reshape(1), torch.tensor([expected], dtype=dtype), rtol=0, atol=tolerance)
            torch.testing.assert_close(grad, torch.tensor([expected_grad], dtype=dtype), rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_gradients_are_finite_at_extreme_parameters(dtype):
    for loc, scale, value in ((0.0, 1e-6, 1e-6), (1e4, 1e3, -1e4), (0.0, 1e6, 0.0), (-30.0, 1e-3, -30.0)):
        loc_t = torch.tensor([loc], dtype=dtype, requires_grad=True)
        scale_t = torch.tensor([scale], dtype=dtype, requires_grad=True)
        x = torch.tensor([value], dtype=dtype)
        for output in (Normal(loc_t, scale_t).log_prob(x), Independent(Normal(loc_t, scale_t), 1).log_prob(x),
                       td.kl_divergence(Normal(loc_t, scale_t), Normal(0.0, 1.0)),
                       Normal(loc_t, scale_t).rsample((3,)), Normal(loc_t, scale_t).entropy()):
            grads = torch.autograd.grad(output.sum(), (loc_t, scale_t), allow_unused=True)
            assert torch.isfinite(output).all()
            assert all(g is None or torch.isfinite(g).all() for g in grads)
        reference = td.Normal(loc_t, scale_t).log_prob(x)
        torch.testing.assert_close(Normal(loc_t, scale_t).log_prob(x), reference, rtol=1e-5, atol=1e-3)
    # log-variances far out: the sample stays finite and its gradient is the textbook one
    logvar = torch.tensor([-60.0, 60.0], dtype=dtype, requires_grad=True)
    z = Normal.from_logvar(torch.zeros(2, dtype=dtype), logvar).rsample()
    grad, = torch.autograd.grad(z.sum(), (logvar,))
    assert torch.isfinite(z).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(grad, 0.5 * z.detach())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_float64(dtype):
    loc, scale = torch.randn(8, 5), torch.rand(8, 5) + 0.5
    x = torch.randn(8, 5)
    ours = Normal(loc.to(dtype), scale.to(dtype)).log_prob(x.to(dtype))
    assert ours.dtype == td.Normal(loc.to(dtype), scale.to(dtype)).log_prob(x.to(dtype)).dtype
    exact = td.Normal(loc.to(dtype).double(), scale.to(dtype).double()).log_prob(x.to(dtype).double())
    torch.testing.assert_close(ours.double(), exact, rtol=2e-2, atol=2e-2)
    summed = Independent(Normal(loc.to(dtype), scale.to(dtype)), 1).log_prob(x.to(dtype))
    torch.testing.assert_close(summed.double(), exact.sum(-1), rtol=2e-2, atol=5e-2)
    logits, target = torch.randn(8, 5), torch.bernoulli(torch.full((8, 5), 0.5))
    torch.testing.assert_close(Bernoulli(logits=logits.to(dtype)).log_prob(target.to(dtype)).double(),
                               td.Bernoulli(logits=logits.to(dtype).double()).log_prob(target.double()),
                               rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------------------- TorchScript, pickling


def _trace_cases():
    def normal(loc, scale, x):
        d = Normal(loc, scale, validate_args=False)
        return d.log_prob(x), d.entropy(), d.cdf(x), d.icdf(torch.sigmoid(x)), d.mean, d.variance

    def normal_logvar(loc, logvar, x):
        d = Normal.from_logvar(loc, logvar, validate_args=False)
        return d.log_prob(x), Independent(d, 1).log_prob(x), d.entropy()

    def kl(loc, scale, x):
        p, q = Normal(loc, scale, validate_args=False), Normal(x, scale + 1, validate_args=False)
        return td.kl_divergence(p, q), td.kl_divergence(Independent(p, 1), Independent(q, 1))

    def bernoulli(logits, x):
        d = Bernoulli(logits=logits, validate_args=False)
        return d.log_prob(x), Independent(d, 1).log_prob(x), d.entropy(), d.mean, d.enumerate_support()

    def shapes(loc, scale, x):
        return Normal(loc, scale, validate_args=False).rsample((2,)).shape[0] * torch.ones(1)

    return [normal, normal_logvar, kl, bernoulli, shapes]


# A trace is specialized to its arguments' shapes; the shape tests that choose a kernel's
# operands say so with a TracerWarning, as any shape-dependent Python does.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.trace` is deprecated")
@pytest.mark.parametrize("function", _trace_cases(), ids=lambda f: f.__name__)
def test_torchscript_trace(function):
    def arguments(seed):
        g = torch.Generator().manual_seed(seed)
        if function.__name__ == "bernoulli":
            return torch.randn(3, 4, generator=g), torch.bernoulli(torch.full((3, 4), 0.5), generator=g)
        return torch.randn(3, 4, generator=g), torch.rand(3, 4, generator=g) + 0.5, torch.randn(3, 4, generator=g)

    traced = torch.jit.trace(function, arguments(0), check_trace=False)
    for actual, expected in zip(traced(*arguments(1)), function(*arguments(1))):
        torch.testing.assert_close(actual, expected)


def _with_kept_logvar(d):
    d._kernel_logvar()  # computes and keeps the log-variance of a scale needing no gradient
    assert d._logvar_cache is not None
    return d


@pytest.mark.parametrize("name, make", EXAMPLES + [
    ("expanded", lambda: Normal(torch.zeros(3), 2.0).expand((4, 3))),
    ("independent", lambda: Independent(Normal.from_logvar(torch.zeros(2, 3), torch.zeros(2, 3)), 1)),
    ("kept-logvar", lambda: _with_kept_logvar(Normal(torch.zeros(3), torch.ones(3)))),
], ids=IDS + ["expanded", "independent", "kept-logvar"])
def test_pickle_and_deepcopy(name, make):
    d = make()
    x = d.sample((2,))
    for copied in (pickle.loads(pickle.dumps(d)), copy.deepcopy(d)):
        assert type(copied) is type(d)
        assert copied.batch_shape == d.batch_shape and copied.event_shape == d.event_shape
        assert copied._validate_args == d._validate_args
        torch.testing.assert_close(copied.log_prob(x), d.log_prob(x))
        torch.testing.assert_close(copied.entropy(), d.entropy())
