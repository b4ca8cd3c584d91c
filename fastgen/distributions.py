"""``torch.distributions`` drop-ins whose rsample, log_prob and KL run the fused ops.

``Normal(loc, scale, validate_args=None)`` and ``Bernoulli(probs=None, logits=None,
validate_args=None)`` subclass their ``torch.distributions`` counterparts with the same
signatures, defaults, validation (the same checks and error messages), ``expand``,
``support``, moments, ``entropy``, ``cdf``/``icdf``, ``enumerate_support``, pickling and
shape semantics; code written against torch gets the kernels by changing an import.

===========================================  =========================================================
call                                         fused op (event dims summed inside the kernel)
===========================================  =========================================================
``Normal.rsample`` / ``sample``              ``reparameterize`` (eps drawn in the kernel)
``Normal.log_prob``                          ``gaussian_log_likelihood``, ``event_dims=0``
``Bernoulli.log_prob`` / ``entropy``         ``bernoulli_log_likelihood``, ``event_dims=0``
``kl_divergence(Normal, Normal)``            ``gaussian_kl``, ``event_dims=0`` (either may be torch's)
``Independent(d, n).log_prob``               the op of ``d`` with ``event_dims=n``
``kl_divergence(Independent, Independent)``  ``gaussian_kl`` with ``event_dims=n``
``rsample_and_kl(q, prior)``                 ``reparameterize_kl`` (one pass) for a N(0, I) prior
===========================================  =========================================================

``Independent`` means torch's class as well as fastgen's: importing this module makes
``torch.distributions.Independent.log_prob`` and the registered KL of two ``Independent``\\ s
take the fused path when the base distributions are fastgen's, and leaves them unchanged for
every other base.

Two constructors serve VAEs: ``Normal.from_logvar(loc, logvar)`` keeps an encoder's
log-variance and hands it to the kernels (no ``exp`` to a scale and ``log`` back), and
``Bernoulli.from_logits(logits)`` is ``Bernoulli(logits=logits)``.

Where a fused op cannot give torch's exact semantics (an integer or other odd value, shapes
that do not broadcast, a value of another dtype than a Bernoulli's parameter), the call
takes torch's own code, so results and errors are torch's.
"""

from __future__ import annotations

import math

import torch
import torch.distributions as td
from torch import Tensor
from torch.distributions import constraints
from torch.distributions import kl as _torch_kl
from torch.distributions.distribution import Distribution
from torch.distributions.utils import _sum_rightmost, broadcast_all, lazy_property
from torch.types import _Number

from fastgen import ops as _ops

__all__ = ["Bernoulli", "Independent", "Normal", "kl_divergence", "rsample_and_kl"]

#: ``torch.distributions.kl_divergence``, re-exported so that one import serves.
kl_divergence = td.kl_divergence

_HALF_LOG_TWO_PI_E = 0.5 * (1.0 + math.log(2.0 * math.pi))
_EMPTY = torch.Size()
# Tensor types broadcast_all hands back unchanged when their shapes agree.
_PLAIN = (Tensor, torch.nn.Parameter)
# What a fused op raises for arguments it does not take; the call then runs torch's code.
_OP_ERRORS = (TypeError, ValueError, RuntimeError)
# A log-variance is valid where the scale exp(logvar / 2) is positive: above -inf.
_LOGVAR_CONSTRAINT = constraints.greater_than(-math.inf)
_tracing = torch._C._get_tracing_state


# ----------------------------------------------------------------------------- validation
# torch's checks, message for message, with the common constraints answered by one
# reduction (a min or aminmax) instead of an element-wise comparison and an all().


def _satisfied(constraint: constraints.Constraint, value) -> bool:
    """Whether every element of `value` satisfies `constraint` (torch's check(...) all true)."""
    if type(value) in _PLAIN and value.is_floating_point() and value.numel() > 0 and not _tracing():
        v = value.detach()
        if constraint is constraints.real:  # value == value: no NaN; min is NaN iff one is
            return not math.isnan(v.min().item())
        if constraint is constraints.positive:  # 0 < value; a NaN min fails too
            return v.min().item() > 0.0
        if constraint is _LOGVAR_CONSTRAINT:
            return v.min().item() > -math.inf
        if constraint is constraints.unit_interval:
            low, high = torch.aminmax(v)
            return low.item() >= 0.0 and high.item() <= 1.0
        if constraint is constraints.boolean:  # v - v*v is exactly 0 only at 0 and 1 (NaN, inf: not 0)
            return not torch.addcmul(v, v, v, value=-1).any().item()
    return bool(torch._is_all_true(constraint.check(value)))


def _check_parameter(dist: Distribution, name: str, constraint: constraints.Constraint, value) -> None:
    if not _satisfied(constraint, value):
        raise ValueError(
            f"Expected parameter {name} "
            f"({type(value).__name__} of shape {tuple(value.shape)}) "
            f"of distribution {dist!r} "
            f"to satisfy the constraint {constraint!r}, "
            f"but found invalid values:\n{value}"
        )


def _validate_parameters(dist: Distribution) -> None:
    """Distribution.__init__'s argument validation."""
    for name, constraint in dist.arg_constraints.items():
        if constraints.is_dependent(constraint):
            continue
        if name not in dist.__dict__ and isinstance(getattr(type(dist), name), lazy_property):
            continue  # a parameter computed lazily from the one given
        _check_parameter(dist, name, constraint, getattr(dist, name))


def _check_sample_shape(dist: Distribution, value) -> None:
    """The shape half of Distribution._validate_sample."""
    if not isinstance(value, Tensor):
        raise ValueError("The value argument to log_prob must be a Tensor")
    event_shape = dist._event_shape
    actual_shape = value.size()
    event_dim_start = len(actual_shape) - len(event_shape)
    if actual_shape[event_dim_start:] != event_shape:
        raise ValueError(
            f"The right-most size of value must match event_shape: {actual_shape} vs {event_shape}."
        )
    expected_shape = dist._batch_shape + event_shape
    for i, j in zip(reversed(actual_shape), reversed(expected_shape)):
        if i != 1 and j != 1 and i != j:
            raise ValueError(
                f"Value is not broadcastable with batch_shape+event_shape: {actual_shape} vs {expected_shape}."
            )


def _check_support(dist: Distribution, value: Tensor) -> None:
    """The support half of Distribution._validate_sample."""
    support = dist.support
    if not _satisfied(support, value):
        raise ValueError(
            "Expected value argument "
            f"({type(value).__name__} of shape {tuple(value.shape)}) "
            f"to be within the support ({support!r}) "
            f"of the distribution {dist!r}, "
            f"but found invalid values:\n{value}"
        )


def _validate_sample(dist: Distribution, value) -> None:
    """Distribution._validate_sample, with the fast support check."""
    _check_sample_shape(dist, value)
    _check_support(dist, value)


def _check_real_result(dist: Distribution, value: Tensor, out: Tensor) -> None:
    """The support check of a value on the reals, made after the fact: the kernels carry a NaN
    of `value` into every result it reaches, so `value` is checked only when `out` has a NaN
    (or is empty while `value` is not)."""
    if out.numel() == 0:
        if value.numel() > 0:
            _check_support(dist, value)
    elif math.isnan(out.detach().min().item()):
        _check_support(dist, value)


# ----------------------------------------------------------------------------- operands


def _row(t: Tensor, shape: torch.Size) -> Tensor:
    """A one-element operand as a stride-0 row of `shape`'s last dim: the kernels repeat a
    row of an argument at full speed, a single element not."""
    if len(shape) > 0 and t.numel() == 1:
        return t.reshape(()).expand(shape[-1:])
    return t


def _log_variance(scale: Tensor) -> Tensor:
    return torch.log(scale) * 2.0


def _is_constant(t: Tensor, value: float) -> bool:
    """Whether every element of `t` is `value`, asked only where the answer is cheap and fixed:
    a tensor that needs no gradient, on the CPU (no device sync), outside tracing."""
    if t.requires_grad or t.device.type != "cpu" or t.numel() == 0 or _tracing():
        return False
    if t.numel() == 1 or not any(t.stride()):  # one element, or one broadcast to all
        return t[(0,) * t.dim()].item() == value
    low, high = torch.aminmax(t)
    return low.item() == value and high.item() == value


def _is_normal(d) -> bool:
    """torch's Normal or fastgen's: what the fused Gaussian paths read (loc and scale)."""
    return type(d) is td.Normal or isinstance(d, Normal)


def _logvar_operand(d: td.Normal, shape: torch.Size, unit_as_none: bool) -> Tensor | None:
    """The log-variance of Normal `d` as the kernels read it; None (when allowed) for scale 1."""
    if isinstance(d, Normal):
        lv = d._kernel_logvar(unit_as_none)
    else:
        scale = d.scale
        if unit_as_none and _is_constant(scale, 1.0):
            return None
        lv = _log_variance(scale)
    return None if lv is None else _row(lv, shape)


def _loc_operand(d: td.Normal, shape: torch.Size, zero_as_none: bool) -> Tensor | None:
    """The mean of Normal `d` as the kernels read it; None (when allowed) for a zero mean."""
    loc = d.loc
    if zero_as_none and (d._loc_is_zero() if isinstance(d, Normal) else _is_constant(loc, 0.0)):
        return None
    return _row(loc, shape)


def _log_cost(d: td.Normal) -> int:
    """How many elements the log of `d`'s log-variance touches (0 when it is at hand)."""
    if isinstance(d, Normal):
        return d._logvar_cost()
    return 0 if d.scale.numel() == 1 else d.scale.numel()


# ----------------------------------------------------------------------------- Normal


class Normal(td.Normal):
    r"""``torch.distributions.Normal(loc, scale, validate_args=None)`` on the fused ops.

    * ``rsample(sample_shape)`` draws :math:`z = \mu + e^{\frac12 \log\sigma^2}\,\epsilon`
      in one ``reparameterize`` pass (:math:`\epsilon` drawn inside the kernel and
      regenerated in backward) when the log-variance is at hand (``from_logvar``, a scale
      that needs no gradient, a number); for a scale whose log would cost this call a full
      pass (and its backward), it is torch's ``loc + scale * eps`` with ``eps`` drawn by the
      kernel, which costs less. ``sample`` is the same under ``no_grad``. The noise is
      fastgen's Philox stream (reproducible under ``torch.manual_seed``), not the numbers of
      torch's ``torch.normal``.
    * ``log_prob(x)`` :math:`= -\tfrac12\left[\log 2\pi + \log\sigma^2 + (x-\mu)^2/\sigma^2\right]`,
      element-wise, or summed in the kernel under ``Independent``.
    * ``kl_divergence`` with another Normal (fastgen's or torch's) is ``gaussian_kl``.
    * ``rsample_and_kl(prior=None, sample_shape=())`` gives ``(z, kl)`` in one pass.

    ``Normal.from_logvar(loc, logvar)`` builds it from a log-variance, which the kernels then
    read directly (its ``scale`` is computed only when asked for). The log-variance of a
    ``Normal(loc, scale)`` is computed once and kept while ``scale`` needs no gradient and is
    not changed in place; a scale given as a number costs nothing per element.
    """

    # Set by __init__ / from_logvar; the class defaults keep instances made by torch's
    # machinery (__new__, pickles of other versions) on the plain, uncached path.
    _loc_broadcast: Tensor | None = None  # self.loc as __init__ set it
    _scale_broadcast: Tensor | None = None  # self.scale as __init__ set it
    _scale_arg: Tensor | None = None  # the scale before broadcasting: what the kernels read
    _scale_is_one = False  # scale was the number 1: log-variance exactly 0
    _loc_is_number_zero = False  # loc was the number 0
    _logvar_arg: Tensor | None = None  # from_logvar: the log-variance before broadcasting
    _logvar_broadcast: Tensor | None = None  # from_logvar: ... and broadcast to batch_shape
    # For parameters that need no gradient: (log-variance, scale._version, scale is all 1)
    # and (loc._version, loc is all 0).
    _logvar_cache: tuple[Tensor, int, bool] | None = None
    _loc_zero_cache: tuple[int, bool] | None = None

    def __init__(self, loc: Tensor | float, scale: Tensor | float, validate_args: bool | None = None) -> None:
        if type(loc) in _PLAIN and type(scale) in _PLAIN and loc.shape == scale.shape:
            self.loc, self.scale = loc, scale  # what broadcast_all returns for equal shapes
        else:
            self.loc, self.scale = broadcast_all(loc, scale)
        if isinstance(loc, _Number) and isinstance(scale, _Number):
            batch_shape = _EMPTY
        else:
            batch_shape = self.loc.size()
        # Distribution.__init__ without its validation, which follows (faster, same errors).
        self._batch_shape = batch_shape
        self._event_shape = _EMPTY
        if validate_args is not None:
            self._validate_args = validate_args
        self._loc_broadcast = self.loc
        self._scale_broadcast = self.scale
        if isinstance(scale, Tensor):
            self._scale_arg = _row(scale, batch_shape)
        else:  # a number: one element of the broadcast tensor, as a row
            broadcast = self.scale
            self._scale_arg = _row(broadcast[(0,) * broadcast.dim()], batch_shape)
            self._scale_is_one = scale == 1
        self._loc_is_number_zero = isinstance(loc, _Number) and loc == 0
        if self._validate_args:
            _validate_parameters(self)

    @classmethod
    def from_logvar(
        cls, loc: Tensor | float, logvar: Tensor | float, validate_args: bool | None = None
    ) -> Normal:
        r"""Normal with mean ``loc`` and variance :math:`e^{\mathrm{logvar}}` (broadcast together).

        Validation requires ``loc`` real and ``logvar`` above -inf (a positive scale).
        """
        self = cls.__new__(cls)
        self.loc, broadcast = broadcast_all(loc, logvar)
        if isinstance(loc, _Number) and isinstance(logvar, _Number):
            batch_shape = _EMPTY
        else:
            batch_shape = self.loc.size()
        self._batch_shape = batch_shape
        self._event_shape = _EMPTY
        if validate_args is not None:
            self._validate_args = validate_args
        self._loc_broadcast = self.loc
        self._logvar_broadcast = broadcast
        if isinstance(logvar, Tensor):
            self._logvar_arg = _row(logvar, batch_shape)
        else:
            self._logvar_arg = _row(broadcast[(0,) * broadcast.dim()], batch_shape)
        self._loc_is_number_zero = isinstance(loc, _Number) and loc == 0
        if self._validate_args:
            _check_parameter(self, "loc", constraints.real, self.loc)
            _check_parameter(self, "logvar", _LOGVAR_CONSTRAINT, broadcast)
        return self

    @lazy_property
    def scale(self) -> Tensor:
        """The standard deviation; for ``from_logvar`` computed from the log-variance when first asked."""
        return torch.exp(0.5 * self._logvar_broadcast)

    @property
    def logvar(self) -> Tensor:
        r""":math:`\log \sigma^2` of shape ``batch_shape``: the tensor given to :meth:`from_logvar`, or ``2 log scale``."""
        if self._logvar_broadcast is not None:
            return self._logvar_broadcast
        return _log_variance(self.scale)

    def _kernel_logvar(self, unit_as_none: bool = False) -> Tensor | None:
        """The log-variance the kernels read: unbroadcast, computed once while the scale needs no
        gradient and is unchanged; None (when allowed) for a scale of ones."""
        logvar = self._logvar_arg
        if logvar is not None:
            return logvar
        scale = self.scale
        if scale is not self._scale_broadcast:  # reassigned, or an instance torch's machinery made
            return None if unit_as_none and _is_constant(scale, 1.0) else _log_variance(scale)
        arg = self._scale_arg
        cache = self._logvar_cache
        if cache is None or cache[1] != arg._version:
            if arg.requires_grad or arg.is_inference() or _tracing():
                # A scale that needs a gradient gets a fresh log each call, as torch's does:
                # a kept one's graph would be freed by the first backward.
                return None if unit_as_none and self._scale_is_one else _log_variance(arg)
            unit = self._scale_is_one or _is_constant(arg, 1.0)
            cache = self._logvar_cache = (_log_variance(arg), arg._version, unit)
        return None if unit_as_none and cache[2] else cache[0]

    def _loc_is_zero(self) -> bool:
        """Whether loc is known to be all 0 (a number 0, or a tensor of zeros needing no gradient)."""
        loc = self.loc
        if loc is not self._loc_broadcast:
            return _is_constant(loc, 0.0)
        if self._loc_is_number_zero:
            return True
        cache = self._loc_zero_cache
        if cache is not None and cache[0] == loc._version:
            return cache[1]
        zero = _is_constant(loc, 0.0)
        if not loc.requires_grad and not loc.is_inference() and not _tracing():
            self._loc_zero_cache = (loc._version, zero)
        return zero

    def _logvar_cost(self) -> int:
        """How many elements a call's log of the scale touches (0 when the log-variance is at hand)."""
        if self._logvar_arg is not None:
            return 0
        scale = self.scale
        if scale is not self._scale_broadcast:
            return scale.numel()
        cache = self._logvar_cache
        arg = self._scale_arg
        return 0 if cache is not None and cache[1] == arg._version else arg.numel()

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Normal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        state = self.__dict__
        if "scale" in state:
            new.scale = self.scale.expand(batch_shape)
        # The kernels' operands carry over (a one-element one as a row of the new shape).
        if self._logvar_broadcast is not None:
            new._logvar_broadcast = self._logvar_broadcast.expand(batch_shape)
            new._logvar_arg = _row(self._logvar_arg, batch_shape)
        elif self.scale is self._scale_broadcast:
            arg = self._scale_arg
            new._scale_broadcast = new.scale
            new._scale_arg = _row(arg, batch_shape)
            new._scale_is_one = self._scale_is_one
            new._logvar_cache = self._logvar_cache if new._scale_arg is arg else None
        if self.loc is self._loc_broadcast:
            new._loc_broadcast = new.loc
            new._loc_is_number_zero = self._loc_is_number_zero
            new._loc_zero_cache = self._loc_zero_cache
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    _validate_sample = _validate_sample

    def rsample(self, sample_shape=_EMPTY) -> Tensor:
        if not isinstance(sample_shape, torch.Size):
            sample_shape = torch.Size(sample_shape)
        try:
            if self._logvar_cost() == 0:
                # The log-variance is at hand: one fused pass, nothing kept for backward.
                if not sample_shape:
                    return _ops.reparameterize(self.loc, self._kernel_logvar())
                count = math.prod(sample_shape)
                if count > 0:
                    z = _ops.reparameterize(self.loc, self._kernel_logvar(), num_samples=count)
                    return z if len(sample_shape) == 1 else z.reshape(sample_shape + z.shape[1:])
            else:
                # A scale whose log this call would pay for (a full pass, and its backward):
                # torch's loc + scale * eps with eps from the kernel's noise (as reparameterize
                # draws it for loc = logvar = 0), which costs less.
                loc = self.loc
                zeros = loc.new_zeros(sample_shape + self._batch_shape)
                return torch.addcmul(loc, self.scale, _ops.reparameterize(zeros, zeros))
        except _OP_ERRORS:
            pass
        return td.Normal.rsample(self, sample_shape)  # no samples (or arguments the op refuses)

    def sample(self, sample_shape=_EMPTY) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        return self._log_prob_rows(value, 0)

    def _log_prob_rows(self, value: Tensor, event_dims: int) -> Tensor:
        """log_prob summed over the last `event_dims` dims, inside the kernel."""
        validate = self._validate_args
        if validate:
            _check_sample_shape(self, value)
        try:
            out = _ops.gaussian_log_likelihood(value, self.loc, self._kernel_logvar(True), event_dims=event_dims)
        except _OP_ERRORS:
            return _sum_rightmost(td.Normal.log_prob(self, value), event_dims)
        if validate:
            _check_real_result(self, value, out)
        return out

    def entropy(self) -> Tensor:
        if self._logvar_broadcast is not None:
            return _HALF_LOG_TWO_PI_E + 0.5 * self._logvar_broadcast
        return super().entropy()

    def rsample_and_kl(self, prior: td.Distribution | None = None, sample_shape=_EMPTY) -> tuple[Tensor, Tensor]:
        """``(self.rsample(sample_shape), kl_divergence(self, prior))``; see :func:`rsample_and_kl`."""
        return rsample_and_kl(self, prior, sample_shape)

    def __repr__(self) -> str:
        if "scale" not in self.__dict__ and self._logvar_broadcast is not None:
            parts = [
                f"{name}: {t if t.numel() == 1 else t.size()}"
                for name, t in (("loc", self.loc), ("logvar", self._logvar_broadcast))
            ]
            return f"{type(self).__name__}({', '.join(parts)})"
        return super().__repr__()


# ----------------------------------------------------------------------------- Bernoulli


class Bernoulli(td.Bernoulli):
    r"""``torch.distributions.Bernoulli(probs=None, logits=None, validate_args=None)`` on the fused ops.

    ``log_prob(x)`` :math:`= x\,\ell - \operatorname{softplus}(\ell)` for logits :math:`\ell`
    (for ``probs``, torch's clamped logits), stable for every finite :math:`\ell`; with
    validation off ``x`` may be a soft target in [0, 1], as in torch. ``entropy()`` is
    :math:`-(p\,\ell - \operatorname{softplus}(\ell))`. Both sum in the kernel under
    ``Independent``. ``Bernoulli.from_logits(logits)`` is ``Bernoulli(logits=logits)``.
    """

    def __init__(
        self,
        probs: Tensor | float | None = None,
        logits: Tensor | float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        if probs is not None:
            is_scalar = isinstance(probs, _Number)
            self.probs = probs if type(probs) in _PLAIN else broadcast_all(probs)[0]
            self._param = self.probs
        else:
            is_scalar = isinstance(logits, _Number)
            self.logits = logits if type(logits) in _PLAIN else broadcast_all(logits)[0]
            self._param = self.logits
        self._batch_shape = _EMPTY if is_scalar else self._param.size()
        self._event_shape = _EMPTY
        if validate_args is not None:
            self._validate_args = validate_args
        if self._validate_args:
            _validate_parameters(self)

    @classmethod
    def from_logits(cls, logits: Tensor | float, validate_args: bool | None = None) -> Bernoulli:
        """``Bernoulli(logits=logits)``: the decoder's case, symmetric to ``Normal.from_logvar``."""
        return cls(logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return super().expand(batch_shape, self._get_checked_instance(Bernoulli, _instance))

    _validate_sample = _validate_sample

    def log_prob(self, value: Tensor) -> Tensor:
        return self._log_prob_rows(value, 0)

    def _log_prob_rows(self, value: Tensor, event_dims: int) -> Tensor:
        """log_prob summed over the last `event_dims` dims, inside the kernel."""
        if self._validate_args:
            _validate_sample(self, value)
        logits = self.logits
        # torch's result takes the value's dtype; the op's promotes: fused when they agree.
        if type(value) in _PLAIN and value.dtype is logits.dtype:
            try:
                return _ops.bernoulli_log_likelihood(logits, value, event_dims=event_dims)
            except _OP_ERRORS:
                pass
        return _sum_rightmost(td.Bernoulli.log_prob(self, value), event_dims)

    def entropy(self) -> Tensor:
        logits = self.logits
        try:
            return -_ops.bernoulli_log_likelihood(logits, self.probs, event_dims=0)
        except _OP_ERRORS:
            return super().entropy()


# ----------------------------------------------------------------------------- KL


def _normal_kl(p: td.Normal, q: td.Normal, event_dims: int) -> Tensor:
    r""":math:`\mathrm{KL}(p\,\|\,q) = \tfrac12\left[\log\sigma_q^2 - \log\sigma_p^2
    + (\sigma_p^2 + (\mu_p-\mu_q)^2)/\sigma_q^2 - 1\right]` summed over the last `event_dims` dims."""
    p_shape, q_shape = p._batch_shape, q._batch_shape
    shape = p_shape if p_shape == q_shape else torch.broadcast_shapes(p_shape, q_shape)
    numel = math.prod(shape)
    if 2 * _log_cost(q) >= numel > 1 and 2 * _log_cost(p) >= numel:
        # Both log-variances would cost a full log pass: KL(p || q) = KL(N((mu_p - mu_q) / s_q,
        # (s_p / s_q)^2) || N(0, 1)) takes one log and three cheap passes instead.
        q_scale = q.scale
        kl = _ops.gaussian_kl(
            (p.loc - q.loc) / q_scale, _log_variance(p.scale / q_scale), event_dims=event_dims
        )
    else:
        # q's operands may be left out (N(0, 1)) only when p alone gives the result's shape.
        trivial = shape == p_shape
        kl = _ops.gaussian_kl(
            _loc_operand(p, shape, False),
            _logvar_operand(p, shape, False),
            _loc_operand(q, shape, trivial),
            _logvar_operand(q, shape, trivial),
            event_dims=event_dims,
        )
    expected = shape[: len(shape) - event_dims]
    if kl.shape != expected:  # one-element parameters read as rows
        kl = kl.expand(expected).contiguous()
    return kl


def _fused_normal_kl(p: td.Normal, q: td.Normal, event_dims: int = 0) -> Tensor:
    try:
        return _normal_kl(p, q, event_dims)
    except _OP_ERRORS:
        return _sum_rightmost(_torch_kl._kl_normal_normal(p, q), event_dims)


def _kl_normal_normal(p: td.Normal, q: td.Normal) -> Tensor:
    return _fused_normal_kl(p, q, 0)


# Every pairing that involves a fastgen Normal, so a prior written with torch's own Normal
# (on either side) goes through the kernel too.
_torch_kl.register_kl(Normal, Normal)(_kl_normal_normal)
_torch_kl.register_kl(Normal, td.Normal)(_kl_normal_normal)
_torch_kl.register_kl(td.Normal, Normal)(_kl_normal_normal)

_TORCH_KL_INDEPENDENT = _torch_kl._kl_independent_independent


def _kl_independent_independent(p: td.Independent, q: td.Independent) -> Tensor:
    """torch's KL of two Independents, with the event dims summed inside ``gaussian_kl`` when
    the bases are Normals and one at least is fastgen's."""
    event_dims = 0
    base_p, base_q = p, q
    while isinstance(base_p, td.Independent) and isinstance(base_q, td.Independent):
        if base_p.reinterpreted_batch_ndims != base_q.reinterpreted_batch_ndims:
            return _TORCH_KL_INDEPENDENT(p, q)  # torch's error
        event_dims += base_p.reinterpreted_batch_ndims
        base_p, base_q = base_p.base_dist, base_q.base_dist
    if (
        _is_normal(base_p)
        and _is_normal(base_q)
        and (isinstance(base_p, Normal) or isinstance(base_q, Normal))
    ):
        return _fused_normal_kl(base_p, base_q, event_dims)
    return _TORCH_KL_INDEPENDENT(p, q)


_torch_kl.register_kl(td.Independent, td.Independent)(_kl_independent_independent)


# ----------------------------------------------------------------------------- Independent

# torch's Independent.log_prob, kept once even if this module is reloaded.
if not hasattr(td.Independent, "_torch_log_prob"):
    td.Independent._torch_log_prob = td.Independent.log_prob
_TORCH_INDEPENDENT_LOG_PROB = td.Independent._torch_log_prob


def _independent_log_prob(self: td.Independent, value: Tensor) -> Tensor:
    """Independent.log_prob: for a fastgen base, the base's op summing the event dims itself."""
    base, event_dims = self.base_dist, self.reinterpreted_batch_ndims
    while type(base).log_prob is _independent_log_prob:  # nested Independents
        event_dims += base.reinterpreted_batch_ndims
        base = base.base_dist
    rows = _LOG_PROB_ROWS.get(type(base).log_prob)
    if rows is None:
        return _TORCH_INDEPENDENT_LOG_PROB(self, value)
    return rows(base, value, event_dims)


# A base's log_prob -> its summing version, for the classes whose log_prob is fastgen's.
_LOG_PROB_ROWS = {Normal.log_prob: Normal._log_prob_rows, Bernoulli.log_prob: Bernoulli._log_prob_rows}

td.Independent.log_prob = _independent_log_prob


class Independent(td.Independent):
    """``torch.distributions.Independent``; of a fastgen distribution, ``log_prob`` and KL sum
    the event dims inside the kernel (as torch's own class does once this module is imported),
    and :meth:`rsample_and_kl` samples and takes the KL in one pass."""

    log_prob = _independent_log_prob

    def rsample_and_kl(self, prior: td.Distribution | None = None, sample_shape=_EMPTY) -> tuple[Tensor, Tensor]:
        """``(self.rsample(sample_shape), kl_divergence(self, prior))``; see :func:`rsample_and_kl`."""
        return rsample_and_kl(self, prior, sample_shape)


# ----------------------------------------------------------------------------- sample and KL


def _unwrap(q, prior):
    """(Normal base of q, its event dims, prior's matching base or None), or None when q is
    not a (possibly Independent) Normal or prior is not built the same way."""
    event_dims, base = 0, q
    while isinstance(base, td.Independent):
        if prior is not None:
            if not isinstance(prior, td.Independent) or prior.reinterpreted_batch_ndims != base.reinterpreted_batch_ndims:
                return None
            prior = prior.base_dist
        event_dims += base.reinterpreted_batch_ndims
        base = base.base_dist
    if not _is_normal(base) or (prior is not None and not _is_normal(prior)):
        return None
    return base, event_dims, prior


def _is_standard(prior: td.Normal, shape: torch.Size) -> bool:
    """Whether `prior` is N(0, 1) with a batch shape that broadcasts within `shape`."""
    if _loc_operand(prior, shape, True) is not None or _logvar_operand(prior, shape, True) is not None:
        return False
    return prior._batch_shape == shape or torch.broadcast_shapes(prior._batch_shape, shape) == shape


def rsample_and_kl(
    q: td.Distribution, prior: td.Distribution | None = None, sample_shape=_EMPTY
) -> tuple[Tensor, Tensor]:
    r"""``(q.rsample(sample_shape), kl_divergence(q, prior))`` in as few passes as possible.

    ``prior=None`` means :math:`\mathcal N(0, I)` shaped like ``q``. For a Normal ``q``
    (fastgen's or torch's, bare or inside ``Independent``\ s) and a standard normal prior
    (``None``, or a Normal of zeros and ones: numbers, or CPU tensors that need no gradient,
    with a batch shape within ``q``'s), both come from one pass of
    ``reparameterize_kl`` over loc and log-variance, the KL summed over ``q``'s event dims in
    the kernel; for another Normal prior, from ``reparameterize`` and ``gaussian_kl``. Any
    other pair is ``q.rsample`` and ``kl_divergence``. ``kl`` has ``q``'s batch shape (the KL
    does not depend on the sample).
    """
    if not isinstance(sample_shape, torch.Size):
        sample_shape = torch.Size(sample_shape)
    unwrapped = _unwrap(q, prior)
    if unwrapped is None:
        if prior is None:
            raise TypeError(
                "fastgen.distributions.rsample_and_kl: prior=None means N(0, I) and needs q to be a Normal "
                f"or an Independent of one, got {type(q).__name__}; pass the prior"
            )
        return q.rsample(sample_shape), td.kl_divergence(q, prior)
    base, event_dims, prior_base = unwrapped
    shape = base._batch_shape
    count = math.prod(sample_shape)
    if count > 0:
        try:
            standard = prior_base is None or _is_standard(prior_base, shape)
            loc, logvar = base.loc, _logvar_operand(base, shape, False)
            samples = count if sample_shape else None
            if standard:
                z, kl = _ops.reparameterize_kl(loc, logvar, num_samples=samples, event_dims=event_dims)
            else:
                z = _ops.reparameterize(loc, logvar, num_samples=samples)
                kl = _fused_normal_kl(base, prior_base, event_dims)
            if len(sample_shape) > 1:
                z = z.reshape(sample_shape + z.shape[1:])
            return z, kl
        except _OP_ERRORS:
            pass
    z = q.rsample(sample_shape)
    if prior is None:
        kl = _ops.gaussian_kl(base.loc, _logvar_operand(base, shape, False), event_dims=event_dims)
        if kl.shape != shape[: len(shape) - event_dims]:
            kl = kl.expand(shape[: len(shape) - event_dims]).contiguous()
        return z, kl
    return z, td.kl_divergence(q, prior)
