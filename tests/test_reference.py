"""fastgen.reference: the textbook formulas against torch's own distributions, and its Philox."""

from __future__ import annotations

import math

import pytest
import torch
from fastgen_checks import (
    DTYPES,
    SHAPES,
    assert_close,
    oracle_bernoulli,
    oracle_gaussian_kl,
    oracle_gaussian_ll,
    rand,
)

from fastgen import reference


def test_philox_known_answer():
    """Random123's Philox4x32-10 known-answer vector for counter 0 and key 0."""
    words = reference.philox4x32_10(0, torch.zeros(1, dtype=torch.int64))
    assert [int(w) for w in words] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_philox_words_are_32_bit():
    words = reference.philox4x32_10(-(2**63), torch.arange(2**32 - 4, 2**32 + 4, dtype=torch.int64))
    for w in words:
        assert w.dtype == torch.int64 and (w >= 0).all() and (w < 2**32).all()


def test_uniform_is_in_unit_interval():
    words = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1], dtype=torch.int64)
    u = reference._uniform(words)
    assert u.dtype == torch.float32 and (u >= 0).all() and (u < 1).all()
    # 2**31 reads as int32 -2**31, folded by ~x onto 2**31 - 1.
    assert u[3] == u[2] and u[4] == u[0] == 0


@pytest.mark.parametrize("shape,event_dims", SHAPES[:7])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_formulas_match_torch(shape, event_dims, reduction):
    mu, logvar = rand(shape, torch.float64, seed=1), rand(shape, torch.float64, seed=2)
    pm, plv = rand(shape[-1:], torch.float64, seed=3), rand(shape[-1:], torch.float64, seed=4)
    target = rand(shape, torch.float64, low=0, high=1, seed=5)
    kw = {"event_dims": event_dims, "reduction": reduction}
    assert_close(reference.gaussian_kl(mu, logvar, **kw), oracle_gaussian_kl(mu, logvar, **kw))
    if event_dims >= 1:
        assert_close(reference.gaussian_kl(mu, logvar, pm, plv, **kw), oracle_gaussian_kl(mu, logvar, pm, plv, **kw))
    assert_close(reference.bernoulli_log_likelihood(mu * 4, target, **kw), oracle_bernoulli(mu * 4, target, **kw))
    assert_close(
        reference.gaussian_log_likelihood(target, mu, logvar, **kw), oracle_gaussian_ll(target, mu, logvar, **kw)
    )
    assert_close(reference.gaussian_log_likelihood(target, mu, **kw), oracle_gaussian_ll(target, mu, **kw))


@pytest.mark.parametrize("dtype", DTYPES)
def test_half_types_compute_in_float32(dtype):
    mu, logvar = rand((4, 50), dtype, seed=1), rand((4, 50), dtype, seed=2)
    kl = reference.gaussian_kl(mu, logvar)
    assert kl.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(kl, oracle_gaussian_kl(mu, logvar), dtype=kl.dtype, scale=4)


@pytest.mark.parametrize("num_samples", [None, 3])
def test_reparameterize_is_the_stream(num_samples):
    mu, logvar = rand((4, 7), torch.float64, seed=1), rand((4, 7), torch.float64, seed=2)
    g = torch.Generator().manual_seed(17)
    seed = int(reference.draw_stream(torch.zeros(1), 1, g)[0])
    g.manual_seed(17)
    z = reference.reparameterize(mu, logvar, num_samples=num_samples, generator=g)
    shape = mu.shape if num_samples is None else (num_samples, *mu.shape)
    eps = reference.philox_normal(math.prod(shape), seed, 0).double().reshape(shape)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps, rtol=0, atol=0)
    # plain autograd gives design.md's gradients
    mu.requires_grad_(), logvar.requires_grad_()
    g.manual_seed(17)
    z = reference.reparameterize(mu, logvar, num_samples=num_samples, generator=g)
    w = rand(shape, torch.float64, seed=3)
    grad_mu, grad_lv = torch.autograd.grad(z, (mu, logvar), w)
    term = w * 0.5 * torch.exp(0.5 * logvar.detach()) * eps
    torch.testing.assert_close(grad_mu, w if num_samples is None else w.sum(0))
    torch.testing.assert_close(grad_lv, term if num_samples is None else term.sum(0))


def test_reparameterize_kl_pairs_reparameterize_and_kl():
    mu, logvar = rand((3, 8), seed=1), rand((3, 8), seed=2)
    z, kl = reference.reparameterize_kl(mu, logvar, num_samples=2, generator=torch.Generator().manual_seed(3))
    z2 = reference.reparameterize(mu, logvar, num_samples=2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, z2, rtol=0, atol=0)
    assert_close(kl, oracle_gaussian_kl(mu, logvar), dtype=torch.float32)


def test_seed_draw_covers_64_bits():
    g = torch.Generator().manual_seed(0)
    seeds = torch.stack([reference.draw_stream(torch.zeros(1), 1, g)[0] for _ in range(64)])
    assert seeds.dtype == torch.int64 and seeds.unique().numel() == 64
    assert (seeds < 0).any() and (seeds > 0).any() and (seeds.abs() > 2**40).all()


def test_clamp():
    tensors = [rand((10,), seed=1), rand((3, 3), torch.float64, seed=2)]
    expected = [t.clamp(-0.5, 0.25) for t in tensors]
    reference.clamp_(tensors, -0.5, 0.25)
    for t, e in zip(tensors, expected):
        assert torch.equal(t, e)
