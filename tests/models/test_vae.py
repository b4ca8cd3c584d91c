"""VAE family: training, the ELBO against the eager textbook loss, IWAE bounds, conditioning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as td
from fastgen_checks import DispatchedOps

from fastgen.models import (
    IWAE,
    VAE,
    BetaVAE,
    ConditionalVAE,
    VAELoss,
    conv_decoder,
    conv_encoder,
    mlp_decoder,
    mlp_encoder,
)

SHAPE = (1, 8, 8)

FACTORIES = {
    "vae-mlp": lambda: VAE.mlp(SHAPE, latent_dim=8, hidden=(128,)),
    "vae-conv": lambda: VAE.conv(SHAPE, latent_dim=8, channels=16),
    "vae-gaussian": lambda: VAE.mlp(SHAPE, latent_dim=8, hidden=(128,), likelihood="gaussian"),
    "beta-vae": lambda: BetaVAE.mlp(SHAPE, latent_dim=8, hidden=(128,)),
    "iwae": lambda: IWAE.mlp(SHAPE, latent_dim=8, hidden=(128,), num_samples=5),
    "cvae": lambda: ConditionalVAE.mlp(SHAPE, 10, latent_dim=8, hidden=(128,)),
}


def _held_out_loss(model, batch) -> float:
    images, labels = batch
    with torch.no_grad():
        labels = labels if model.num_classes else None
        return float(model.loss(images, labels, generator=torch.Generator().manual_seed(0)).loss)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_every_vae_trains_and_its_loss_falls(name, digit_batches, digit_splits):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    held_out = tuple(digit_splits[1].tensors)
    before = _held_out_loss(model, held_out)
    metrics = [model.step(batch) for batch in digit_batches(60)]
    after = _held_out_loss(model, held_out)
    assert all(math.isfinite(value) for step in metrics for value in step.values())
    assert set(metrics[0]) == {"loss", "elbo", "kl", "reconstruction"}
    assert after < before - 2.0, f"{name}: held-out loss {before:.2f} -> {after:.2f}"


def test_loss_fields_are_consistent():
    torch.manual_seed(0)
    x = torch.rand(16, *SHAPE)
    vae, beta_vae = VAE.mlp(SHAPE, latent_dim=4), BetaVAE.mlp(SHAPE, latent_dim=4, beta=3.0)
    for model, beta in ((vae, 1.0), (beta_vae, 3.0)):
        out = model.loss(x)
        assert isinstance(out, VAELoss) and all(value.dim() == 0 for value in out)
        torch.testing.assert_close(out.elbo, -(out.reconstruction + out.kl))
        torch.testing.assert_close(out.loss, out.reconstruction + beta * out.kl)
        assert out.kl > 0 and out.reconstruction > 0


def _eager_elbo(encoder, decoder, images: torch.Tensor, draws: int = 20) -> float:
    """Textbook single-sample ELBO with torch.distributions, averaged over `draws` noise draws."""
    generator = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            mean, logvar = encoder(images)
            std = torch.exp(0.5 * logvar)
            z = mean + std * torch.randn(mean.shape, generator=generator)
            likelihood = td.Independent(td.Bernoulli(logits=decoder(z), validate_args=False), 3)
            kl = td.kl_divergence(td.Normal(mean, std), td.Normal(torch.zeros_like(mean), torch.ones_like(std)))
            total += float((likelihood.log_prob(images) - kl.sum(-1)).mean())
    return total / draws


def test_vae_reaches_the_eager_textbook_elbo(digit_batches, digit_splits):
    """Same networks, seed, data order and budget: the fused ELBO trains as well as the eager one."""
    batches = digit_batches(440)  # 20 epochs of 22 batches
    torch.manual_seed(0)
    model = VAE.mlp(SHAPE, latent_dim=8, hidden=(128,), lr=1e-3)
    torch.manual_seed(0)
    encoder, decoder = mlp_encoder(SHAPE, (128,), 8), mlp_decoder(8, (128,), SHAPE)
    for ours, theirs in zip(model.parameters(), list(encoder.parameters()) + list(decoder.parameters())):
        assert torch.equal(ours, theirs)  # identical initialization

    test_images = digit_splits[1].tensors[0]
    initial = _eager_elbo(encoder, decoder, test_images)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=1e-3)
    for images, _ in batches:
        model.step((images,))
        mean, logvar = encoder(images)
        std = torch.exp(0.5 * logvar)
        z = mean + std * torch.randn_like(std)
        reconstruction = td.Independent(td.Bernoulli(logits=decoder(z), validate_args=False), 3).log_prob(images)
        kl = td.kl_divergence(td.Normal(mean, std), td.Normal(torch.zeros_like(mean), torch.ones_like(std))).sum(-1)
        loss = -(reconstruction - kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    fused_elbo = _eager_elbo(model.encoder, model.decoder, test_images)
    eager_elbo = _eager_elbo(encoder, decoder, test_images)
    assert fused_elbo > initial + 8, f"training did not improve the ELBO: {initial:.2f} -> {fused_elbo:.2f}"
    print(f"held-out ELBO: initial {initial:.3f}, fused {fused_elbo:.3f}, eager {eager_elbo:.3f}")
    assert abs(fused_elbo - eager_elbo) < 1.0, f"fused {fused_elbo:.3f} vs eager {eager_elbo:.3f}"
    # the model's own ELBO estimate agrees with the textbook formula on the same networks
    with torch.no_grad():
        model_elbo = sum(float(model.loss(test_images, generator=torch.Generator().manual_seed(s)).elbo)
                         for s in range(20)) / 20
    assert abs(model_elbo - fused_elbo) < 0.3


@pytest.fixture(scope="module")
def trained_vae():
    from fastgen.data import digits

    torch.set_num_threads(1)
    images = digits()[0].tensors[0]
    torch.manual_seed(0)
    model = VAE.mlp(SHAPE, latent_dim=8, hidden=(128,))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images) - 63, 64):
            model.step((images[order[start:start + 64]],))
    return model


def test_iwae_bound_is_tighter_than_the_elbo(trained_vae, digit_splits):
    test_images = digit_splits[1].tensors[0]
    with torch.no_grad():
        elbo = sum(float(trained_vae.loss(test_images, generator=torch.Generator().manual_seed(s)).elbo)
                   for s in range(20)) / 20
        iwae = IWAE(trained_vae.encoder, trained_vae.decoder, 8, num_samples=50)
        bound = float(iwae.loss(test_images, generator=torch.Generator().manual_seed(0)).elbo)
        log_likelihood = float(trained_vae.log_likelihood(test_images, num_samples=1000,
                                                          generator=torch.Generator().manual_seed(1)).mean())
    # L_1 <= L_50 <= log p(x) (estimated with K = 1000); the gaps are several tenths of a nat here
    assert bound > elbo + 0.2, (elbo, bound)
    assert log_likelihood > bound - 0.05, (bound, log_likelihood)
    assert log_likelihood < 0  # a product of Bernoulli probabilities is at most 1


def test_log_likelihood_shape_and_argument_checks(trained_vae):
    x = torch.rand(5, *SHAPE)
    estimate = trained_vae.log_likelihood(x, num_samples=30, chunk_size=7)
    assert estimate.shape == (5,) and torch.isfinite(estimate).all()
    with pytest.raises(ValueError, match="num_samples"):
        trained_vae.log_likelihood(x, num_samples=0)


def test_iwae_with_one_sample_is_the_vae_elbo(trained_vae):
    x = torch.rand(32, *SHAPE)
    iwae = IWAE(trained_vae.encoder, trained_vae.decoder, 8, num_samples=1)
    with torch.no_grad():
        # Same generator state -> same draw z: identical reconstruction term and analytic KL.
        a = iwae.loss(x, generator=torch.Generator().manual_seed(5))
        b = trained_vae.loss(x, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(a.reconstruction, b.reconstruction)
        torch.testing.assert_close(a.kl, b.kl)
        # L_1 uses the one-draw KL estimate log q - log p; its mean over draws is the ELBO.
        draws = [(iwae.loss(x, generator=torch.Generator().manual_seed(s)).elbo,
                  trained_vae.loss(x, generator=torch.Generator().manual_seed(s)).elbo) for s in range(200)]
    iwae_mean = float(sum(d[0] for d in draws)) / len(draws)
    elbo_mean = float(sum(d[1] for d in draws)) / len(draws)
    assert abs(iwae_mean - elbo_mean) < 0.15, (iwae_mean, elbo_mean)


def test_sample_and_reconstruct(trained_vae, digit_splits):
    samples = trained_vae.sample(12)
    assert samples.shape == (12, *SHAPE) and samples.min() >= 0 and samples.max() <= 1
    x = digit_splits[1].tensors[0][:10]
    reconstruction = trained_vae.reconstruct(x)
    assert reconstruction.shape == x.shape
    # a trained VAE reconstructs much better than the mean image does
    error = (reconstruction - x).square().mean()
    baseline = (x.mean(0, keepdim=True) - x).square().mean()
    assert error < 0.85 * baseline, (float(error), float(baseline))
    with pytest.raises(ValueError, match="unconditional"):
        trained_vae.sample(3, 1)
    with pytest.raises(ValueError, match="unconditional"):
        trained_vae.loss(x, torch.zeros(10, dtype=torch.long))


def test_conditional_vae_samples_the_requested_classes(digit_batches, digit_splits):
    torch.manual_seed(0)
    model = ConditionalVAE.mlp(SHAPE, 10, latent_dim=8, hidden=(128,))
    for batch in digit_batches(440):
        model.step(batch)
    images, labels = digit_splits[0].tensors
    class_means = torch.stack([images[labels == c].mean(0) for c in range(10)]).flatten(1)

    assert model.sample(7, 3).shape == (7, *SHAPE)
    requested = torch.arange(10).repeat(20)
    samples = model.sample(len(requested), requested, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (200, *SHAPE)
    nearest = torch.cdist(samples.flatten(1), class_means).argmin(1)
    accuracy = float((nearest == requested).float().mean())
    assert accuracy > 0.7, f"samples match the requested class only {accuracy:.0%} of the time"


def test_conditional_vae_label_errors():
    model = ConditionalVAE.mlp(SHAPE, 10, latent_dim=4)
    x = torch.rand(4, *SHAPE)
    with pytest.raises(ValueError, match="labels"):
        model.sample(3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got 12"):
        model.sample(2, torch.tensor([1, 12]))
    with pytest.raises(ValueError, match="3 entries"):
        model.sample(3, [1, 2])
    with pytest.raises(ValueError, match="needs the class labels"):
        model.loss(x)
    with pytest.raises(ValueError, match="need labels"):
        model.step(x)
    out = model.loss(x, torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(out.loss)
    ll = model.log_likelihood(x, torch.tensor([0, 1, 2, 3]), num_samples=10)
    assert ll.shape == (4,)


def test_conv_builders_fit_8x8_and_28x28():
    for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32)):
        encoder, decoder = conv_encoder(shape, 6, channels=8), conv_decoder(6, shape, channels=8)
        mean, logvar = encoder(torch.rand(2, *shape))
        assert mean.shape == logvar.shape == (2, 6)
        assert decoder(torch.randn(3, 2, 6)).shape == (3, 2, *shape)  # K importance samples
    with pytest.raises(ValueError, match="multiples of 4"):
        conv_encoder((1, 10, 10), 4)


def test_gaussian_likelihood_learns_the_observation_noise(digit_batches):
    torch.manual_seed(0)
    model = VAE.mlp(SHAPE, latent_dim=8, hidden=(128,), likelihood="gaussian")
    for batch in digit_batches(100):
        model.step(batch)
    # pixel residuals are far below unit variance, so the learned log-variance goes down
    # (Adam moves it about lr = 1e-3 per step)
    assert float(model.observation_logvar.detach()) < -0.05
    fixed = VAE.mlp(SHAPE, latent_dim=4, likelihood="gaussian", observation_logvar=-2.0)
    assert "observation_logvar" in dict(fixed.named_buffers())


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="likelihood"):
        VAE.mlp(SHAPE, likelihood="poisson")
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(mlp_encoder(SHAPE, 8, 4), mlp_decoder(4, 8, SHAPE), 0)
    with pytest.raises(ValueError, match="num_samples"):
        IWAE.mlp(SHAPE, num_samples=0)
    with pytest.raises(TypeError, match="floating-point"):
        VAE.mlp(SHAPE).loss(torch.zeros(2, *SHAPE, dtype=torch.long))


def test_custom_optimizer_factory_is_used(digit_batches):
    torch.manual_seed(0)
    model = VAE.mlp(SHAPE, latent_dim=4, optimizer=lambda params: torch.optim.SGD(params, lr=0.0))
    before = [p.detach().clone() for p in model.parameters()]
    model.step(digit_batches(1)[0])
    assert isinstance(model.optimizers()["model"], torch.optim.SGD)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # lr 0: nothing moved


def test_autocast_runs_the_networks_in_bfloat16(digit_batches):
    torch.manual_seed(0)
    model = VAE.mlp(SHAPE, latent_dim=4)
    seen = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    model.set_autocast("cpu", torch.bfloat16)
    metrics = model.step(digit_batches(1)[0])
    assert seen == [torch.bfloat16]
    assert all(math.isfinite(v) for v in metrics.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_non_finite_loss_stops_before_the_update():
    torch.manual_seed(0)
    model = VAE.mlp(SHAPE, latent_dim=4)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        model.step(torch.full((4, *SHAPE), float("nan")))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# -- the objective is evaluated by fastgen.dgm ----------------------------------------------------

def _hand_written_loss(model, x, y, generator):
    """The single-sample ELBO written with fastgen's ops (what VAE.loss computed before fastgen.dgm)."""
    import fastgen

    condition = model._condition(y, x.shape[:1], x.device)
    mean, logvar = model._call("encoder", x, condition)
    z, kl = fastgen.reparameterize_kl(mean.float(), logvar.float(), generator=generator)
    output = model._call("decoder", z, condition)
    if model.likelihood == "bernoulli":
        ll = fastgen.bernoulli_log_likelihood(output.float(), x, event_dims=x.dim() - 1)
    else:
        logvar_x = model.observation_logvar.expand_as(output)
        ll = fastgen.gaussian_log_likelihood(x, output, logvar_x, event_dims=x.dim() - 1)
    return kl.mean(), -ll.mean()


@pytest.mark.parametrize("name", ["vae-mlp", "vae-conv", "vae-gaussian", "beta-vae", "cvae"])
def test_loss_is_the_fastgen_dgm_objective(name):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    x, y = torch.rand(6, *SHAPE), torch.arange(6) % 10
    labels = y if model.num_classes else None
    parts = model.distributions()
    assert parts.q.prob_text == ("q(z|x,c)" if model.num_classes else "q(z|x)")
    assert list(parts.q.parameters()) == [] and "q." not in "".join(model.state_dict())
    with DispatchedOps() as ops:
        out = model.loss(x, labels, generator=torch.Generator().manual_seed(4))
    assert ops.names.count("_reparameterize_kl") == 1 and "_gaussian_kl" not in ops.names
    kl, reconstruction = _hand_written_loss(model, x, labels, torch.Generator().manual_seed(4))
    torch.testing.assert_close(out.kl, kl)
    torch.testing.assert_close(out.reconstruction, reconstruction)
    torch.testing.assert_close(out.loss, reconstruction + model.beta * kl)
