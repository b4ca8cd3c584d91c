"""fastgen: fused, autograd-compatible PyTorch kernels for VAEs and GANs.

The fused ops (see design.md and `fastgen.ops`)::

    z = fastgen.reparameterize(mu, logvar)                 # noise drawn in the kernel
    z, kl = fastgen.reparameterize_kl(mu, logvar)          # sample and KL in one pass
    kl = fastgen.gaussian_kl(mu, logvar)                   # to N(0, I) or a diagonal prior
    ll = fastgen.bernoulli_log_likelihood(logits, x)       # sum over the last dim
    ll = fastgen.gaussian_log_likelihood(x, mean, logvar)
    fastgen.clip_weights_(critic, 0.01)                    # WGAN clipping, one launch per group

Models, distributions, the trainer and the CLI live in `fastgen.models`,
`fastgen.distributions`, `fastgen.train` and `fastgen.cli`.
"""

from .ops import (
    available_backends,
    bernoulli_log_likelihood,
    clamp_,
    clip_weights_,
    gaussian_kl,
    gaussian_log_likelihood,
    get_backend,
    reparameterize,
    reparameterize_kl,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"

__all__ = [
    "available_backends",
    "bernoulli_log_likelihood",
    "clamp_",
    "clip_weights_",
    "gaussian_kl",
    "gaussian_log_likelihood",
    "get_backend",
    "reparameterize",
    "reparameterize_kl",
    "set_backend",
    "use_backend",
    "__version__",
]
