"""fastgen's Triton kernels (installed as `fastgen.kernels`): the kernel ops of namespace fastgen_triton.

One module per op family, forward and backward kernels side by side:
`reparameterize` (and reparameterize_kl), `reparameterize_log_weights`,
`gaussian_kl`, `bernoulli_log_likelihood`, `gaussian_log_likelihood`,
`grad_norm_penalty` (and the penalty's random_interpolate), `clamp`. The shared
formulas and the noise stream are `_math`, the tiling `_tiles`.

`KERNELS` maps each kernel op of csrc/ops (`_gaussian_kl`,
`_gaussian_kl_backward`, ...) to its implementation here; `fastgen.ops`
registers them for the device types of `DEVICE_TYPES`. The public ops of
fastgen_triton (checks, broadcasting, autograd) are the same C++ op layer as
the C++ kernels', so nothing here is autograd. The kernels run on CUDA
tensors, and also on CPU tensors when TRITON_INTERPRET=1 is set before this
package is imported (Triton's interpreter; for tests). Without Triton this
package imports quietly and provides nothing. Nothing here imports fastgen.
"""

try:
    import triton  # noqa: F401
except ImportError as error:  # Triton is optional: fastgen then has no "triton" backend
    TRITON_ERROR = error
    KERNELS = {}
    DEVICE_TYPES = ()
else:
    TRITON_ERROR = None

if TRITON_ERROR is None:
    from . import (
        bernoulli_log_likelihood,
        clamp,
        gaussian_kl,
        gaussian_log_likelihood,
        grad_norm_penalty,
        reparameterize,
        reparameterize_log_weights,
    )
    from ._tiles import INTERPRET

    def _reparameterize(mu, logvar, num_samples, generator):
        """(z, rng_state): the seed drawn from the device's generator, then the kernel."""
        rng_state = reparameterize.draw_rng_state(mu, generator, mu.numel() * (num_samples or 1))
        return reparameterize.reparameterize(mu, logvar, rng_state, num_samples), rng_state

    def _reparameterize_kl(mu, logvar, num_samples, event_dims, generator):
        """(z, kl, rng_state): the seed drawn from the device's generator, then the kernel."""
        rng_state = reparameterize.draw_rng_state(mu, generator, mu.numel() * (num_samples or 1))
        z, kl = reparameterize.reparameterize_kl(mu, logvar, rng_state, num_samples, event_dims)
        return z, kl, rng_state

    KERNELS = {
        "_reparameterize": _reparameterize,
        "_reparameterize_backward": reparameterize.reparameterize_backward,
        "_reparameterize_kl": _reparameterize_kl,
        "_reparameterize_kl_backward": reparameterize.reparameterize_kl_backward,
        "_gaussian_kl": gaussian_kl.gaussian_kl,
        "_gaussian_kl_backward": gaussian_kl.gaussian_kl_backward,
        "_bernoulli_log_likelihood": bernoulli_log_likelihood.bernoulli_log_likelihood,
        "_bernoulli_log_likelihood_backward": bernoulli_log_likelihood.bernoulli_log_likelihood_backward,
        "_gaussian_log_likelihood": gaussian_log_likelihood.gaussian_log_likelihood,
        "_gaussian_log_likelihood_backward": gaussian_log_likelihood.gaussian_log_likelihood_backward,
        "_reparameterize_log_weights": reparameterize_log_weights.reparameterize_log_weights,
        "_reparameterize_log_weights_backward": reparameterize_log_weights.reparameterize_log_weights_backward,
        "_grad_norm_penalty": grad_norm_penalty.grad_norm_penalty,
        "_grad_norm_penalty_backward": grad_norm_penalty.grad_norm_penalty_backward,
        "_random_interpolate": grad_norm_penalty.random_interpolate,
        "_clamp_": clamp.clamp_,
    }
    DEVICE_TYPES = ("cuda", "cpu") if INTERPRET else ("cuda",)
