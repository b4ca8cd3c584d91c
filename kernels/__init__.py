"""fastgen's Triton kernels (installed as `fastgen.kernels`), registered as the "triton" backend.

One module per op family, forward and backward kernels side by side:
`reparameterize` (and reparameterize_kl), `gaussian_kl`,
`bernoulli_log_likelihood`, `gaussian_log_likelihood`, `clamp`. The shared
formulas and the noise stream are `_math`, the tiling `_tiles`.

Every op except clamp_ is a `torch.library.triton_op` in namespace
"fastgen_triton" with its autograd registered on it, so torch.compile traces
into the kernels (no graph break) and autograd, autocast and CUDA graphs
work. The backend runs on CUDA tensors, and also on CPU tensors when
TRITON_INTERPRET=1 is set before this package is imported (Triton's
interpreter; for tests). Without Triton this package imports quietly and
registers nothing.
"""

try:
    import triton  # noqa: F401
except ImportError as error:  # Triton is optional: fastgen then has no "triton" backend
    TRITON_ERROR = error
else:
    TRITON_ERROR = None

if TRITON_ERROR is None:
    from types import SimpleNamespace

    from fastgen.ops import register_backend

    from . import bernoulli_log_likelihood, clamp, gaussian_kl, gaussian_log_likelihood, reparameterize
    from ._tiles import INTERPRET

    def _reparameterize(mu, logvar, num_samples, generator):
        """(z, rng_state): the registry's reparameterize, the seed drawn from the device's generator."""
        rng_state = reparameterize.draw_rng_state(mu.device, generator)
        return reparameterize.reparameterize(mu, logvar, rng_state, num_samples), rng_state

    def _reparameterize_kl(mu, logvar, num_samples, event_dims, generator):
        """(z, kl, rng_state): the registry's reparameterize_kl, the seed drawn from the device's generator."""
        rng_state = reparameterize.draw_rng_state(mu.device, generator)
        z, kl = reparameterize.reparameterize_kl(mu, logvar, rng_state, num_samples, event_dims)
        return z, kl, rng_state

    # The backend: the forward ops as fastgen.ops calls them.
    BACKEND = SimpleNamespace(
        reparameterize=_reparameterize,
        reparameterize_kl=_reparameterize_kl,
        gaussian_kl=gaussian_kl.gaussian_kl,
        bernoulli_log_likelihood=bernoulli_log_likelihood.bernoulli_log_likelihood,
        gaussian_log_likelihood=gaussian_log_likelihood.gaussian_log_likelihood,
        clamp_=clamp.clamp_,
    )
    register_backend("triton", BACKEND, ("cuda", "cpu") if INTERPRET else ("cuda",))
