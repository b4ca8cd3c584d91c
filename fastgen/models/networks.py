"""Default networks for the model classes: MLPs for any data, convolutional nets for images.

The model classes accept any ``nn.Module`` with the call signatures below; these builders
are the ready-made choices.

* encoder: ``encoder(x[, condition]) -> (mean, logvar)``, both ``(B, latent)``.
* decoder / generator: ``decoder(z[, condition]) -> output`` with ``z`` of shape
  ``(*lead, latent)`` and ``output`` of shape ``(*lead, *data_shape)``; ``lead`` is
  ``(B,)`` or ``(K, B)`` when ``K`` importance samples are decoded at once.
* discriminator / critic: ``discriminator(x[, condition]) -> (B,)`` real-valued scores
  (logits for the logistic losses).

``condition`` is a one-hot label tensor ``(*lead, num_classes)``; a network built with
``num_classes=0`` takes no condition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "MLPEncoder", "MLPDecoder", "MLPDiscriminator", "ConvEncoder", "ConvDecoder", "ConvDiscriminator",
    "mlp_encoder", "mlp_decoder", "mlp_generator", "mlp_discriminator",
    "conv_encoder", "conv_decoder", "dcgan_generator", "dcgan_discriminator",
]


def _as_shape(shape: int | Sequence[int], name: str) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{name} must be a positive int or a sequence of positive ints, got {shape!r}")
    return shape


def _as_widths(hidden: int | Sequence[int]) -> tuple[int, ...]:
    return _as_shape(hidden, "hidden")


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = _as_shape(image_shape, "image_shape")
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (channels, height, width), got {shape!r}")
    channels, height, width = shape
    # Two stride-2 stages: 8x8 -> 2x2, 28x28 -> 7x7, 32x32 -> 8x8.
    if height % 4 or width % 4:
        raise ValueError(f"image_shape height and width must be multiples of 4 for the conv nets, got {shape!r}")
    return channels, height, width


def _mlp(widths: Sequence[int], activation: type[nn.Module], **activation_kwargs) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(fan_in, fan_out), activation(**activation_kwargs)]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers)


def _append_condition(features: Tensor, condition: Tensor | None, num_classes: int) -> Tensor:
    if num_classes == 0:
        if condition is not None:
            raise ValueError("this network was built with num_classes=0 and takes no condition")
        return features
    if condition is None:
        raise ValueError(f"this network was built with num_classes={num_classes} and needs a one-hot condition")
    return torch.cat([features, condition.to(features.dtype)], dim=-1)


_OUTPUT_ACTIVATIONS = {"none": nn.Identity, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _output_activation(name: str) -> nn.Module:
    if name not in _OUTPUT_ACTIVATIONS:
        raise ValueError(f"output_activation must be one of {sorted(_OUTPUT_ACTIVATIONS)}, got {name!r}")
    return _OUTPUT_ACTIVATIONS[name]()


class MLPEncoder(nn.Module):
    """Flatten ``x``, (concatenate the condition,) MLP, split the head into mean and log-variance."""

    def __init__(self, in_shape: int | Sequence[int], hidden: int | Sequence[int], latent: int,
                 *, num_classes: int = 0) -> None:
        super().__init__()
        self.in_shape = _as_shape(in_shape, "in_features")
        self.latent = latent
        self.num_classes = num_classes
        self.net = _mlp([math.prod(self.in_shape) + num_classes, *_as_widths(hidden), 2 * latent], nn.ReLU)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        features = x.reshape(*x.shape[: x.dim() - len(self.in_shape)], -1)
        mean, logvar = self.net(_append_condition(features, condition, self.num_classes)).chunk(2, dim=-1)
        return mean, logvar


class MLPDecoder(nn.Module):
    """MLP from ``(*lead, latent)`` (plus condition) to ``(*lead, *out_shape)``."""

    def __init__(self, latent: int, hidden: int | Sequence[int], out_shape: int | Sequence[int],
                 *, num_classes: int = 0, output_activation: str = "none") -> None:
        super().__init__()
        self.out_shape = _as_shape(out_shape, "out_shape")
        self.num_classes = num_classes
        self.net = _mlp([latent + num_classes, *_as_widths(hidden), math.prod(self.out_shape)], nn.ReLU)
        self.output_activation = _output_activation(output_activation)

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        out = self.net(_append_condition(z, condition, self.num_classes))
        return self.output_activation(out).reshape(*z.shape[:-1], *self.out_shape)


class MLPDiscriminator(nn.Module):
    """MLP with LeakyReLU(0.2) from a flattened sample (plus condition) to one score."""

    def __init__(self, in_shape: int | Sequence[int], hidden: int | Sequence[int], *, num_classes: int = 0) -> None:
        super().__init__()
        self.in_shape = _as_shape(in_shape, "in_features")
        self.num_classes = num_classes
        self.net = _mlp([math.prod(self.in_shape) + num_classes, *_as_widths(hidden), 1], nn.LeakyReLU,
                        negative_slope=0.2)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        features = x.reshape(*x.shape[: x.dim() - len(self.in_shape)], -1)
        return self.net(_append_condition(features, condition, self.num_classes)).squeeze(-1)


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        # GroupNorm with one group normalizes each sample over (C, H, W): per-sample, so it
        # keeps the per-sample gradient penalty of WGAN-GP well defined (batch norm would not).
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"normalization must be 'batch', 'layer' or 'none', got {kind!r}")


class _ConvFeatures(nn.Module):
    """Two stride-2 4x4 convolutions: (C, H, W) -> (2c, H/4, W/4), flattened."""

    def __init__(self, image_shape: Sequence[int], channels: int, normalization: str, slope: float) -> None:
        super().__init__()
        in_channels, height, width = _image_shape(image_shape)
        self.image_shape = (in_channels, height, width)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(slope),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
            _norm2d(normalization, 2 * channels),
            nn.LeakyReLU(slope),
            nn.Flatten(),
        )
        self.out_features = 2 * channels * (height // 4) * (width // 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(-1, *self.image_shape))


class ConvEncoder(nn.Module):
    """Convolutional encoder for images ``(B, C, H, W)`` -> ``(mean, logvar)``."""

    def __init__(self, image_shape: Sequence[int], latent: int, *, channels: int = 32, num_classes: int = 0) -> None:
        super().__init__()
        self.features = _ConvFeatures(image_shape, channels, "none", slope=0.0)
        self.num_classes = num_classes
        self.head = nn.Linear(self.features.out_features + num_classes, 2 * latent)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        features = self.features(x)
        mean, logvar = self.head(_append_condition(features, condition, self.num_classes)).chunk(2, dim=-1)
        return mean, logvar


class ConvDecoder(nn.Module):
    """Project-and-reshape then two stride-2 transposed convolutions: latent -> ``(C, H, W)``.

    Used as the VAE decoder (``normalization="none"``, raw logits) and as the DCGAN
    generator (``normalization="batch"``, sigmoid output in ``[0, 1]``).
    """

    def __init__(self, latent: int, image_shape: Sequence[int], *, channels: int = 32, num_classes: int = 0,
                 normalization: str = "none", output_activation: str = "none") -> None:
        super().__init__()
        out_channels, height, width = _image_shape(image_shape)
        self.image_shape = (out_channels, height, width)
        self.num_classes = num_classes
        self.start = (2 * channels, height // 4, width // 4)
        project = nn.Linear(latent + num_classes, math.prod(self.start))
        if normalization == "batch":
            project_norm: nn.Module = nn.BatchNorm1d(math.prod(self.start))
        elif normalization in ("layer", "none"):
            project_norm = nn.Identity()
        else:
            raise ValueError(f"normalization must be 'batch', 'layer' or 'none', got {normalization!r}")
        self.project = nn.Sequential(project, project_norm, nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),
            _norm2d(normalization, channels),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1),
            _output_activation(output_activation),
        )

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        lead = z.shape[:-1]
        inputs = _append_condition(z, condition, self.num_classes).reshape(-1, z.shape[-1] + self.num_classes)
        images = self.net(self.project(inputs).reshape(-1, *self.start))
        return images.reshape(*lead, *self.image_shape)


class ConvDiscriminator(nn.Module):
    """DCGAN discriminator: strided convolutions, LeakyReLU(0.2), normalization on the second."""

    def __init__(self, image_shape: Sequence[int], *, channels: int = 32, num_classes: int = 0,
                 normalization: str = "batch") -> None:
        super().__init__()
        self.features = _ConvFeatures(image_shape, channels, normalization, slope=0.2)
        self.num_classes = num_classes
        self.head = nn.Linear(self.features.out_features + num_classes, 1)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        features = self.features(x)
        return self.head(_append_condition(features, condition, self.num_classes)).squeeze(-1)


def mlp_encoder(in_features: int | Sequence[int], hidden: int | Sequence[int], latent: int,
                *, num_classes: int = 0) -> MLPEncoder:
    """MLP encoder ``x -> (mean, logvar)``; ``in_features`` may be a shape such as ``(1, 8, 8)``."""
    return MLPEncoder(in_features, hidden, latent, num_classes=num_classes)


def mlp_decoder(latent: int, hidden: int | Sequence[int], out_shape: int | Sequence[int],
                *, num_classes: int = 0) -> MLPDecoder:
    """MLP decoder ``z -> logits`` (or Gaussian means) of shape ``out_shape``."""
    return MLPDecoder(latent, hidden, out_shape, num_classes=num_classes)


def mlp_generator(latent: int, hidden: int | Sequence[int], out_shape: int | Sequence[int],
                  *, num_classes: int = 0) -> MLPDecoder:
    """MLP generator ``z -> x`` with a sigmoid so samples lie in ``[0, 1]`` like the data."""
    return MLPDecoder(latent, hidden, out_shape, num_classes=num_classes, output_activation="sigmoid")


def mlp_discriminator(in_features: int | Sequence[int], hidden: int | Sequence[int],
                      *, num_classes: int = 0) -> MLPDiscriminator:
    """MLP discriminator / critic ``x -> score``."""
    return MLPDiscriminator(in_features, hidden, num_classes=num_classes)


def conv_encoder(image_shape: Sequence[int], latent: int, *, channels: int = 32, num_classes: int = 0) -> ConvEncoder:
    """Convolutional encoder for ``(C, H, W)`` images with H and W multiples of 4."""
    return ConvEncoder(image_shape, latent, channels=channels, num_classes=num_classes)


def conv_decoder(latent: int, image_shape: Sequence[int], *, channels: int = 32, num_classes: int = 0) -> ConvDecoder:
    """Transposed-convolution decoder producing logits of shape ``image_shape``."""
    return ConvDecoder(latent, image_shape, channels=channels, num_classes=num_classes)


def dcgan_generator(latent: int, image_shape: Sequence[int], *, channels: int = 32, num_classes: int = 0) -> ConvDecoder:
    """DCGAN generator: batch norm and ReLU in every hidden layer, sigmoid output in ``[0, 1]``."""
    return ConvDecoder(latent, image_shape, channels=channels, num_classes=num_classes,
                       normalization="batch", output_activation="sigmoid")


def dcgan_discriminator(image_shape: Sequence[int], *, channels: int = 32, num_classes: int = 0,
                        normalization: str = "batch") -> ConvDiscriminator:
    """DCGAN discriminator; pass ``normalization="layer"`` for WGAN-GP critics."""
    return ConvDiscriminator(image_shape, channels=channels, num_classes=num_classes, normalization=normalization)
