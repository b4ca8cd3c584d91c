"""fastgen.distributions against torch.distributions: values, gradients, shapes, KL dispatch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as td

import fastgen
import fastgen.ops
from fastgen.distributions import Bernoulli, Normal


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


def _gaussian_parameters(shape=(4, 3), dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(shape, generator=generator, dtype=dtype, requires_grad=True)
    logvar = (0.5 * torch.randn(shape, generator=generator, dtype=dtype)).requires_grad_(True)
    return loc, logvar


def _grads(output, inputs):
    return torch.autograd.grad(output.sum(), inputs)


def test_subclasses_are_drop_in():
    loc, logvar = _gaussian_parameters()
    assert isinstance(Normal.from_logvar(loc, logvar), td.Normal)
    assert isinstance(Bernoulli(torch.zeros(3)), td.Bernoulli)


def test_normal_log_prob_matches_torch_in_value_and_gradient():
    loc, logvar = _gaussian_parameters()
    value = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)  # broadcasts over loc
    ours = Normal.from_logvar(loc, logvar).log_prob(value)
    theirs = td.Normal(loc, torch.exp(0.5 * logvar)).log_prob(value)
    assert ours.shape == theirs.shape == (2, 4, 3)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(_grads(ours, (loc, logvar, value)), _grads(theirs, (loc, logvar, value))):
        torch.testing.assert_close(a, b)


def test_normal_from_scale_matches_torch():
    loc, logvar = _gaussian_parameters()
    scale = torch.exp(0.5 * logvar.detach()).requires_grad_(True)
    value = torch.randn(4, 3, dtype=torch.float64)
    ours, theirs = Normal(loc, scale), td.Normal(loc, scale)
    torch.testing.assert_close(ours.log_prob(value), theirs.log_prob(value))
    torch.testing.assert_close(ours.logvar, 2 * torch.log(scale))
    torch.testing.assert_close(_grads(ours.log_prob(value), (scale,))[0], _grads(theirs.log_prob(value), (scale,))[0])


def test_normal_entropy_matches_torch():
    loc, logvar = _gaussian_parameters()
    ours = Normal.from_logvar(loc, logvar).entropy()
    theirs = td.Normal(loc, torch.exp(0.5 * logvar)).entropy()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grads(ours, (logvar,))[0], _grads(theirs, (logvar,))[0])


def test_normal_rsample_is_the_fused_reparameterization():
    loc, logvar = _gaussian_parameters()
    torch.manual_seed(7)
    ours = Normal.from_logvar(loc, logvar).rsample()
    torch.manual_seed(7)
    fused = fastgen.reparameterize(loc, logvar)
    torch.testing.assert_close(ours, fused, rtol=0, atol=0)
    # d z / d loc = 1 and d z / d logvar = (z - loc) / 2 for z = loc + exp(logvar / 2) eps
    grad_loc, grad_logvar = _grads(ours, (loc, logvar))
    torch.testing.assert_close(grad_loc, torch.ones_like(loc))
    torch.testing.assert_close(grad_logvar, 0.5 * (ours - loc).detach())


def test_normal_rsample_shapes_and_moments():
    loc = torch.tensor([1.0, -2.0])
    logvar = torch.tensor([0.0, math.log(4.0)])
    distribution = Normal.from_logvar(loc, logvar)
    assert distribution.rsample().shape == (2,)
    assert distribution.rsample((3, 5)).shape == (3, 5, 2)
    draws = distribution.sample((20000,))
    assert not draws.requires_grad
    torch.testing.assert_close(draws.mean(0), loc, atol=0.05, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([1.0, 2.0]), atol=0.05, rtol=0)


def test_kl_divergence_dispatches_to_the_fused_op(monkeypatch):
    calls = []
    original = fastgen.ops.gaussian_kl

    def counting(*args, **kwargs):
        calls.append(kwargs.get("event_dims"))
        return original(*args, **kwargs)

    monkeypatch.setattr(fastgen.ops, "gaussian_kl", counting)
    loc, logvar = _gaussian_parameters()
    td.kl_divergence(Normal.from_logvar(loc, logvar), Normal(torch.zeros(3, dtype=torch.float64), 1.0))
    assert calls == [0]


@pytest.mark.parametrize("prior_kind", ["fastgen", "torch"])
def test_kl_divergence_matches_torch(prior_kind):
    loc, logvar = _gaussian_parameters()
    prior_loc = torch.linspace(-1, 1, 3, dtype=torch.float64, requires_grad=True)  # learned prior, shape (D,)
    prior_scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    prior = (Normal if prior_kind == "fastgen" else td.Normal)(prior_loc, prior_scale)
    ours = td.kl_divergence(Normal.from_logvar(loc, logvar), prior)
    theirs = td.kl_divergence(td.Normal(loc, torch.exp(0.5 * logvar)), td.Normal(prior_loc, prior_scale))
    torch.testing.assert_close(ours, theirs)
    inputs = (loc, logvar, prior_loc, prior_scale)
    for a, b in zip(_grads(ours, inputs), _grads(theirs, inputs)):
        torch.testing.assert_close(a, b)
    # and the reverse direction (torch Normal first) also reaches the fused KL
    reverse = td.kl_divergence(td.Normal(prior_loc, prior_scale), Normal.from_logvar(loc, logvar))
    torch.testing.assert_close(reverse, td.kl_divergence(td.Normal(prior_loc, prior_scale),
                                                          td.Normal(loc, torch.exp(0.5 * logvar))))


def test_independent_wrappers_sum_over_the_event():
    loc, logvar = _gaussian_parameters()
    posterior = td.Independent(Normal.from_logvar(loc, logvar), 1)
    prior = td.Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
    kl = td.kl_divergence(posterior, prior)
    assert kl.shape == (4,)
    torch.testing.assert_close(kl, fastgen.gaussian_kl(loc, logvar))
    z = posterior.rsample()
    torch.testing.assert_close(posterior.log_prob(z), fastgen.gaussian_log_likelihood(z, loc, logvar))


def test_normal_expand_keeps_the_log_variance():
    loc, logvar = _gaussian_parameters((3,))
    expanded = Normal.from_logvar(loc, logvar).expand((5, 3))
    assert type(expanded) is Normal and expanded.batch_shape == (5, 3)
    assert expanded.logvar.shape == (5, 3)
    torch.testing.assert_close(expanded.logvar[2], logvar)


def test_normal_validation_still_applies():
    with pytest.raises(ValueError, match="scale"):
        Normal(torch.zeros(2), torch.tensor([1.0, -1.0]), validate_args=True)


def _bernoulli_inputs():
    generator = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(5, 4, generator=generator, dtype=torch.float64)).requires_grad_(True)
    target = torch.bernoulli(torch.full((5, 4), 0.4, dtype=torch.float64), generator=generator)
    return logits, target


def test_bernoulli_takes_logits_first_and_matches_torch():
    logits, target = _bernoulli_inputs()
    ours = Bernoulli(logits).log_prob(target)
    theirs = td.Bernoulli(logits=logits).log_prob(target)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grads(ours, (logits,))[0], _grads(theirs, (logits,))[0])
    torch.testing.assert_close(Bernoulli(logits).probs, torch.sigmoid(logits))


def test_bernoulli_log_prob_is_stable_for_large_logits():
    logits = torch.tensor([-200.0, 200.0, 0.0])
    log_prob = Bernoulli(logits).log_prob(torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(log_prob, torch.tensor([-200.0, 0.0, -math.log(2.0)]))


def test_bernoulli_entropy_matches_torch():
    logits, _ = _bernoulli_inputs()
    ours, theirs = Bernoulli(logits).entropy(), td.Bernoulli(logits=logits).entropy()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grads(ours, (logits,))[0], _grads(theirs, (logits,))[0])


def test_bernoulli_from_probs_expand_and_independent():
    probs = torch.tensor([0.2, 0.7, 0.5])
    distribution = Bernoulli(probs=probs)
    target = torch.tensor([1.0, 0.0, 1.0])
    torch.testing.assert_close(distribution.log_prob(target), td.Bernoulli(probs=probs).log_prob(target))
    expanded = distribution.expand((2, 3))
    assert type(expanded) is Bernoulli and expanded.batch_shape == (2, 3)
    joint = td.Independent(Bernoulli(torch.zeros(4, 3)), 1).log_prob(torch.ones(4, 3))
    torch.testing.assert_close(joint, torch.full((4,), 3 * -math.log(2.0)))


def test_bernoulli_soft_targets_without_validation():
    logits = torch.tensor([0.3, -1.2])
    soft = torch.tensor([0.25, 0.9])
    expected = soft * logits - torch.nn.functional.softplus(logits)
    torch.testing.assert_close(Bernoulli(logits, validate_args=False).log_prob(soft), expected)
