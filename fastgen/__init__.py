"""fastgen: fused, autograd-compatible PyTorch kernels for VAEs and GANs.

The fused ops (see design.md and `fastgen.ops`)::

    z = fastgen.reparameterize(mu, logvar)                 # noise drawn in the kernel
    z, kl = fastgen.reparameterize_kl(mu, logvar)          # sample and KL in one pass
    kl = fastgen.gaussian_kl(mu, logvar)                   # to N(0, I) or a diagonal prior
    ll = fastgen.bernoulli_log_likelihood(logits, x)       # sum over the last dim
    ll = fastgen.gaussian_log_likelihood(x, mean, logvar)
    fastgen.clip_weights_(critic, 0.01)                    # WGAN clipping, one launch per group
    z, log_pq = fastgen.reparameterize_log_weights(mu, logvar, num_samples=K)  # IWAE: log p(z) - log q(z|x)
    gp = fastgen.gradient_penalty(critic, real, fake)      # WGAN-GP, on the fused grad_norm_penalty

Models, distributions, the trainer and the CLI live in `fastgen.models`,
`fastgen.distributions`, `fastgen.train` and `fastgen.cli`.
"""

from . import ops
from .ops import *  # noqa: F403  (the public ops and backend functions: fastgen.ops.__all__)

__version__ = "0.1.0"

__all__ = [*ops.__all__, "__version__"]
