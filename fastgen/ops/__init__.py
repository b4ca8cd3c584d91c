"""fastgen's public fused ops: one module per op, and `_common` for what they share.

Each module holds its op's public function, fake kernels and registry entry;
the op's checks, broadcasting, reduction and autograd are C++
(csrc/ops/<op>.cpp), its kernels csrc/cpu, csrc/cuda and fastgen.kernels
(Triton), its textbook formula `fastgen.reference`.
"""

from ._common import (  # noqa: F401  (BACKENDS, CPU_ISA, REGISTRY, OpInfo: fastgen.ops.<name>)
    BACKENDS,
    CPU_ISA,
    REGISTRY,
    OpInfo,
    available_backends,
    backend_device_types,
    get_backend,
    set_backend,
    use_backend,
)
from .bernoulli_log_likelihood import bernoulli_log_likelihood
from .clamp import clamp_, clip_weights_
from .gaussian_kl import gaussian_kl
from .gaussian_log_likelihood import gaussian_log_likelihood
from .grad_norm_penalty import grad_norm_penalty, gradient_penalty
from .reparameterize import reparameterize
from .reparameterize_kl import reparameterize_kl
from .reparameterize_log_weights import reparameterize_log_weights

# What `from fastgen import *` gives (fastgen re-exports it): the public ops
# and the backend functions.
__all__ = [
    "available_backends",
    "backend_device_types",
    "bernoulli_log_likelihood",
    "clamp_",
    "clip_weights_",
    "gaussian_kl",
    "gaussian_log_likelihood",
    "get_backend",
    "grad_norm_penalty",
    "gradient_penalty",
    "reparameterize",
    "reparameterize_kl",
    "reparameterize_log_weights",
    "set_backend",
    "use_backend",
]
