"""fastgen.distributions as a drop-in for torch.distributions: signatures, values, gradients,
errors, and which fused op each call reaches (with how many event dims summed in the kernel).

The properties PyTorch's own distribution tests check are in test_distributions_properties.py;
the pixyz-style VAE is in test_distributions_vae.py.
"""

from __future__ import annotations

import inspect
import math
import pickle

import pytest
import torch
import torch.distributions as td

import fastgen
import fastgen.distributions as fd
import fastgen.ops
from fastgen.distributions import Bernoulli, Independent, Normal, rsample_and_kl


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


@pytest.fixture
def calls(monkeypatch):
    """Records (op, event_dims) for every fused op the distributions call."""
    seen = []
    for name in ("gaussian_kl", "gaussian_log_likelihood", "bernoulli_log_likelihood", "reparameterize",
                 "reparameterize_kl"):
        original = getattr(fastgen.ops, name)

        def counting(*args, _name=name, _original=original, **kwargs):
            seen.append((_name, kwargs.get("event_dims")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(fastgen.ops, name, counting)
    return seen


def _gaussian(shape=(4, 3), dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(shape, generator=generator, dtype=dtype, requires_grad=True)
    scale = (torch.rand(shape, generator=generator, dtype=dtype) + 0.5).requires_grad_(True)
    return loc, scale


def _grads(output, inputs):
    return torch.autograd.grad(output.sum(), inputs, allow_unused=True)


def _assert_same(ours, theirs, inputs):
    """Same values and the same gradients for every input."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs)
    assert ours.requires_grad == theirs.requires_grad
    if not ours.requires_grad:
        return
    for a, b in zip(_grads(ours, inputs), _grads(theirs, inputs)):
        torch.testing.assert_close(a, b)


def _same_error(make_ours, make_theirs, error=ValueError):
    with pytest.raises(error) as ours:
        make_ours()
    with pytest.raises(error) as theirs:
        make_theirs()
    assert str(ours.value) == str(theirs.value)


# ----------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("ours, theirs", [(Normal, td.Normal), (Bernoulli, td.Bernoulli), (Independent, td.Independent)])
def test_signatures_are_torchs(ours, theirs):
    assert issubclass(ours, theirs)
    mine, torchs = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
    assert [(p.name, p.kind, p.default) for p in mine.values()] == [(p.name, p.kind, p.default) for p in torchs.values()]
    assert ours.arg_constraints == theirs.arg_constraints
    assert ours.has_rsample == theirs.has_rsample


def test_bernoulli_positional_argument_is_probs():
    assert Bernoulli(0.3).probs == pytest.approx(0.3)
    torch.testing.assert_close(Bernoulli(torch.tensor([0.3, 0.9])).probs, torch.tensor([0.3, 0.9]))
    torch.testing.assert_close(Bernoulli(torch.tensor([0.3])).logits, td.Bernoulli(torch.tensor([0.3])).logits)
    _same_error(lambda: Bernoulli(torch.tensor([1.1])), lambda: td.Bernoulli(torch.tensor([1.1])))
    _same_error(lambda: Bernoulli(), lambda: td.Bernoulli())
    _same_error(lambda: Bernoulli(0.5, 0.0), lambda: td.Bernoulli(0.5, 0.0))


def test_bernoulli_from_logits_is_bernoulli_of_logits():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    ours = Bernoulli.from_logits(logits)
    assert type(ours) is Bernoulli and ours.logits is logits and "probs" not in ours.__dict__
    torch.testing.assert_close(ours.probs, td.Bernoulli(logits=logits).probs)
    _same_error(lambda: Bernoulli.from_logits(torch.tensor([math.nan]), validate_args=True),
                lambda: td.Bernoulli(logits=torch.tensor([math.nan]), validate_args=True))


def test_parameters_are_torchs_tensors():
    """broadcast_all's result, object for object, as torch's classes keep it."""
    loc, scale = torch.zeros(3), torch.ones(3)
    for ours, theirs in ((Normal(loc, scale), td.Normal(loc, scale)), (Normal(loc, 2.0), td.Normal(loc, 2.0)),
                         (Normal(0.0, 1.0), td.Normal(0.0, 1.0))):
        assert (ours.loc is loc) == (theirs.loc is loc) and (ours.scale is scale) == (theirs.scale is scale)
        assert ours.batch_shape == theirs.batch_shape and ours.event_shape == theirs.event_shape
        for a, b in ((ours.loc, theirs.loc), (ours.scale, theirs.scale)):
            assert a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
            torch.testing.assert_close(a, b)
    assert repr(Normal(loc, scale)) == repr(td.Normal(loc, scale))
    assert repr(Bernoulli(logits=loc)) == repr(td.Bernoulli(logits=loc))


# ----------------------------------------------------------------------------- Normal


@pytest.mark.parametrize("value_shape", [(4, 3), (2, 4, 3), (3,), (4, 1)])
def test_normal_log_prob_matches_torch(calls, value_shape):
    loc, scale = _gaussian()
    value = torch.randn(value_shape, dtype=torch.float64, requires_grad=True)
    _assert_same(Normal(loc, scale).log_prob(value), td.Normal(loc, scale).log_prob(value), (loc, scale, value))
    assert ("gaussian_log_likelihood", 0) in calls


def test_normal_from_logvar_matches_torch():
    loc, scale = _gaussian()
    logvar = (2 * torch.log(scale)).detach().requires_grad_(True)
    value = torch.randn(4, 3, dtype=torch.float64)
    def ours():
        return Normal.from_logvar(loc, logvar)

    def theirs():
        return td.Normal(loc, torch.exp(0.5 * logvar))

    assert "scale" not in ours().__dict__  # computed only when asked for
    _assert_same(ours().log_prob(value), theirs().log_prob(value), (loc, logvar))
    _assert_same(ours().entropy(), theirs().entropy(), (loc, logvar))
    _assert_same(ours().cdf(value), theirs().cdf(value), (loc, logvar))
    torch.testing.assert_close(ours().scale, theirs().scale)
    torch.testing.assert_close(ours().variance, theirs().variance)
    assert ours().logvar is logvar
    ours = ours()
    assert repr(ours) == "Normal(loc: torch.Size([4, 3]), logvar: torch.Size([4, 3]))"


def test_normal_from_logvar_validates_loc_and_logvar():
    with pytest.raises(ValueError, match="parameter loc"):
        Normal.from_logvar(torch.tensor([math.nan]), torch.zeros(1), validate_args=True)
    with pytest.raises(ValueError, match="parameter logvar .* GreaterThan\\(lower_bound=-inf\\)"):
        Normal.from_logvar(torch.zeros(2), torch.tensor([0.0, -math.inf]), validate_args=True)
    Normal.from_logvar(torch.zeros(2), torch.tensor([-80.0, math.inf]), validate_args=True)  # scale 0+ and inf: valid


@pytest.mark.parametrize("scale", [1.0, 2.5, "tensor0d", "row"])
def test_normal_with_broadcast_scale_matches_torch(calls, scale):
    """A scale of one number (or a row) is read by the kernels without being expanded."""
    loc, _ = _gaussian()
    if scale == "tensor0d":
        scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    elif scale == "row":
        scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    value = torch.randn(2, 4, 3, dtype=torch.float64)
    inputs = (loc, scale) if isinstance(scale, torch.Tensor) else (loc,)
    ours, theirs = Normal(loc, scale), td.Normal(loc, scale)
    _assert_same(ours.log_prob(value), theirs.log_prob(value), inputs)
    _assert_same(ours.entropy(), theirs.entropy(), inputs)
    _assert_same(td.Independent(ours, 2).log_prob(value), td.Independent(theirs, 2).log_prob(value), inputs)


def test_normal_log_prob_dtypes_follow_torch():
    loc, scale = torch.zeros(3), torch.ones(3)
    for value in (torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float16), torch.ones(3, dtype=torch.long)):
        ours, theirs = Normal(loc, scale).log_prob(value), td.Normal(loc, scale).log_prob(value)
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs)
    # a Python number is not a value torch validates; without validation torch computes it
    _same_error(lambda: Normal(loc, scale).log_prob(1.0), lambda: td.Normal(loc, scale).log_prob(1.0))
    torch.testing.assert_close(Normal(loc, scale, validate_args=False).log_prob(1.0),
                               td.Normal(loc, scale, validate_args=False).log_prob(1.0))
    _same_error(lambda: Normal(loc, scale, validate_args=False).log_prob(torch.ones(2)),
                lambda: td.Normal(loc, scale, validate_args=False).log_prob(torch.ones(2)), RuntimeError)


def test_normal_rsample_from_logvar_is_the_fused_reparameterization(calls):
    loc, scale = _gaussian()
    logvar = (2 * torch.log(scale)).detach().requires_grad_(True)
    torch.manual_seed(7)
    ours = Normal.from_logvar(loc, logvar).rsample()
    torch.manual_seed(7)
    torch.testing.assert_close(ours, fastgen.reparameterize(loc, logvar), rtol=0, atol=0)
    assert calls[0] == ("reparameterize", None)
    grad_loc, grad_logvar = _grads(ours, (loc, logvar))
    torch.testing.assert_close(grad_loc, torch.ones_like(loc))
    torch.testing.assert_close(grad_logvar, 0.5 * (ours - loc).detach())


def test_normal_rsample_of_a_scale_is_loc_plus_scale_eps_with_kernel_noise():
    """A scale that needs a gradient: eps from the kernel's noise, torch's loc + scale * eps."""
    loc, scale = _gaussian()
    torch.manual_seed(3)
    z = Normal(loc, scale).rsample((2,))
    torch.manual_seed(3)
    zeros = torch.zeros(2, 4, 3, dtype=torch.float64)
    eps = fastgen.reparameterize(zeros, zeros)
    torch.testing.assert_close(z, loc + scale * eps)
    grad_loc, grad_scale = _grads(z, (loc, scale))
    torch.testing.assert_close(grad_loc, torch.full_like(loc, 2.0))
    torch.testing.assert_close(grad_scale, eps.sum(0))


def test_normal_rsample_with_a_kept_log_variance_is_one_fused_pass(calls, monkeypatch):
    """A scale that needs no gradient: its log-variance is computed once (here by log_prob) and
    kept, and rsample is then one reparameterize pass over loc and it."""
    loc, scale = _gaussian()
    scale = scale.detach()
    distribution = Normal(loc, scale)
    distribution.log_prob(torch.zeros(4, 3, dtype=torch.float64))
    kept = distribution._kernel_logvar()
    assert kept is distribution._kernel_logvar()
    calls.clear()
    monkeypatch.setattr(torch, "addcmul", None)  # not the loc + scale * eps path
    torch.manual_seed(5)
    z = distribution.rsample((3,))
    assert calls == [("reparameterize", None)]
    torch.manual_seed(5)
    torch.testing.assert_close(z, fastgen.reparameterize(loc, 2 * torch.log(scale), num_samples=3), rtol=0, atol=0)
    grad_loc, = _grads(z, (loc,))
    torch.testing.assert_close(grad_loc, torch.full_like(loc, 3.0))


@pytest.mark.parametrize("sample_shape", [(), (0,), (2, 0), (0, 3), (1,), (3, 5)])
@pytest.mark.parametrize("build", ["scale", "fixed", "logvar"])
def test_normal_sample_shapes(sample_shape, build):
    loc, scale = _gaussian()
    distribution = {"scale": lambda: Normal(loc, scale), "fixed": lambda: Normal(loc, scale.detach()),
                    "logvar": lambda: Normal.from_logvar(loc, 2 * torch.log(scale))}[build]()
    for draw in (distribution.rsample(sample_shape), distribution.sample(sample_shape)):
        assert draw.shape == td.Normal(loc, scale).rsample(sample_shape).shape == torch.Size(sample_shape) + (4, 3)
    assert distribution.rsample(sample_shape).requires_grad and not distribution.sample(sample_shape).requires_grad
    assert distribution.sample(list(sample_shape)).shape == torch.Size(sample_shape) + (4, 3)


def test_zero_size_batches():
    loc, scale = torch.zeros(0, 2), torch.ones(0, 2)
    ours, theirs = Normal(loc, scale), td.Normal(loc, scale)
    assert ours.rsample((3,)).shape == theirs.rsample((3,)).shape == (3, 0, 2)
    assert ours.log_prob(torch.zeros(0, 2)).shape == (0, 2)
    assert td.Independent(ours, 1).log_prob(torch.zeros(0, 2)).shape == (0,)
    assert td.kl_divergence(ours, theirs).shape == (0, 2)
    assert Bernoulli(torch.zeros(0, 2)).log_prob(torch.zeros(0, 2)).shape == (0, 2)
    z, kl = rsample_and_kl(td.Independent(ours, 1), None, (2,))
    assert z.shape == (2, 0, 2) and kl.shape == (0,)


def test_kept_log_variance_follows_in_place_changes_and_torchs_graph_rules():
    loc = torch.zeros(3)
    scale = torch.ones(3)
    distribution = Normal(loc, scale)
    value = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(distribution.log_prob(value), td.Normal(loc, scale).log_prob(value))
    scale.mul_(2.0)  # an optimizer step, say: the kept log-variance is recomputed
    torch.testing.assert_close(distribution.log_prob(value), td.Normal(loc, scale).log_prob(value))
    # A leaf scale that needs a gradient: a distribution built once serves many steps, as torch's does.
    scale = torch.ones(3, requires_grad=True)
    distribution = Normal(loc, scale)
    for _ in range(2):
        distribution.log_prob(value).sum().backward()
        td.kl_divergence(distribution, Normal(0.0, 1.0)).sum().backward()
    assert scale.grad is not None


def test_normal_expand_keeps_what_the_kernels_read():
    loc, scale = _gaussian((3,))
    for distribution in (Normal(loc, scale), Normal.from_logvar(loc, 2 * torch.log(scale)), Normal(loc, 2.0)):
        expanded = distribution.expand((5, 3))
        assert type(expanded) is Normal and expanded.batch_shape == (5, 3)
        assert expanded._validate_args == distribution._validate_args
        assert expanded.logvar.shape == (5, 3)
        value = torch.randn(5, 3, dtype=torch.float64)
        reference = td.Normal(distribution.loc, distribution.scale).expand((5, 3))
        torch.testing.assert_close(expanded.log_prob(value), reference.log_prob(value))
        assert expanded.rsample((2,)).shape == (2, 5, 3)


def test_subclass_with_its_own_init_needs_its_own_expand():
    class Mine(Normal):
        def __init__(self, loc):
            super().__init__(loc, 1.0)

    with pytest.raises(NotImplementedError, match="custom .expand"):
        Mine(torch.zeros(2)).expand((3, 2))


# ----------------------------------------------------------------------------- Bernoulli


def _bernoulli(shape=(5, 4), seed=1):
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(shape, generator=generator, dtype=torch.float64)).requires_grad_(True)
    target = torch.bernoulli(torch.full(shape, 0.4, dtype=torch.float64), generator=generator)
    return logits, target


def test_bernoulli_log_prob_and_entropy_match_torch(calls):
    logits, target = _bernoulli()
    _assert_same(Bernoulli(logits=logits).log_prob(target), td.Bernoulli(logits=logits).log_prob(target), (logits,))
    _assert_same(Bernoulli(logits=logits).entropy(), td.Bernoulli(logits=logits).entropy(), (logits,))
    probs = torch.sigmoid(logits).detach().requires_grad_(True)
    _assert_same(Bernoulli(probs).log_prob(target), td.Bernoulli(probs).log_prob(target), (probs,))
    _assert_same(Bernoulli(probs).entropy(), td.Bernoulli(probs).entropy(), (probs,))
    assert [call for call in calls if call[0] == "bernoulli_log_likelihood"] == [("bernoulli_log_likelihood", 0)] * 4


def test_bernoulli_soft_targets_and_other_dtypes_follow_torch():
    logits = torch.tensor([0.3, -1.2])
    soft = torch.tensor([0.25, 0.9])
    torch.testing.assert_close(Bernoulli(logits=logits, validate_args=False).log_prob(soft),
                               td.Bernoulli(logits=logits, validate_args=False).log_prob(soft))
    _same_error(lambda: Bernoulli(logits=logits).log_prob(soft), lambda: td.Bernoulli(logits=logits).log_prob(soft))
    for value in (torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float16)):
        ours, theirs = Bernoulli(logits=logits).log_prob(value), td.Bernoulli(logits=logits).log_prob(value)
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs)
    for value in (torch.ones(2, dtype=torch.long), torch.ones(2, dtype=torch.bool)):
        _same_error(lambda: Bernoulli(logits=logits).log_prob(value),
                    lambda: td.Bernoulli(logits=logits).log_prob(value), RuntimeError)


def test_bernoulli_expand():
    distribution = Bernoulli(torch.tensor([0.2, 0.7, 0.5]))
    expanded = distribution.expand((2, 3))
    assert type(expanded) is Bernoulli and expanded.batch_shape == (2, 3)
    torch.testing.assert_close(expanded.log_prob(torch.ones(2, 3)), td.Bernoulli(distribution.probs).expand((2, 3)).log_prob(torch.ones(2, 3)))


# ----------------------------------------------------------------------------- validation


def test_validation_errors_are_torchs():
    nan, inf = math.nan, math.inf
    for loc, scale in ((torch.tensor([nan, 0.0]), torch.ones(2)), (torch.zeros(2), torch.tensor([1.0, 0.0])),
                       (torch.zeros(2), torch.tensor([1.0, -1.0])), (torch.zeros(2), torch.tensor([1.0, nan])),
                       (0.0, -1.0), (torch.zeros(2, dtype=torch.float16), torch.tensor([1.0, -1.0], dtype=torch.float16))):
        _same_error(lambda: Normal(loc, scale, validate_args=True), lambda: td.Normal(loc, scale, validate_args=True))
    Normal(torch.tensor([inf, -inf]), torch.tensor([inf, 1e-30]), validate_args=True)  # valid, as in torch
    for probs in (torch.tensor([-0.1]), torch.tensor([1.1]), torch.tensor([nan]), -0.5):
        _same_error(lambda: Bernoulli(probs, validate_args=True), lambda: td.Bernoulli(probs, validate_args=True))
    _same_error(lambda: Bernoulli(logits=torch.tensor([nan]), validate_args=True),
                lambda: td.Bernoulli(logits=torch.tensor([nan]), validate_args=True))
    normal, theirs = Normal(torch.zeros(2), torch.ones(2)), td.Normal(torch.zeros(2), torch.ones(2))
    for value in (torch.tensor([nan, 0.0]), torch.zeros(3), torch.zeros(2, 3), [0.0, 1.0]):
        _same_error(lambda: normal.log_prob(value), lambda: theirs.log_prob(value))
        _same_error(lambda: td.Independent(normal, 1).log_prob(value), lambda: td.Independent(theirs, 1).log_prob(value))
    _same_error(lambda: normal.cdf(torch.tensor([nan, 0.0])), lambda: theirs.cdf(torch.tensor([nan, 0.0])))
    bernoulli, theirs = Bernoulli(torch.full((2,), 0.5)), td.Bernoulli(torch.full((2,), 0.5))
    for value in (torch.tensor([0.5, 1.0]), torch.tensor([2.0, 0.0]), torch.tensor([nan, 1.0]),
                  torch.tensor([-1.0, 0.0]), torch.tensor([1.0 + 2**-23, 0.0]), torch.tensor([inf, 0.0])):
        _same_error(lambda: bernoulli.log_prob(value), lambda: theirs.log_prob(value))
        _same_error(lambda: td.Independent(bernoulli, 1).log_prob(value), lambda: td.Independent(theirs, 1).log_prob(value))
    bernoulli.log_prob(torch.tensor([-0.0, 1.0]))  # in the support, as in torch


def test_infinite_values_are_in_the_support():
    """A value of +-inf is real: validation passes it, the result is torch's."""
    normal, theirs = Normal(torch.zeros(2), torch.ones(2)), td.Normal(torch.zeros(2), torch.ones(2))
    value = torch.tensor([math.inf, -math.inf])
    torch.testing.assert_close(normal.log_prob(value), theirs.log_prob(value))
    assert td.Independent(normal, 1).log_prob(value).item() == -math.inf


def test_default_validation_setting_is_torchs():
    previous = td.Distribution._validate_args
    try:
        td.Distribution.set_default_validate_args(False)
        Normal(torch.zeros(1), torch.tensor([-1.0]))
        Bernoulli(torch.tensor([2.0]))
        normal = Normal(torch.zeros(1), torch.ones(1))
        assert not normal._validate_args
    finally:
        td.Distribution.set_default_validate_args(previous)
    # like torch's, an instance without validate_args follows the default when it changes
    assert normal._validate_args == td.Normal(torch.zeros(1), torch.ones(1))._validate_args
    with pytest.raises(ValueError):
        Normal(torch.zeros(1), torch.tensor([-1.0]))


# ----------------------------------------------------------------------------- KL


def _learned_prior():
    prior_loc = torch.linspace(-1, 1, 3, dtype=torch.float64, requires_grad=True)  # shape (D,)
    prior_scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    return prior_loc, prior_scale


@pytest.mark.parametrize("prior_class", [Normal, td.Normal])
@pytest.mark.parametrize("posterior", ["scale", "logvar"])
def test_kl_divergence_matches_torch_in_both_orders(calls, prior_class, posterior):
    loc, scale = _gaussian()
    prior_loc, prior_scale = _learned_prior()
    def q():
        return Normal(loc, scale) if posterior == "scale" else Normal.from_logvar(loc, 2 * torch.log(scale))

    p = prior_class(prior_loc, prior_scale)
    inputs = (loc, scale, prior_loc, prior_scale)
    _assert_same(td.kl_divergence(q(), p), td.kl_divergence(td.Normal(loc, scale), td.Normal(prior_loc, prior_scale)), inputs)
    _assert_same(td.kl_divergence(p, q()), td.kl_divergence(td.Normal(prior_loc, prior_scale), td.Normal(loc, scale)), inputs)
    assert calls == [("gaussian_kl", 0)] * 2


@pytest.mark.parametrize("prior", ["numbers", "zeros-ones", "torch", "learned", "full-learned"])
@pytest.mark.parametrize("wrapper", [td.Independent, Independent])
def test_kl_of_independents_sums_in_the_kernel(calls, prior, wrapper):
    loc, scale = _gaussian((2, 4, 3))
    prior_loc, prior_scale = _learned_prior()
    p_loc, p_scale = {
        "numbers": (0.0, 1.0), "zeros-ones": (torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)),
        "torch": (0.0, 1.0), "learned": (prior_loc, prior_scale),
        "full-learned": _gaussian((2, 4, 3), seed=3),
    }[prior]
    prior_class = td.Normal if prior == "torch" else Normal
    inputs = tuple(t for t in (loc, scale, p_loc, p_scale) if isinstance(t, torch.Tensor) and t.requires_grad)
    for n in (1, 2):
        p_base = prior_class(p_loc, p_scale)
        if p_base.batch_shape != (2, 4, 3):
            p_base = p_base.expand((2, 4, 3))
        q, p = wrapper(Normal(loc, scale), n), wrapper(p_base, n)
        reference_q = td.Independent(td.Normal(loc, scale), n)
        reference_p = td.Independent(td.Normal(p_loc, p_scale).expand((2, 4, 3)), n)
        _assert_same(td.kl_divergence(q, p), td.kl_divergence(reference_q, reference_p), inputs)
        _assert_same(td.kl_divergence(p, q), td.kl_divergence(reference_p, reference_q), inputs)
        assert calls[-2:] == [("gaussian_kl", n)] * 2


def test_kl_of_nested_independents_and_mismatched_ones():
    loc, scale = _gaussian((2, 4, 3))
    q = td.Independent(td.Independent(Normal(loc, scale), 1), 1)
    p = td.Independent(td.Independent(Normal(0.0, 1.0).expand((2, 4, 3)), 1), 1)
    reference = td.kl_divergence(td.Normal(loc, scale), td.Normal(0.0, 1.0)).sum((-1, -2))
    torch.testing.assert_close(td.kl_divergence(q, p), reference)
    _same_error(lambda: td.kl_divergence(td.Independent(Normal(loc, scale), 1), td.Independent(Normal(loc, scale), 2)),
                lambda: td.kl_divergence(td.Independent(td.Normal(loc, scale), 1), td.Independent(td.Normal(loc, scale), 2)),
                NotImplementedError)


def test_torch_only_pairs_keep_torchs_code(calls):
    loc, scale = _gaussian()
    x = torch.randn(4, 3, dtype=torch.float64)
    td.kl_divergence(td.Independent(td.Normal(loc, scale), 1), td.Independent(td.Normal(0.0, 1.0).expand((4, 3)), 1))
    td.Independent(td.Normal(loc, scale), 1).log_prob(x)
    td.kl_divergence(td.Normal(loc, scale), td.Normal(0.0, 1.0))
    assert calls == []


def test_kl_bernoulli_is_torchs():
    p, q = Bernoulli(torch.tensor([0.0, 0.3, 1.0])), Bernoulli(torch.tensor([1.0, 0.6, 1.0]))
    torch.testing.assert_close(td.kl_divergence(p, q),
                               td.kl_divergence(td.Bernoulli(p.probs), td.Bernoulli(q.probs)))


# ----------------------------------------------------------------------------- Independent log_prob


@pytest.mark.parametrize("wrapper", [td.Independent, Independent])
def test_independent_log_prob_sums_in_the_kernel(calls, wrapper):
    loc, scale = _gaussian((2, 4, 3))
    value = torch.randn(5, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    logits, target = _bernoulli((2, 4, 3))
    for n in (0, 1, 2, 3):
        _assert_same(wrapper(Normal(loc, scale), n).log_prob(value),
                     td.Independent(td.Normal(loc, scale), n).log_prob(value), (loc, scale, value))
        assert calls[-1] == ("gaussian_log_likelihood", n)
        _assert_same(wrapper(Bernoulli(logits=logits), n).log_prob(target),
                     td.Independent(td.Bernoulli(logits=logits), n).log_prob(target), (logits,))
        assert calls[-1] == ("bernoulli_log_likelihood", n)
    nested = wrapper(wrapper(Normal(loc, scale), 1), 1)
    _assert_same(nested.log_prob(value), td.Independent(td.Normal(loc, scale), 2).log_prob(value), (loc, scale, value))
    assert calls[-1] == ("gaussian_log_likelihood", 2)
    assert nested.batch_shape == (2,) and nested.event_shape == (4, 3)


def test_fastgen_independent_is_torchs_independent():
    base = Normal(torch.zeros(4, 3), torch.ones(4, 3))
    ours, theirs = Independent(base, 1), td.Independent(base, 1)
    assert ours.batch_shape == theirs.batch_shape and ours.event_shape == theirs.event_shape
    assert repr(ours) == repr(theirs).replace("Independent", "Independent", 1)
    expanded = ours.expand((2, 4))
    assert type(expanded) is Independent and expanded.batch_shape == (2, 4)
    assert pickle.loads(pickle.dumps(ours)).log_prob(torch.zeros(4, 3)).shape == (4,)


# ----------------------------------------------------------------------------- rsample_and_kl


@pytest.mark.parametrize("prior", [None, "numbers", "zeros-ones", "torch-numbers", "torch-zeros-ones"])
@pytest.mark.parametrize("posterior", ["scale", "logvar", "torch"])
@pytest.mark.parametrize("sample_shape", [(), (3,), (2, 3)])
def test_rsample_and_kl_is_one_fused_pass_for_a_standard_prior(calls, prior, posterior, sample_shape):
    loc, scale = _gaussian((4, 3))
    logvar = 2 * torch.log(scale)
    base = {"scale": lambda: Normal(loc, scale), "logvar": lambda: Normal.from_logvar(loc, logvar),
            "torch": lambda: td.Normal(loc, scale)}[posterior]()
    q = td.Independent(base, 1)
    prior_distribution = None
    if prior is not None:
        zeros, ones = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        p_class = td.Normal if prior.startswith("torch") else Normal
        p_base = p_class(0.0, 1.0).expand((3,)) if prior.endswith("numbers") else p_class(zeros, ones)
        prior_distribution = td.Independent(p_base, 1)
    torch.manual_seed(11)
    z, kl = rsample_and_kl(q, prior_distribution, sample_shape)
    assert calls == [("reparameterize_kl", 1)]
    torch.manual_seed(11)
    count = math.prod(sample_shape) if sample_shape else None
    expected = fastgen.reparameterize(loc, logvar, num_samples=count)
    torch.testing.assert_close(z, expected.reshape(torch.Size(sample_shape) + (4, 3)))
    reference = td.kl_divergence(td.Independent(td.Normal(loc, scale), 1),
                                 td.Independent(td.Normal(torch.zeros(3, dtype=torch.float64), 1.0), 1))
    _assert_same(kl, reference, (loc, scale))
    assert z.requires_grad


def test_rsample_and_kl_methods_and_other_priors(calls):
    loc, scale = _gaussian((4, 3))
    prior_loc, prior_scale = _learned_prior()
    q = Independent(Normal(loc, scale), 1)
    prior = Independent(Normal(prior_loc, prior_scale), 1)
    z, kl = q.rsample_and_kl(prior, (2,))
    assert z.shape == (2, 4, 3) and [name for name, _ in calls] == ["reparameterize", "gaussian_kl"]
    reference = td.kl_divergence(td.Independent(td.Normal(loc, scale), 1), td.Independent(td.Normal(prior_loc, prior_scale), 1))
    _assert_same(kl, reference, (loc, scale, prior_loc, prior_scale))
    z, kl = Normal(loc, scale).rsample_and_kl()  # element-wise KL of a bare Normal
    assert z.shape == (4, 3) and calls[-1] == ("reparameterize_kl", 0)
    torch.testing.assert_close(kl, td.kl_divergence(td.Normal(loc, scale), td.Normal(0.0, 1.0)))


def test_rsample_and_kl_of_other_distributions_is_rsample_and_kl_divergence():
    from torch.distributions import Laplace

    q, p = Laplace(torch.zeros(3), torch.ones(3)), Laplace(torch.ones(3), torch.ones(3))
    z, kl = rsample_and_kl(q, p, (2,))
    assert z.shape == (2, 3)
    torch.testing.assert_close(kl, td.kl_divergence(q, p))
    with pytest.raises(TypeError, match="prior=None means N\\(0, I\\)"):
        rsample_and_kl(q)
    _same_error(lambda: rsample_and_kl(td.Independent(Normal(torch.zeros(2, 3), 1.0), 1), td.Normal(0.0, 1.0)),
                lambda: td.kl_divergence(td.Independent(td.Normal(torch.zeros(2, 3), 1.0), 1), td.Normal(0.0, 1.0)),
                NotImplementedError)


def test_module_exports():
    assert fd.kl_divergence is td.kl_divergence
    assert set(fd.__all__) == {"Bernoulli", "Independent", "Normal", "kl_divergence", "rsample_and_kl"}
