"""VAE and GAN model families over user-supplied networks (see ``fastgen.models.vae`` and
``fastgen.models.gan`` for the math), plus default MLP and convolutional builders."""

from .base import GenerativeModel, one_hot_labels
from .gan import DCGAN, GAN, GAN_LOSSES, WGAN, WGANGP, ConditionalGAN
from .networks import (
    conv_decoder,
    conv_encoder,
    dcgan_discriminator,
    dcgan_generator,
    mlp_decoder,
    mlp_discriminator,
    mlp_encoder,
    mlp_generator,
)
from .vae import IWAE, VAE, BetaVAE, ConditionalVAE, VAELoss

__all__ = [
    "GenerativeModel", "one_hot_labels",
    "VAE", "BetaVAE", "ConditionalVAE", "IWAE", "VAELoss",
    "GAN", "DCGAN", "ConditionalGAN", "WGAN", "WGANGP", "GAN_LOSSES",
    "mlp_encoder", "mlp_decoder", "mlp_generator", "mlp_discriminator",
    "conv_encoder", "conv_decoder", "dcgan_generator", "dcgan_discriminator",
]
