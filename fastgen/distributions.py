"""``torch.distributions``-compatible Normal and Bernoulli backed by the fused ops.

Both classes subclass their ``torch.distributions`` counterpart, so they work
everywhere the originals do (``Independent``, ``kl_divergence``, ``expand``,
validation), but the hot paths call the fused kernels:

============================  ================================================
method                        fused op
============================  ================================================
``Normal.rsample``            ``reparameterize``: ``z = loc + exp(logvar/2) * eps``
``Normal.log_prob``           ``gaussian_log_likelihood`` with ``event_dims=0``
``kl_divergence(Normal, .)``  ``gaussian_kl`` with ``event_dims=0``
``Bernoulli.log_prob``        ``bernoulli_log_likelihood`` with ``event_dims=0``
``Bernoulli.entropy``         ``-bernoulli_log_likelihood(logits, sigmoid(logits))``
============================  ================================================

A VAE encoder predicts a log-variance, so ``Normal.from_logvar(loc, logvar)``
keeps that tensor and hands it to the kernels directly: no ``exp`` to build a
scale followed by a ``log`` to get back to the log-variance, and gradients reach
``logvar`` through the kernels' own backward.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import kl as _torch_kl
from torch.distributions.utils import broadcast_all

from fastgen import ops as _ops

__all__ = ["Normal", "Bernoulli"]

_HALF_LOG_TWO_PI_E = 0.5 * (1.0 + math.log(2.0 * math.pi))


def _flat_sample_count(sample_shape: torch.Size) -> int:
    return math.prod(sample_shape) if len(sample_shape) else 1


class Normal(torch.distributions.Normal):
    r"""Diagonal normal :math:`\mathcal N(\mathrm{loc}, \mathrm{scale}^2)` using fused kernels.

    Construct it exactly like :class:`torch.distributions.Normal` from ``(loc, scale)``,
    or from a log-variance with :meth:`from_logvar`. Either way :attr:`logvar`
    :math:`= \log \mathrm{scale}^2` is what the kernels consume.

    * ``rsample(sample_shape)`` draws :math:`z = \mu + e^{\frac12 \log\sigma^2}\,\epsilon`
      with :math:`\epsilon` generated inside the kernel (nothing of size ``z`` is stored
      for backward).
    * ``log_prob(x)`` :math:`= -\tfrac12\left[\log 2\pi + \log\sigma^2 + (x-\mu)^2 / \sigma^2\right]`
      elementwise.
    * ``entropy()`` :math:`= \tfrac12 (1 + \log 2\pi) + \tfrac12 \log\sigma^2`.
    """

    # Set by from_logvar (or lazily from scale); the class attribute keeps instances
    # built by torch's own machinery (expand, __new__) valid without an __init__ override.
    _logvar: Tensor | None = None

    @classmethod
    def from_logvar(cls, loc: Tensor | float, logvar: Tensor | float, validate_args: bool | None = None) -> "Normal":
        r"""Normal with mean ``loc`` and variance :math:`e^{\mathrm{logvar}}` (broadcast together)."""
        loc, logvar = broadcast_all(loc, logvar)
        instance = cls(loc, torch.exp(0.5 * logvar), validate_args=validate_args)
        instance._logvar = logvar
        return instance

    @property
    def logvar(self) -> Tensor:
        r""":math:`\log \sigma^2`, the tensor given to :meth:`from_logvar` or ``2 log scale``."""
        if self._logvar is None:
            return 2.0 * torch.log(self.scale)
        return self._logvar

    def expand(self, batch_shape, _instance=None):
        expanded = super().expand(batch_shape, _instance)
        if self._logvar is not None:
            expanded._logvar = self._logvar.expand(torch.Size(batch_shape))
        return expanded

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        if len(sample_shape) == 0:
            return _ops.reparameterize(self.loc, self.logvar)
        draws = _ops.reparameterize(self.loc, self.logvar, num_samples=_flat_sample_count(sample_shape))
        return draws.reshape(sample_shape + self.batch_shape)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return _ops.gaussian_log_likelihood(value, self.loc, self.logvar, event_dims=0)

    def entropy(self) -> Tensor:
        return _HALF_LOG_TWO_PI_E + 0.5 * self.logvar


class Bernoulli(torch.distributions.Bernoulli):
    r"""Bernoulli parameterized by logits first, with fused ``log_prob`` and ``entropy``.

    ``Bernoulli(logits)`` is the common case for a decoder; ``Bernoulli(probs=p)`` works as
    in torch. ``log_prob(x)`` :math:`= x\,\ell - \operatorname{softplus}(\ell)` for logits
    :math:`\ell`, stable for every finite :math:`\ell`; ``x`` may be a soft target in
    ``[0, 1]`` when validation is off. ``entropy()`` is
    :math:`-(p\,\ell - \operatorname{softplus}(\ell))` with :math:`p = \sigma(\ell)`.
    """

    def __init__(self, logits: Tensor | float | None = None, probs: Tensor | float | None = None,
                 validate_args: bool | None = None) -> None:
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        # torch refuses to build an instance of a subclass that overrides __init__ unless
        # the subclass supplies one; __new__ skips our __init__ and torch fills the fields.
        if _instance is None:
            _instance = type(self).__new__(type(self))
        return super().expand(batch_shape, _instance)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return _ops.bernoulli_log_likelihood(self.logits, value, event_dims=0)

    def entropy(self) -> Tensor:
        logits = self.logits
        return -_ops.bernoulli_log_likelihood(logits, torch.sigmoid(logits), event_dims=0)


def _logvar_of(distribution: torch.distributions.Normal) -> Tensor:
    if isinstance(distribution, Normal):
        return distribution.logvar
    return 2.0 * torch.log(distribution.scale)


def _fused_normal_kl(p: torch.distributions.Normal, q: torch.distributions.Normal) -> Tensor:
    r""":math:`\mathrm{KL}(p\,\|\,q) = \tfrac12\left[\log\sigma_q^2 - \log\sigma_p^2
    + (\sigma_p^2 + (\mu_p-\mu_q)^2)/\sigma_q^2 - 1\right]` elementwise."""
    return _ops.gaussian_kl(p.loc, _logvar_of(p), q.loc, _logvar_of(q), event_dims=0)


# Register every pairing that involves a fastgen Normal, so mixing with torch's own
# Normal (a fixed prior written the usual way, say) still goes through the kernel.
_torch_kl.register_kl(Normal, Normal)(_fused_normal_kl)
_torch_kl.register_kl(Normal, torch.distributions.Normal)(_fused_normal_kl)
_torch_kl.register_kl(torch.distributions.Normal, Normal)(_fused_normal_kl)
