"""GAN family: training, loss formulas, WGAN clipping, WGAN-GP penalty, conditioning, shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastgen.models import (
    DCGAN,
    GAN,
    GAN_LOSSES,
    WGAN,
    WGANGP,
    ConditionalGAN,
    dcgan_discriminator,
    dcgan_generator,
    mlp_discriminator,
    mlp_generator,
)

SHAPE = (1, 8, 8)

FACTORIES = {
    "gan": lambda: GAN.mlp(SHAPE),
    "gan-hinge": lambda: GAN.mlp(SHAPE, loss="hinge"),
    "gan-lsgan": lambda: GAN.mlp(SHAPE, loss="lsgan"),
    "dcgan": lambda: DCGAN(SHAPE, channels=16),
    "cgan": lambda: ConditionalGAN.mlp(SHAPE, 10),
    "wgan": lambda: WGAN.mlp(SHAPE),
    "wgan-gp": lambda: WGANGP.mlp(SHAPE),
}


def _sample_mean_distance(model, data_mean: torch.Tensor) -> float:
    """Distance between the mean generated image and the mean training image."""
    model.eval()
    labels = [torch.arange(10).repeat(50)] if model.num_classes else []
    samples = model.sample(500, *labels, generator=torch.Generator().manual_seed(1))
    model.train()
    return float((samples.mean(0) - data_mean).norm())


@pytest.mark.parametrize("name", list(FACTORIES))
def test_every_gan_trains_and_its_discriminator_loss_falls(name, digit_batches, digit_splits):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    data_mean = digit_splits[0].tensors[0].mean(0)
    distance_before = _sample_mean_distance(model, data_mean)
    metrics = [model.step(batch) for batch in digit_batches(60)]
    assert all(math.isfinite(v) for m in metrics for v in m.values())
    losses = [m["discriminator_loss"] for m in metrics]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.02, f"{name}: discriminator loss {first:.4f} -> {last:.4f}"
    generator_updates = sum("generator_loss" in m for m in metrics)
    assert generator_updates == 60 // model.n_critic
    if model.n_critic == 1 or name == "wgan":
        # The generator moved towards the data (WGAN-GP made only 12 small updates: not checked).
        distance_after = _sample_mean_distance(model, data_mean)
        assert distance_after < distance_before - 0.1, f"{name}: {distance_before:.3f} -> {distance_after:.3f}"


def test_loss_formulas():
    real = torch.tensor([2.0, -1.0, 0.5])
    fake = torch.tensor([-0.5, 1.5, 0.0])
    bce = F.binary_cross_entropy_with_logits
    expected = {
        "non-saturating": (bce(real, torch.ones(3)) + bce(fake, torch.zeros(3)), bce(fake, torch.ones(3))),
        "minimax": (bce(real, torch.ones(3)) + bce(fake, torch.zeros(3)), -bce(fake, torch.zeros(3))),
        "hinge": (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean(), -fake.mean()),
        "lsgan": (0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake ** 2).mean(), 0.5 * ((fake - 1) ** 2).mean()),
        "wasserstein": (fake.mean() - real.mean(), -fake.mean()),
    }
    assert set(GAN_LOSSES) == set(expected)
    for name, (discriminator, generator) in expected.items():
        torch.testing.assert_close(GAN_LOSSES[name].discriminator(real, fake), discriminator, msg=name)
        torch.testing.assert_close(GAN_LOSSES[name].generator(fake), generator, msg=name)


def test_wgan_defaults_follow_the_paper():
    model = WGAN.mlp(SHAPE)
    optimizers = model.optimizers()
    assert model.n_critic == 5 and model.clip_value == 0.01 and model.adversarial_loss.name == "wasserstein"
    for optimizer in optimizers.values():
        assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.param_groups[0]["lr"] == 5e-5


def test_wgan_critic_stays_inside_the_clip_range_after_every_step(digit_batches):
    torch.manual_seed(0)
    model = WGAN.conv(SHAPE, channels=8)  # conv critic: batch-norm affine parameters are clipped too
    assert max(float(p.detach().abs().max()) for p in model.discriminator.parameters()) > 0.01  # init exceeds
    generator_before = [p.detach().clone() for p in model.generator.parameters()]
    for index, batch in enumerate(digit_batches(10)):
        metrics = model.step(batch)
        largest = max(float(p.detach().abs().max()) for p in model.discriminator.parameters())
        assert largest <= 0.01, f"step {index + 1}: critic parameter of size {largest}"
        generator_moved = any(not torch.equal(a, b) for a, b in zip(generator_before, model.generator.parameters()))
        # n_critic = 5: the generator updates on steps 5 and 10 only
        assert generator_moved == (index + 1 >= 5), f"step {index + 1}"
        assert ("generator_loss" in metrics) == ((index + 1) % 5 == 0)
    # the generator is never clipped
    assert max(float(p.detach().abs().max()) for p in model.generator.parameters()) > 0.01


def test_wgan_gp_defaults_follow_the_paper():
    model = WGANGP.mlp(SHAPE)
    assert model.n_critic == 5 and model.gradient_penalty_weight == 10.0 and model.clip_value is None
    for optimizer in model.optimizers().values():
        assert isinstance(optimizer, torch.optim.Adam)
        assert optimizer.param_groups[0]["lr"] == 1e-4 and optimizer.param_groups[0]["betas"] == (0.0, 0.9)
    # the conv critic uses per-sample (layer) normalization, never batch norm
    conv = WGANGP.conv(SHAPE, channels=8)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in conv.discriminator.modules())


def _hand_penalty(critic, real, fake, mix):
    """(||grad D(x_i)|| - 1)^2 for each sample separately, then the mean."""
    terms = []
    for i in range(len(real)):
        point = (mix[i] * real[i] + (1 - mix[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (gradient,) = torch.autograd.grad(critic(point).sum(), point)
        terms.append((gradient.norm() - 1) ** 2)
    return torch.stack(terms).mean()


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_wgan_gp_penalty_equals_the_hand_computed_per_sample_penalty(architecture):
    torch.manual_seed(0)
    model = WGANGP.mlp(SHAPE) if architecture == "mlp" else WGANGP.conv(SHAPE, channels=8)
    real, fake = torch.rand(6, *SHAPE), torch.rand(6, *SHAPE)
    mix = torch.rand(6)
    penalty = model.gradient_penalty(real, fake, mix=mix)
    torch.testing.assert_close(penalty, _hand_penalty(model.discriminator, real, fake, mix), rtol=1e-5, atol=1e-6)
    # the penalty is differentiable in the critic's parameters (create_graph=True)
    gradients = torch.autograd.grad(penalty, list(model.discriminator.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in gradients)
    # discriminator_loss adds lambda times the penalty (same draw of the mix under the same seed)
    torch.manual_seed(3)
    total = model.discriminator_loss(real, fake)
    torch.manual_seed(3)
    drawn = model.gradient_penalty(real, fake)
    wasserstein = model.discriminator(fake).mean() - model.discriminator(real).mean()
    torch.testing.assert_close(total, wasserstein + 10.0 * drawn, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one weight per sample"):
        model.gradient_penalty(real, fake, mix=torch.rand(6, 1))


def test_conditional_gan_samples_the_requested_class_shapes():
    torch.manual_seed(0)
    model = ConditionalGAN.mlp(SHAPE, 10)
    assert model.sample(5, 7).shape == (5, *SHAPE)
    assert model.sample(4, torch.tensor([0, 3, 3, 9])).shape == (4, *SHAPE)
    assert model.sample(3, [1, 2, 3]).shape == (3, *SHAPE)
    # the label reaches the generator: same noise, different classes, different images
    z = torch.randn(1, model.latent_dim)
    assert not torch.allclose(model.generate(z, torch.tensor([1])), model.generate(z, torch.tensor([2])))
    x = torch.rand(1, *SHAPE)
    assert not torch.allclose(model.score(x, torch.tensor([1])), model.score(x, torch.tensor([2])))
    conv = ConditionalGAN.conv((1, 28, 28), 10, latent_dim=16, channels=8)
    assert conv.sample(6, 4).shape == (6, 1, 28, 28)
    with pytest.raises(ValueError, match="needs the class labels"):
        model.sample(3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got -1"):
        model.sample(2, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="need labels"):
        model.step(torch.rand(4, *SHAPE))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_dcgan_is_sized_from_the_image_shape(shape):
    torch.manual_seed(0)
    model = DCGAN(shape, latent_dim=16, channels=8)
    assert model.sample(3).shape == (3, *shape)
    assert model.discriminator(torch.rand(5, *shape)).shape == (5,)
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.generator.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())
    optimizer = model.optimizers()["generator"]
    assert optimizer.param_groups[0]["lr"] == 2e-4 and optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    metrics = model.step((torch.rand(8, *shape),))
    assert math.isfinite(metrics["discriminator_loss"]) and math.isfinite(metrics["generator_loss"])


def test_builders_and_arguments_are_checked():
    with pytest.raises(ValueError, match="loss must be one of"):
        GAN.mlp(SHAPE, loss="relativistic")
    with pytest.raises(ValueError, match="n_critic"):
        GAN.mlp(SHAPE, n_critic=0)
    with pytest.raises(ValueError, match="multiples of 4"):
        DCGAN((1, 30, 30))
    with pytest.raises(TypeError, match="convolutional"):
        DCGAN.mlp(SHAPE)
    with pytest.raises(ValueError, match="normalization"):
        dcgan_discriminator(SHAPE, normalization="instance")
    with pytest.raises(ValueError, match="unconditional"):
        GAN.mlp(SHAPE).sample(2, 1)


def test_custom_networks_and_optimizers():
    torch.manual_seed(0)
    generator, critic = dcgan_generator(8, SHAPE, channels=4), mlp_discriminator(SHAPE, 16)
    model = GAN(generator, critic, 8, loss="hinge",
                generator_optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
                discriminator_optimizer=torch.optim.SGD(critic.parameters(), lr=0.0))
    critic_before = [p.detach().clone() for p in critic.parameters()]
    model.step((torch.rand(8, *SHAPE),))
    assert isinstance(model.optimizers()["generator"], torch.optim.SGD)
    assert all(torch.equal(a, b) for a, b in zip(critic_before, critic.parameters()))  # lr 0
    assert mlp_generator(4, 8, SHAPE)(torch.randn(2, 3, 4)).shape == (2, 3, *SHAPE)


def test_non_finite_discriminator_loss_stops_before_the_update():
    torch.manual_seed(0)
    model = GAN.mlp(SHAPE)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match="non-finite discriminator_loss"):
        model.step((torch.full((4, *SHAPE), float("nan")),))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert int(model.discriminator_steps) == 0
