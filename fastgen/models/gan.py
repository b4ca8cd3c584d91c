r"""Generative adversarial networks over user-supplied generator and discriminator networks.

The generator :math:`G` maps :math:`z \sim \mathcal N(0, I)` (plus a one-hot label for
conditional models) to a sample; the discriminator / critic :math:`D` maps a sample to a
real score :math:`d` (a logit for the logistic losses). Losses, written for
:math:`d_r = D(x)` on data and :math:`d_f = D(G(z))` on samples, each averaged over the batch:

================  =============================================================  ===============================
``loss=``         discriminator                                                  generator
================  =============================================================  ===============================
non-saturating    :math:`-\log\sigma(d_r) - \log(1-\sigma(d_f))`                 :math:`-\log\sigma(d_f)`
minimax           same                                                           :math:`\log(1-\sigma(d_f))`
hinge             :math:`\max(0, 1-d_r) + \max(0, 1+d_f)`                        :math:`-d_f`
lsgan             :math:`\tfrac12(d_r-1)^2 + \tfrac12 d_f^2`                     :math:`\tfrac12(d_f-1)^2`
wasserstein       :math:`d_f - d_r`                                              :math:`-d_f`
================  =============================================================  ===============================

The logistic terms are Bernoulli log-likelihoods of the logits (target 1 for data, 0 for
samples) and go through ``fastgen.bernoulli_log_likelihood``.

``step(batch)`` performs one discriminator (critic) update on the batch and, every
``n_critic``-th call, one generator update: the data loader supplies a fresh real batch to
every critic update, as in Arjovsky et al. (2017) and Gulrajani et al. (2017).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

import fastgen.ops as _ops

from .base import GenerativeModel, OptimizerFactory, one_hot_labels
from .networks import dcgan_discriminator, dcgan_generator, mlp_discriminator, mlp_generator

__all__ = ["GAN_LOSSES", "GAN", "DCGAN", "ConditionalGAN", "WGAN", "WGANGP"]


def _negative_log_sigmoid_mean(scores: Tensor, target: float) -> Tensor:
    r"""Mean of :math:`-[t\,d - \operatorname{softplus}(d)]`: logistic loss of logits ``d`` for label ``t``."""
    targets = torch.full_like(scores, target)
    return -_ops.bernoulli_log_likelihood(scores, targets, event_dims=0, reduction="mean")


class _AdversarialLoss:
    """A named pair of discriminator and generator losses over scores."""

    def __init__(self, name: str, discriminator: Callable[[Tensor, Tensor], Tensor],
                 generator: Callable[[Tensor], Tensor]) -> None:
        self.name = name
        self.discriminator = discriminator
        self.generator = generator

    def __repr__(self) -> str:
        return f"_AdversarialLoss({self.name!r})"


def _logistic_discriminator(real: Tensor, fake: Tensor) -> Tensor:
    return _negative_log_sigmoid_mean(real, 1.0) + _negative_log_sigmoid_mean(fake, 0.0)


GAN_LOSSES: dict[str, _AdversarialLoss] = {
    loss.name: loss for loss in (
        _AdversarialLoss("non-saturating", _logistic_discriminator,
                         lambda fake: _negative_log_sigmoid_mean(fake, 1.0)),
        _AdversarialLoss("minimax", _logistic_discriminator,
                         lambda fake: -_negative_log_sigmoid_mean(fake, 0.0)),
        _AdversarialLoss("hinge",
                         lambda real, fake: torch.relu(1 - real).mean() + torch.relu(1 + fake).mean(),
                         lambda fake: -fake.mean()),
        _AdversarialLoss("lsgan",
                         lambda real, fake: 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean(),
                         lambda fake: 0.5 * (fake - 1).square().mean()),
        _AdversarialLoss("wasserstein",
                         lambda real, fake: fake.mean() - real.mean(),
                         lambda fake: -fake.mean()),
    )
}


class GAN(GenerativeModel):
    """GAN (Goodfellow et al., 2014) with a selectable adversarial loss.

    Args:
        generator: ``generator(z) -> x`` for ``z`` of shape ``(B, latent_dim)``.
        discriminator: ``discriminator(x) -> (B,)`` scores.
        latent_dim: size of ``z``.
        loss: one of :data:`GAN_LOSSES` (default ``"non-saturating"``).
        n_critic: discriminator updates per generator update.
        clip_value: if set, every discriminator parameter is clamped to
            ``[-clip_value, clip_value]`` after each discriminator update (``fastgen.clip_weights_``).
        gradient_penalty_weight: weight :math:`\\lambda` of the WGAN-GP penalty (0 = none).
        generator_optimizer, discriminator_optimizer: optimizer, or callable
            ``params -> Optimizer``; default Adam(``lr``, ``betas``).
    """

    network_names = ("generator", "discriminator")

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int, *,
                 loss: str = "non-saturating", n_critic: int = 1, clip_value: float | None = None,
                 gradient_penalty_weight: float = 0.0,
                 generator_optimizer: OptimizerFactory | torch.optim.Optimizer | None = None,
                 discriminator_optimizer: OptimizerFactory | torch.optim.Optimizer | None = None,
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999)) -> None:
        super().__init__()
        if loss not in GAN_LOSSES:
            raise ValueError(f"loss must be one of {sorted(GAN_LOSSES)}, got {loss!r}")
        if not (isinstance(latent_dim, int) and latent_dim > 0):
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
        if not (isinstance(n_critic, int) and n_critic > 0):
            raise ValueError(f"n_critic must be a positive int, got {n_critic!r}")
        if clip_value is not None and not clip_value > 0:
            raise ValueError(f"clip_value must be positive (or None), got {clip_value!r}")
        if gradient_penalty_weight < 0:
            raise ValueError(f"gradient_penalty_weight must be >= 0, got {gradient_penalty_weight!r}")
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.adversarial_loss = GAN_LOSSES[loss]
        self.n_critic = n_critic
        self.clip_value = clip_value
        self.gradient_penalty_weight = float(gradient_penalty_weight)
        self.lr = lr
        self.betas = tuple(betas)
        self._optimizer_specs = {"generator": generator_optimizer, "discriminator": discriminator_optimizer}
        # Counts discriminator updates; a buffer so checkpoints carry where in the
        # n_critic cycle training stopped (exact resume).
        self.register_buffer("discriminator_steps", torch.zeros((), dtype=torch.long))

    # -- builders ---------------------------------------------------------------------------
    @classmethod
    def mlp(cls, data_shape: int | Sequence[int], latent_dim: int = 32, hidden: int | Sequence[int] = (256, 256),
            **kwargs) -> "GAN":
        """The model over an MLP generator (sigmoid output) and MLP discriminator."""
        num_classes = kwargs.get("num_classes", 0)
        return cls(mlp_generator(latent_dim, hidden, data_shape, num_classes=num_classes),
                   mlp_discriminator(data_shape, tuple(reversed(_widths(hidden))), num_classes=num_classes),
                   latent_dim, **kwargs)

    @classmethod
    def conv(cls, image_shape: Sequence[int], latent_dim: int = 100, channels: int = 32,
             normalization: str = "batch", **kwargs) -> "GAN":
        """The model over the DCGAN generator and discriminator sized from ``image_shape``."""
        num_classes = kwargs.get("num_classes", 0)
        return cls(dcgan_generator(latent_dim, image_shape, channels=channels, num_classes=num_classes),
                   dcgan_discriminator(image_shape, channels=channels, num_classes=num_classes,
                                       normalization=normalization),
                   latent_dim, **kwargs)

    def _default_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=self.lr, betas=self.betas)

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            name: self._make_optimizer(self._optimizer_specs[name],
                                       [p for p in getattr(self, name).parameters() if p.requires_grad],
                                       self._default_optimizer, f"{name}_optimizer")
            for name in ("generator", "discriminator")
        }

    # -- conditioning hooks (ConditionalGAN overrides) --------------------------------------
    def _condition(self, labels, count: int) -> Tensor | None:
        if labels is not None:
            raise ValueError(f"{type(self).__name__} is unconditional; labels (y) must not be given")
        return None

    def _call(self, name: str, inputs: Tensor, condition: Tensor | None) -> Tensor:
        network = self.network(name)
        return network(inputs) if condition is None else network(inputs, condition)

    # -- building blocks --------------------------------------------------------------------
    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    def generate(self, z: Tensor, y=None) -> Tensor:
        """``G(z[, y])``."""
        return self._call("generator", z, self._condition(y, z.shape[0]))

    def score(self, x: Tensor, y=None) -> Tensor:
        """Discriminator scores ``D(x[, y])`` as float32, shape ``(B,)``."""
        return self._call("discriminator", x, self._condition(y, x.shape[0])).float()

    def gradient_penalty(self, real: Tensor, fake: Tensor, y=None, *, mix: Tensor | None = None,
                         generator: torch.Generator | None = None) -> Tensor:
        r"""WGAN-GP penalty (Gulrajani et al., 2017), without the weight :math:`\lambda`:

        .. math:: \frac1B \sum_{i=1}^B \left(\left\lVert \nabla_{\hat x} D(\hat x_i)\right\rVert_2 - 1\right)^2,
                  \qquad \hat x_i = \epsilon_i x_i + (1-\epsilon_i)\,\tilde x_i,\quad \epsilon_i \sim U[0, 1].

        One :math:`\epsilon_i` per sample and one gradient norm per sample over all its
        features. Without ``mix`` the weights are drawn inside ``fastgen.gradient_penalty``'s
        interpolation kernel from fastgen's noise stream (``generator`` or the default one);
        ``mix`` (shape ``(B,)``) gives them explicitly. Either way the per-sample penalty is
        the fused ``fastgen.grad_norm_penalty``, and the graph is kept (``create_graph=True``)
        so the penalty trains the critic.
        """
        batch = real.shape[0]
        fake = fake.detach().float()
        if mix is None:
            return _ops.gradient_penalty(lambda x: self.score(x, y), real.float(), fake, weight=1.0,
                                         generator=generator)
        if mix.shape != (batch,):
            raise ValueError(f"mix must have shape ({batch},), one weight per sample; got {tuple(mix.shape)}")
        weights = mix.to(torch.float32).reshape(batch, *([1] * (real.dim() - 1)))
        interpolated = (weights * real.float() + (1 - weights) * fake).requires_grad_(True)
        scores = self.score(interpolated, y)
        (gradients,) = torch.autograd.grad(scores.sum(), interpolated, create_graph=True)
        return _ops.grad_norm_penalty(gradients).mean()

    def discriminator_loss(self, real: Tensor, fake: Tensor, y=None) -> Tensor:
        """Discriminator / critic loss on a real and a generated batch (``fake`` is detached),
        plus ``gradient_penalty_weight`` times :meth:`gradient_penalty`."""
        loss = self.adversarial_loss.discriminator(self.score(real, y), self.score(fake.detach(), y))
        if self.gradient_penalty_weight:
            loss = loss + self.gradient_penalty_weight * self.gradient_penalty(real, fake, y)
        return loss

    def generator_loss(self, fake: Tensor, y=None) -> Tensor:
        """Generator loss on generated samples (gradients flow into the generator)."""
        return self.adversarial_loss.generator(self.score(fake, y))

    # -- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, y=None, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``G(z)``, :math:`z \\sim \\mathcal N(0, I)`."""
        if not (isinstance(n, int) and n >= 0):
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        labels = self._labels_for_sampling(y, n)
        return self.generate(self.sample_latent(n, generator=generator), labels).float()

    def _labels_for_sampling(self, y, n: int):
        if y is not None:
            raise ValueError(f"{type(self).__name__} is unconditional; sample(n) takes no labels")
        return None

    # -- trainer interface ------------------------------------------------------------------
    def _training_inputs(self, batch) -> tuple[Tensor, Tensor | None]:
        real, labels = self._unpack(batch)
        return real, (labels if self.num_classes else None)

    def step(self, batch) -> dict[str, float]:
        """One discriminator update, then a generator update on every ``n_critic``-th call.

        Returns ``discriminator_loss`` (and ``gradient_penalty``, ``wasserstein_estimate``
        where they apply) every call, ``generator_loss`` on calls that update the generator.
        """
        real, labels = self._training_inputs(batch)
        optimizers = self.optimizers()
        batch_size = real.shape[0]
        metrics: dict[str, float] = {}

        with self._autocast():
            # No graph through G here: the critic update must not touch G, and under DDP a
            # forward without grad keeps G's reducer from waiting for gradients.
            with torch.no_grad():
                fake = self.generate(self.sample_latent(batch_size), labels)
            real_scores = self.score(real, labels)
            fake_scores = self.score(fake, labels)
            discriminator_loss = self.adversarial_loss.discriminator(real_scores, fake_scores)
            if self.gradient_penalty_weight:
                penalty = self.gradient_penalty(real, fake, labels)
                metrics["gradient_penalty"] = float(penalty.detach())
                discriminator_loss = discriminator_loss + self.gradient_penalty_weight * penalty
        self._require_finite("discriminator_loss", discriminator_loss)
        optimizers["discriminator"].zero_grad(set_to_none=True)
        discriminator_loss.backward()
        self._average_loose_gradients()
        optimizers["discriminator"].step()
        if self.clip_value is not None:
            _ops.clip_weights_(self.discriminator, self.clip_value)
        self.discriminator_steps += 1
        metrics["discriminator_loss"] = float(discriminator_loss.detach())
        if self.adversarial_loss.name == "wasserstein":
            metrics["wasserstein_estimate"] = float(real_scores.detach().mean() - fake_scores.detach().mean())

        if int(self.discriminator_steps) % self.n_critic == 0:
            with self._autocast():
                generator_loss = self.generator_loss(self.generate(self.sample_latent(batch_size), labels), labels)
            self._require_finite("generator_loss", generator_loss)
            optimizers["generator"].zero_grad(set_to_none=True)
            generator_loss.backward()
            self._average_loose_gradients()
            optimizers["generator"].step()
            metrics["generator_loss"] = float(generator_loss.detach())
        return metrics

    @torch.no_grad()
    def evaluate(self, batch, generator: torch.Generator | None = None) -> dict[str, float]:
        """Adversarial losses on a held-out real batch and as many samples (no penalty)."""
        real, labels = self._training_inputs(batch)
        with self._autocast():
            fake = self.generate(self.sample_latent(real.shape[0], generator=generator), labels)
            real_scores, fake_scores = self.score(real, labels), self.score(fake, labels)
        metrics = {
            "discriminator_loss": float(self.adversarial_loss.discriminator(real_scores, fake_scores)),
            "generator_loss": float(self.adversarial_loss.generator(fake_scores)),
        }
        if self.adversarial_loss.name == "wasserstein":
            metrics["wasserstein_estimate"] = float(real_scores.mean() - fake_scores.mean())
        return metrics


def _widths(hidden: int | Sequence[int]) -> tuple[int, ...]:
    return (hidden,) if isinstance(hidden, int) else tuple(hidden)


class DCGAN(GAN):
    """DCGAN (Radford et al., 2016): transposed-conv generator with batch norm, strided-conv
    discriminator with batch norm and LeakyReLU(0.2), Adam(2e-4, betas=(0.5, 0.999)).

    The networks are sized from ``image_shape`` ``(C, H, W)``, H and W multiples of 4
    (8x8 digits: 2x2 -> 4x4 -> 8x8; 28x28 MNIST: 7x7 -> 14x14 -> 28x28).
    """

    def __init__(self, image_shape: Sequence[int], latent_dim: int = 100, *, channels: int = 32,
                 **kwargs) -> None:
        super().__init__(dcgan_generator(latent_dim, image_shape, channels=channels),
                         dcgan_discriminator(image_shape, channels=channels),
                         latent_dim, **kwargs)
        self.image_shape = tuple(image_shape)

    @classmethod
    def mlp(cls, *args, **kwargs):
        raise TypeError("DCGAN is convolutional by definition; use DCGAN(image_shape) or GAN.mlp(...)")

    @classmethod
    def conv(cls, image_shape: Sequence[int], latent_dim: int = 100, channels: int = 32, **kwargs) -> "DCGAN":
        return cls(image_shape, latent_dim, channels=channels, **kwargs)


class ConditionalGAN(GAN):
    """Conditional GAN (Mirza & Osindero, 2014): ``G(z, y)`` and ``D(x, y)`` with one-hot labels.

    ``step`` conditions both updates on the batch's labels (generated samples get the same
    labels as the real ones), so the class balance follows the data.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int, num_classes: int,
                 **kwargs) -> None:
        if not (isinstance(num_classes, int) and num_classes > 0):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        super().__init__(generator, discriminator, latent_dim, **kwargs)
        self.num_classes = num_classes

    @classmethod
    def mlp(cls, data_shape, num_classes: int, latent_dim: int = 32, hidden=(256, 256), **kwargs) -> "ConditionalGAN":
        return super().mlp(data_shape, latent_dim, hidden, num_classes=num_classes, **kwargs)

    @classmethod
    def conv(cls, image_shape, num_classes: int, latent_dim: int = 100, channels: int = 32,
             normalization: str = "batch", **kwargs) -> "ConditionalGAN":
        return super().conv(image_shape, latent_dim, channels, normalization, num_classes=num_classes, **kwargs)

    def _condition(self, labels, count: int) -> Tensor:
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs labels y (integer classes)")
        if isinstance(labels, Tensor) and labels.dim() == 2 and labels.is_floating_point():
            if labels.shape != (count, self.num_classes):
                raise ValueError(f"one-hot y must have shape ({count}, {self.num_classes}), got {tuple(labels.shape)}")
            return labels.to(self.device)
        return one_hot_labels(labels, self.num_classes, count=count, device=self.device)

    def _labels_for_sampling(self, y, n: int) -> Tensor:
        if y is None:
            raise ValueError("ConditionalGAN.sample(n, y) needs the class labels y (an int or n ints)")
        return one_hot_labels(y, self.num_classes, count=n, device=self.device)


class WGAN(GAN):
    """Wasserstein GAN (Arjovsky et al., 2017) with the paper's defaults: ``loss="wasserstein"``,
    ``n_critic=5``, critic weights clipped to ``[-0.01, 0.01]`` after every critic step
    (``fastgen.clip_weights_``), RMSprop with ``lr=5e-5`` for both networks."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int, *,
                 n_critic: int = 5, clip_value: float = 0.01, lr: float = 5e-5, **kwargs) -> None:
        kwargs.setdefault("loss", "wasserstein")
        super().__init__(generator, discriminator, latent_dim, n_critic=n_critic, clip_value=clip_value,
                         lr=lr, **kwargs)

    def _default_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(parameters, lr=self.lr)


class WGANGP(GAN):
    """WGAN with gradient penalty (Gulrajani et al., 2017): ``loss="wasserstein"``, ``n_critic=5``,
    penalty weight :math:`\\lambda = 10` on per-sample interpolates, Adam(1e-4, betas=(0, 0.9)).

    The critic must not use batch norm (the penalty is per sample); :meth:`conv` builds it
    with layer normalization.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int, *,
                 n_critic: int = 5, gradient_penalty_weight: float = 10.0, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.0, 0.9), **kwargs) -> None:
        kwargs.setdefault("loss", "wasserstein")
        super().__init__(generator, discriminator, latent_dim, n_critic=n_critic,
                         gradient_penalty_weight=gradient_penalty_weight, lr=lr, betas=betas, **kwargs)

    @classmethod
    def conv(cls, image_shape: Sequence[int], latent_dim: int = 100, channels: int = 32,
             normalization: str = "layer", **kwargs) -> "WGANGP":
        return super().conv(image_shape, latent_dim, channels, normalization, **kwargs)
