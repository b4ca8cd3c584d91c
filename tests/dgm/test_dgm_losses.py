"""fastgen.dgm losses: values against torch.distributions, the kernels they pick, arithmetic, text."""

from __future__ import annotations

import pytest
import torch
import torch.distributions as td
import torch.nn.functional as F
from torch import nn

import fastgen
from dgm_parts import Classifier, Generator, Inference
from fastgen_checks import DispatchedOps
from fastgen import dgm
from fastgen.dgm import (Entropy, Expectation, KullbackLeibler, LogProb, LossError, StochasticReconstructionLoss,
                         Terms)


def _hand_elbo_loss(q, p, x, generator):
    """The seed's negative ELBO written with fastgen's ops by hand."""
    out = q(x)
    z, kl = fastgen.reparameterize_kl(out["loc"], 2 * torch.log(out["scale"]), generator=generator)
    probs = p(z)["probs"]
    rec = fastgen.bernoulli_log_likelihood(torch.logit(probs, eps=torch.finfo(probs.dtype).eps), x)
    return kl - rec


def test_seed_loss_equals_the_hand_written_elbo(vae_parts):
    q, p, prior, x = vae_parts
    loss = (KullbackLeibler(q, prior) + StochasticReconstructionLoss(q, p)).mean()
    value = loss.eval({"x": x}, generator=torch.Generator().manual_seed(7))
    expected = _hand_elbo_loss(q, p, x, torch.Generator().manual_seed(7)).mean()
    torch.testing.assert_close(value, expected)
    # gradients too
    grads = torch.autograd.grad(value, list(q.parameters()) + list(p.parameters()))
    reference = torch.autograd.grad(expected, list(q.parameters()) + list(p.parameters()))
    for got, want in zip(grads, reference):
        torch.testing.assert_close(got, want)


def test_one_encoder_pass_and_one_fused_sample_and_kl(vae_parts):
    """KL(q || N(0, I)) and the draw z ~ q come from one reparameterize_kl; q's network runs once."""
    q, p, prior, x = vae_parts
    loss = (KullbackLeibler(q, prior) + StochasticReconstructionLoss(q, p)).mean()
    loss.eval({"x": x})  # the first evaluation decides the fusion
    q.calls = 0
    with DispatchedOps() as ops:
        loss.eval({"x": x}).backward()
    assert q.calls == 1
    fused = [name for name in ops.names if name.startswith("_reparameterize") or name.startswith("_gaussian_kl")]
    assert fused == ["_reparameterize_kl", "_reparameterize_kl_backward"]
    assert ops.names.count("_bernoulli_log_likelihood") == 1
    # as many operators as the same model written by hand
    with DispatchedOps() as hand:
        _hand_elbo_loss(q, p, x, None).mean().backward()
    assert len(ops.names) <= len(hand.names) + 1, (ops.names, hand.names)


def test_fusion_does_not_change_the_value(vae_parts):
    q, p, prior, x = vae_parts
    kl, rec = KullbackLeibler(q, prior), StochasticReconstructionLoss(q, p)
    together = Terms(kl=kl, rec=rec).eval({"x": x}, generator=torch.Generator().manual_seed(1))
    alone_rec = rec.eval({"x": x}, generator=torch.Generator().manual_seed(1))  # plain reparameterize
    torch.testing.assert_close(together["rec"], alone_rec)
    torch.testing.assert_close(together["kl"], kl.eval({"x": x}))
    # a second sample of q in the same loss draws its own z
    double = (rec + rec).eval({"x": x}, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(double, 2 * alone_rec)


def test_kl_to_a_learned_diagonal_prior_is_gaussian_kl(vae_parts):
    q, _, _, x = vae_parts
    prior = dgm.Normal(loc=nn.Parameter(torch.randn(3)), scale=nn.Parameter(torch.rand(3) + 0.5), var=["z"],
                       name="p")
    value = KullbackLeibler(q, prior).eval({"x": x})
    params = q.get_params({"x": x})
    reference = td.kl_divergence(td.Independent(td.Normal(params["loc"], params["scale"]), 1),
                                 td.Independent(td.Normal(prior.loc, prior.scale), 1))
    torch.testing.assert_close(value, reference)
    value.sum().backward()
    assert prior.loc.grad is not None and prior.scale.grad is not None


def test_bernoulli_and_categorical_kl_and_the_monte_carlo_fallback():
    torch.manual_seed(0)
    a = dgm.Bernoulli(logits=torch.randn(4), var=["x"], name="a")
    b = dgm.Bernoulli(probs=torch.rand(4), var=["x"], name="b")
    reference = td.kl_divergence(td.Bernoulli(logits=a.logits), td.Bernoulli(probs=b.probs)).sum()
    torch.testing.assert_close(KullbackLeibler(a, b).eval(), reference, rtol=1e-5, atol=1e-5)
    c = dgm.Categorical(logits=torch.randn(5), var=["y"], name="c")
    d = dgm.Categorical(probs=torch.softmax(torch.randn(5), 0), var=["y"], name="d")
    reference = td.kl_divergence(td.Categorical(logits=c.logits), td.Categorical(probs=d.probs))
    torch.testing.assert_close(KullbackLeibler(c, d).eval(), reference)
    n1 = dgm.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="n")
    n2 = dgm.Normal(loc=torch.ones(2), scale=torch.ones(2), var=["z"], name="m")
    estimate = KullbackLeibler(n1, n2, analytical=False)
    values = torch.stack([estimate.eval({"n": torch.zeros(20000, 1)}) for _ in range(1)])
    torch.testing.assert_close(values.mean(), torch.tensor(1.0), atol=0.05, rtol=0)  # KL = |mu|^2 / 2 = 1


def test_enumerated_expectation_is_the_exact_sum_over_classes():
    class Encoder(dgm.Normal):
        def __init__(self):
            super().__init__(cond_var=["x", "y"], var=["z"], name="q")
            self.fc = nn.Linear(16, 6)

        def forward(self, x, y):
            loc, raw = self.fc(torch.cat([x, y], -1)).chunk(2, -1)
            return {"loc": loc, "logvar": raw}

    torch.manual_seed(0)
    q_y, q_z = Classifier(), Encoder()
    prior = dgm.Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[3])
    inner = KullbackLeibler(q_z, prior)
    loss = Expectation(q_y, inner) - Entropy(q_y)
    assert loss.input_var == ["x"] and Expectation(q_y, inner).method == "enumerate"
    x = torch.rand(5, 12)
    value = loss.eval({"x": x})
    probs = torch.softmax(q_y.fc(x), -1)
    expected = -td.Categorical(probs=probs).entropy()
    for k in range(4):
        y = F.one_hot(torch.full((5,), k), 4).float()
        expected = expected + probs[:, k] * inner.eval({"x": x, "y": y})
    torch.testing.assert_close(value, expected)
    value.sum().backward()
    assert q_y.fc.weight.grad.abs().sum() > 0  # the weights of the classes carry gradient
    with pytest.raises(LossError, match="one value per sample"):
        Expectation(q_y, inner.mean()).eval({"x": x})


def test_expectation_by_sampling_and_log_prob_entropy(vae_parts):
    q, p, _, x = vae_parts
    reconstruction = Expectation(q, -LogProb(p))
    generator = torch.Generator().manual_seed(5)
    torch.testing.assert_close(reconstruction.eval({"x": x}, generator=generator),
                               StochasticReconstructionLoss(q, p).eval({"x": x},
                                                                       generator=torch.Generator().manual_seed(5)))
    assert reconstruction.input_var == ["x"]
    params = q.get_params({"x": x})
    torch.testing.assert_close(Entropy(q).eval({"x": x}),
                               td.Independent(td.Normal(params["loc"], params["scale"]), 1).entropy())


def test_arithmetic_and_text(vae_parts):
    q, p, prior, x = vae_parts
    kl, rec = KullbackLeibler(q, prior), StochasticReconstructionLoss(q, p)
    assert (kl + rec).mean().loss_text == "mean(KL[q(z|x)||p_{prior}(z)] - E_{q(z|x)}[log p(x|z)])"
    assert (2 * kl - rec / 3).loss_text == "2 * KL[q(z|x)||p_{prior}(z)] - (-E_{q(z|x)}[log p(x|z)] / 3)"
    assert (-(kl + rec)).loss_text == "-(KL[q(z|x)||p_{prior}(z)] - E_{q(z|x)}[log p(x|z)])"
    assert (kl - (rec - 1)).abs().sum().loss_text.startswith("sum(|KL[q(z|x)||p_{prior}(z)] - (")
    assert repr(LogProb(p)) == "log p(x|z)" and Entropy(q).loss_text == "H[q(z|x)]"
    generator = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    k = kl.eval({"x": x})
    r = rec.eval({"x": x}, generator=generator())
    torch.testing.assert_close((2 * kl - rec / 3 + 1).eval({"x": x}, generator=generator()), 2 * k - r / 3 + 1)
    torch.testing.assert_close((kl * rec).sum().eval({"x": x}, generator=generator()), (k * r).sum())
    torch.testing.assert_close((1 - kl).abs().mean().eval({"x": x}), (1 - k).abs().mean())
    value, x_dict = kl.eval({"x": x}, return_dict=True)
    assert x_dict == {"x": x}
    with pytest.raises(LossError, match="combine with losses and numbers"):
        kl + "a"


def test_loss_construction_errors(vae_parts):
    q, p, prior, _ = vae_parts
    other = dgm.Normal(loc=0.0, scale=1.0, var=["w"], name="r")
    with pytest.raises(LossError, match=r"KullbackLeibler\(q\(z\|x\), r\(w\)\).*same variables"):
        KullbackLeibler(q, other)
    unrelated = Generator().replace_var(z="w")
    with pytest.raises(LossError, match=r"p\(x\|w\).*not conditioned on any variable.*\['z'\]"):
        StochasticReconstructionLoss(q, unrelated)
    with pytest.raises(LossError, match="only a Categorical can be enumerated"):
        Expectation(q, LogProb(p), method="enumerate")
    with pytest.raises(LossError, match="must be a fastgen.dgm distribution"):
        LogProb(nn.Linear(2, 2))


def test_terms_share_one_context(vae_parts):
    q, p, prior, x = vae_parts
    terms = Terms(kl=KullbackLeibler(q, prior), reconstruction=StochasticReconstructionLoss(q, p))
    assert terms.input_var == ["x"]
    q.calls = 0
    values = terms.eval({"x": x})
    assert q.calls == 1 and set(values) == {"kl", "reconstruction"} and values["kl"].shape == (5,)


def test_logvar_encoder_and_logits_decoder(vae_parts):
    _, _, prior, x = vae_parts
    torch.manual_seed(1)
    q, p = Inference(logvar=True), Generator(probs=False)
    loss = (KullbackLeibler(q, prior) + StochasticReconstructionLoss(q, p)).mean()
    value = loss.eval({"x": x}, generator=torch.Generator().manual_seed(0))
    out = q(x)
    z, kl = fastgen.reparameterize_kl(out["loc"], out["logvar"], generator=torch.Generator().manual_seed(0))
    expected = (kl - fastgen.bernoulli_log_likelihood(p(z)["logits"], x)).mean()
    torch.testing.assert_close(value, expected)
