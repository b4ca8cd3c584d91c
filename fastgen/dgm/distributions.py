r"""Distribution API: each network hides inside a (conditional) probability distribution.

A distribution names the variables it is over (``var``) and the ones it is conditioned on
(``cond_var``). A conditional distribution is a subclass whose ``forward`` takes the
conditioning variables as keyword arguments and returns the distribution's parameters::

    class Inference(Normal):                      # q(z|x)
        def __init__(self):
            super().__init__(cond_var=["x"], var=["z"], name="q")
            self.net = nn.Linear(64, 2 * 16)

        def forward(self, x):
            loc, raw = self.net(x).chunk(2, dim=-1)
            return {"loc": loc, "scale": F.softplus(raw)}

An unconditioned distribution takes its parameters at construction, fixed (tensors or
floats: buffers) or learnable (``nn.Parameter``)::

    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[16], name="p_{prior}")

=============  =========================================  =================================
family         parameters (one of)                        value
=============  =========================================  =================================
``Normal``     ``loc`` + ``scale``, ``loc`` + ``logvar``   real tensor
``Bernoulli``  ``probs``, ``logits``                      tensor in ``[0, 1]`` (soft allowed)
``Categorical````probs``, ``logits`` (last dim: classes)  one-hot float tensor
=============  =========================================  =================================

Every method that reads variables takes a dict ``x_dict`` from names to tensors:
``sample(x_dict, reparam=True)`` returns it extended with the drawn variables,
``log_prob().eval(x_dict)`` the log-density (summed over the features),
``get_params(x_dict)`` the parameters ``forward`` returned. ``p(x|z) * p(z)`` builds the
joint ``p(x,z)``; ``prob_text`` and ``print(p)`` show the factorization.

The event dimensions (summed by ``log_prob``, KL and entropy) are the last
``len(features_shape)`` ones when ``features_shape`` is given, otherwise all but the first
(batch) dimension of the parameters. Densities, samples, KL divergences and entropies run on
fastgen's fused ops (``reparameterize``, ``gaussian_log_likelihood``,
``bernoulli_log_likelihood``, ``gaussian_kl``, ``reparameterize_kl``).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastgen import ops as _ops

__all__ = ["Distribution", "Normal", "Bernoulli", "Categorical", "Joint", "DistributionError"]

_HALF_LOG_TWO_PI_E = 0.5 * (1.0 + math.log(2.0 * math.pi))


class DistributionError(ValueError):
    """A distribution was built or used with variables, parameters or shapes that do not fit."""


# -- the per-evaluation context ---------------------------------------------------------------

class EvalContext:
    """What one evaluation (one ``loss.eval`` / ``sample`` call) shares between its terms.

    * ``params``: per (network, input tensors), ``[normalized parameters, inputs, fused slot]``,
      so a network runs once per evaluation however many terms read it; the slot holds the
      draw (until a term takes it) and the KL to N(0, I) of one ``reparameterize_kl`` call;
    * ``fusable``: the distributions whose draw and KL to N(0, I) are fused that way (chosen
      once per loss, see ``fastgen.dgm.losses``);
    * ``generator``: the torch generator every draw uses (``None``: the device's default).
    """

    __slots__ = ("params", "fusable", "generator")

    def __init__(self, generator: torch.Generator | None = None, fusable: frozenset = frozenset()) -> None:
        self.params: dict = {}
        self.fusable = fusable
        self.generator = generator


def _names(value, argument: str, owner: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) and name for name in value):
        raise DistributionError(f"{owner}: {argument} must be a list of variable names (strings), got {value!r}")
    return list(value)


def _fmt_shape(shape) -> str:
    return str(tuple(shape))


class Distribution(nn.Module):
    """Base class of every distribution: variables, names, parameters, sampling and text.

    Subclasses set the family (``Normal``, ...); users subclass a family and define
    ``forward(**cond)``. See the module docstring.
    """

    #: family name used in messages (``Normal``, ...)
    family = "Distribution"
    #: the alternative sets of parameter names ``forward`` may return
    param_sets: tuple[frozenset, ...] = ()
    #: whether ``sample(reparam=True)`` gives a sample differentiable in the parameters
    reparameterizable = False

    def __init__(self, *, var, cond_var=(), name: str = "p", features_shape=(), **params) -> None:
        super().__init__()
        if not isinstance(name, str) or not name:
            raise DistributionError(f"the name of a distribution must be a non-empty string, got {name!r}")
        self._name = name
        owner = f"{self.family} {name}"
        var = _names(var, "var", owner)
        cond_var = _names(cond_var, "cond_var", owner)
        if not var:
            raise DistributionError(f"{owner}: var must name at least one variable")
        repeated = sorted({n for n in var + cond_var if (var + cond_var).count(n) > 1})
        if repeated:
            raise DistributionError(f"{owner}: variables {repeated} appear more than once in var + cond_var")
        if len(var) != 1 and self.family != "Joint":
            raise DistributionError(f"{owner}: a {self.family} is over one variable, got var={var}; "
                                    f"multiply distributions (p(a) * p(b|a)) for several")
        self._var = var
        self._var0 = var[0]
        self._base_id = id(self)
        self._cond_var = cond_var
        self._cond_tuple = tuple(cond_var)
        self._forward_names = self._cond_tuple  # the keywords forward takes (a renamed view keeps them)
        self._origin = None  # the distribution a renamed view shares its network with
        self._features_shape = torch.Size(tuple(features_shape))
        self._event_dims = len(self._features_shape) or None
        self._check_forward_signature()
        self._fixed: dict[str, Tensor] = {}
        self._std_cache = None
        given = {key: value for key, value in params.items() if value is not None}
        if not cond_var and not self._features_shape and given:
            # an unconditioned distribution is over tensors shaped like its parameters
            try:
                shape = torch.broadcast_shapes(*[torch.as_tensor(v).shape for v in given.values()])
            except RuntimeError:
                raise DistributionError(f"{self.family} {name}: parameters {sorted(given)} do not broadcast "
                                        f"together") from None
            self._features_shape = torch.Size(shape)
            self._event_dims = len(shape) or None
        unknown = sorted(set(given) - set().union(*self.param_sets)) if self.param_sets else sorted(given)
        if unknown:
            raise DistributionError(f"{self.text_name}: unknown parameters {unknown}; a {self.family} takes "
                                    f"{self._param_sets_text()}")
        for key, value in given.items():
            self._set_fixed(key, value)
        overridden = type(self).forward is not Distribution.forward
        # parameters given at construction complete what a forward returns (a fixed scale, say)
        self._merge_fixed = bool(self._fixed) and overridden
        # only an unconditioned distribution with fixed (buffer) parameters can be N(0, I)
        self._std_never = bool(cond_var) or overridden or any(isinstance(v, nn.Parameter)
                                                                for v in self._fixed.values())
        if not cond_var and type(self).forward is Distribution.forward:
            keys = frozenset(self._fixed)
            if keys not in self.param_sets:
                raise DistributionError(f"{self.text_name} has no cond_var, so its parameters must be given at "
                                        f"construction: {self._param_sets_text()}; got {sorted(keys) or 'none'}")

    # -- construction helpers ----------------------------------------------------------------
    def _set_fixed(self, key: str, value) -> None:
        if isinstance(value, nn.Parameter):
            self.register_parameter(key, value)
            self._fixed[key] = value
            return
        tensor = torch.as_tensor(value, dtype=torch.get_default_dtype()) if not isinstance(value, Tensor) else value
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.get_default_dtype())
        if self._features_shape and tensor.shape != self._features_shape:
            try:
                tensor = tensor.expand(self._features_shape)
            except RuntimeError:
                raise DistributionError(f"{self.text_name}: parameter {key} of shape {_fmt_shape(tensor.shape)} does "
                                        f"not broadcast to features_shape {_fmt_shape(self._features_shape)}") from None
        tensor = tensor.detach().clone().contiguous()
        self.register_buffer(key, tensor)
        self._fixed[key] = tensor

    def _fixed_values(self) -> dict[str, Tensor]:
        # buffers move with .to(); read them back from the module, not from the dict
        buffers, parameters = self._buffers, self._parameters
        return {key: buffers[key] if key in buffers else parameters[key] for key in self._fixed}

    def _check_forward_signature(self) -> None:
        forward = type(self).forward
        if forward is Distribution.forward and self._cond_var:
            raise DistributionError(f"{self.text_name} is conditioned on {self._cond_var}: subclass {self.family} "
                                    f"and define forward({', '.join(self._cond_var)}) returning its parameters "
                                    f"({self._param_sets_text()})")
        if forward is Distribution.forward or not self._cond_var:
            return
        try:
            parameters = inspect.signature(forward).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins, C extensions
            return
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return
        missing = [n for n in self._cond_var if n not in parameters]
        if missing:
            names = ", ".join(list(parameters)[1:])
            raise DistributionError(f"{self.text_name}: {type(self).__name__}.forward({names}) must take its "
                                    f"conditioning variables {self._cond_var} as keyword arguments; it lacks {missing}")

    def _param_sets_text(self) -> str:
        return " or ".join("{" + ", ".join(sorted(s)) + "}" for s in self.param_sets)

    # -- names and text ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise DistributionError(f"the name of a distribution must be a non-empty string, got {value!r}")
        self._name = value

    @property
    def var(self) -> list[str]:
        """Variables this distribution is over."""
        return list(self._var)

    @property
    def cond_var(self) -> list[str]:
        """Variables this distribution is conditioned on."""
        return list(self._cond_var)

    @property
    def input_var(self) -> list[str]:
        """Variables needed to compute the parameters (the conditioning variables)."""
        return list(self._cond_var)

    @property
    def features_shape(self) -> torch.Size:
        return self._features_shape

    @property
    def distribution_name(self) -> str:
        return self.family

    @property
    def prob_text(self) -> str:
        """``name(var|cond_var)``, e.g. ``q(z|x)``."""
        text = ",".join(self._var)
        if self._cond_var:
            text += "|" + ",".join(self._cond_var)
        return f"{self._name}({text})"

    @property
    def prob_factorized_text(self) -> str:
        return self.prob_text

    @property
    def prob_joint_factorized_and_text(self) -> str:
        """``p(x,z) = p(x|z)p(z)`` for a joint, the ``prob_text`` otherwise."""
        joint, factorized = self.prob_text, self.prob_factorized_text
        return joint if joint == factorized else f"{joint} = {factorized}"

    @property
    def text_name(self) -> str:
        """How messages name this distribution: ``Normal q(z|x)``."""
        return f"{self.family} {self.prob_text}"

    def __str__(self) -> str:
        lines = ["Distribution:", "  " + self.prob_joint_factorized_and_text, "Network architecture:"]
        for factor in self._factors():
            lines.append(f"  {factor.family}(name={factor.name}, var={factor.var}, cond_var={factor.cond_var}, "
                         f"features_shape={tuple(factor.features_shape)})")
            body = nn.Module.__repr__(factor).splitlines()
            if len(body) > 1:
                lines += ["    " + line for line in body[1:-1]]
        return "\n".join(lines)

    def _factors(self) -> list["Distribution"]:
        return [self]

    # -- the user's part ---------------------------------------------------------------------
    def forward(self, **cond) -> dict[str, Tensor]:
        """Parameters of the distribution given the conditioning variables (override this)."""
        if self._cond_var:
            raise NotImplementedError(f"{self.text_name} is conditioned on {self._cond_var}: its class must "
                                      f"define forward({', '.join(self._cond_var)}) returning "
                                      f"{self._param_sets_text()}")
        return self._fixed_values()

    # -- parameters --------------------------------------------------------------------------
    def _base(self) -> "Distribution":
        """The distribution that owns the network (a renamed view returns the one it renames)."""
        return self._origin if self._origin is not None else self

    def _entry(self, x_dict: Mapping, ctx: EvalContext) -> list:
        """``[normalized params, inputs, fused slot]`` of this evaluation for the inputs in ``x_dict``.

        One entry per (network, input tensors): every term of a loss that reads the same
        distribution on the same tensors shares it, so the network runs once.
        """
        names = self._cond_tuple
        try:
            if len(names) == 1:
                inputs = (x_dict[names[0]],)
                key = (self._base_id, id(inputs[0]))
            elif names:
                inputs = tuple([x_dict[n] for n in names])
                key = (self._base_id,) + tuple([id(t) for t in inputs])
            else:
                inputs, key = (), (self._base_id,)
        except KeyError as error:
            raise self._missing(error.args[0], x_dict) from None
        entry = ctx.params.get(key)
        if entry is None:
            entry = ctx.params[key] = [self._normalize(self._raw_params(inputs)), inputs, None]
        return entry

    def _gather(self, x_dict: Mapping) -> tuple:
        try:
            return tuple([x_dict[n] for n in self._cond_tuple])
        except KeyError as error:
            raise self._missing(error.args[0], x_dict) from None
        except TypeError:
            raise DistributionError(f"{self.text_name}: x_dict must be a dict of variable names to tensors, "
                                    f"got {type(x_dict).__name__}") from None

    def _missing(self, name: str, x_dict: Mapping) -> DistributionError:
        return DistributionError(f"{self.text_name} needs variable '{name}', which x_dict lacks "
                                 f"(x_dict has {sorted(x_dict)}): pass it, or put a distribution that provides "
                                 f"'{name}' before this one")

    def _raw_params(self, inputs: tuple) -> dict[str, Tensor]:
        """``forward``'s output for the conditioning tensors ``inputs``, keys checked."""
        names = self._forward_names
        if len(names) == 1:
            out = self(**{names[0]: inputs[0]})
        elif names:
            out = self(**dict(zip(names, inputs)))
        else:
            out = self.forward()
        if type(out) is not dict:
            if not isinstance(out, Mapping):
                raise DistributionError(f"{self.text_name}: forward must return a dict of parameters "
                                        f"({self._param_sets_text()}), got {type(out).__name__}")
            out = dict(out)
        if self._merge_fixed:
            out = {**self._fixed_values(), **out}
        return out

    def _bad_keys(self, out: Mapping) -> DistributionError:
        return DistributionError(f"{self.text_name}: forward returned parameters {sorted(out)}; a {self.family} "
                                 f"needs exactly {self._param_sets_text()}")

    def _normalize(self, out: dict[str, Tensor]) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    def params(self, x_dict: Mapping, ctx: EvalContext | None = None) -> tuple:
        """Normalized parameters (the family's kernel inputs) for ``x_dict``, cached in ``ctx``."""
        if ctx is None:
            return self._normalize(self._raw_params(self._gather(x_dict)))
        return self._entry(x_dict, ctx)[0]

    def get_params(self, x_dict: Mapping | None = None) -> dict[str, Tensor]:
        """The parameters ``forward`` returns for the conditioning variables in ``x_dict``."""
        return self._raw_params(self._gather(_as_dict(self, x_dict)))

    def _check_features(self, key: str, tensor: Tensor) -> None:
        fs = self._features_shape
        if fs and tensor.shape[-len(fs):] != fs:
            raise DistributionError(f"{self.text_name}: parameter {key} has shape {_fmt_shape(tensor.shape)}, whose "
                                    f"last dims should be features_shape {_fmt_shape(fs)}")

    def event_dims(self, tensor: Tensor) -> int:
        """Event dimensions of ``tensor`` (a parameter or a value of this distribution)."""
        if self._event_dims is not None:
            return self._event_dims
        return tensor.dim() - 1 if tensor.dim() > 0 else 0

    # -- family kernels (normalized parameters) -----------------------------------------------
    def _log_prob(self, params: tuple, value: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _draw(self, params: tuple, reparam: bool, ctx: EvalContext, num_samples: int | None = None) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def _entropy(self, params: tuple) -> Tensor:
        raise NotImplementedError(f"{self.text_name} has no closed-form entropy")

    def _check_value(self, name: str, value: Tensor, like: Tensor) -> None:
        if not isinstance(value, Tensor):
            raise DistributionError(f"{self.text_name}: variable '{name}' must be a tensor, got {type(value).__name__}")
        ed = self.event_dims(value)
        if ed and like.dim() and (like.dim() < ed or value.shape[-ed:] != like.shape[-ed:]):
            raise DistributionError(f"{self.text_name}: variable '{name}' has shape {_fmt_shape(value.shape)}, whose "
                                    f"last {ed} dims do not match the distribution's parameters of shape "
                                    f"{_fmt_shape(like.shape)}")

    # -- evaluation used by the losses ---------------------------------------------------------
    def _sample_into(self, x_dict: dict, ctx: EvalContext, reparam: bool, batch_n: int | None = None,
                     num_samples: int | None = None) -> dict:
        """Draw this distribution's variable given ``x_dict``; returns the new variables."""
        entry = self._entry(x_dict, ctx)
        if not self._cond_tuple:
            return {self._var0: self._draw(self._expand(entry[0], x_dict, batch_n), reparam, ctx, num_samples)}
        if num_samples is None and reparam and self._base_id in ctx.fusable:
            return {self._var0: self._fused_sample(entry, ctx)}
        return {self._var0: self._draw(entry[0], reparam, ctx, num_samples)}

    def _expand(self, params: tuple, x_dict: Mapping, batch_n: int | None) -> tuple:
        if batch_n is None:
            batch_n = _batch_size(x_dict)
        shape = (batch_n,) + tuple(self._features_shape or params[0].shape)
        return tuple(p.expand(shape) for p in params)

    def _log_prob_of(self, x_dict: Mapping, ctx: EvalContext) -> Tensor:
        params = self._entry(x_dict, ctx)[0]
        name = self._var0
        try:
            value = x_dict[name]
        except KeyError:
            raise DistributionError(f"{self.text_name}: log_prob needs the value of '{name}', which x_dict lacks "
                                    f"(x_dict has {sorted(x_dict)})") from None
        self._check_value(name, value, params[0])
        return self._log_prob(params, value)

    # -- public API ----------------------------------------------------------------------------
    def sample(self, x_dict: Mapping | Tensor | None = None, batch_n: int | None = None, sample_shape=torch.Size(),
               return_all: bool = True, reparam: bool = False, generator: torch.Generator | None = None) -> dict:
        """Draw the variables of this distribution given the conditioning ones in ``x_dict``.

        Returns ``x_dict`` extended with the drawn variables (only those with
        ``return_all=False``). ``reparam=True`` keeps the sample differentiable in the
        parameters (Normal only; others draw without gradient). An unconditioned distribution
        draws ``batch_n`` rows (default: the batch size of the tensors in ``x_dict``, else 1);
        ``sample_shape=(K,)`` draws ``K`` samples stacked in front.
        """
        x_dict = _as_dict(self, x_dict)
        num_samples = _num_samples(sample_shape)
        ctx = EvalContext(generator)
        new = self._sample_all(dict(x_dict), ctx, reparam, batch_n, num_samples)
        if not return_all:
            return new
        out = dict(x_dict)
        out.update(new)
        return out

    def sample_mean(self, x_dict: Mapping | Tensor | None = None) -> Tensor:
        """The mean of the distribution given the conditioning variables (``loc``, or the probabilities)."""
        return self._mean(self.params(_as_dict(self, x_dict)))

    def _mean(self, params: tuple) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{self.text_name} has no mean here")

    def _sample_all(self, x_dict: dict, ctx: EvalContext, reparam: bool, batch_n, num_samples) -> dict:
        if reparam or not torch.is_grad_enabled():
            return self._sample_into(x_dict, ctx, reparam, batch_n, num_samples)
        with torch.no_grad():
            return self._sample_into(x_dict, ctx, reparam, batch_n, num_samples)

    def log_prob(self):
        """The loss ``log p(var|cond_var)`` (summed over the features): evaluate it with ``.eval(x_dict)``."""
        from .losses import LogProb

        return LogProb(self)

    def prob(self):
        """The loss ``p(var|cond_var)`` (the exponent of :meth:`log_prob`)."""
        from .losses import Prob

        return Prob(self)

    def get_log_prob(self, x_dict: Mapping) -> Tensor:
        """``log p(var|cond_var)`` for the values in ``x_dict``, summed over the features."""
        return self.log_prob().eval(x_dict)

    def get_entropy(self, x_dict: Mapping | None = None) -> Tensor:
        """Closed-form entropy given the conditioning variables in ``x_dict``."""
        from .losses import Entropy

        return Entropy(self).eval(x_dict)

    # -- joints and views ----------------------------------------------------------------------
    def __mul__(self, other: "Distribution") -> "Joint":
        if not isinstance(other, Distribution):
            return NotImplemented
        return Joint(self, other)

    def replace_var(self, **names: str) -> "Distribution":
        """A view of this distribution (same network and parameters) reading other variable names.

        ``q.replace_var(x="x_u")`` is ``q(z|x_u)``: it reads ``x_u`` from ``x_dict`` where
        ``q`` reads ``x`` -- how one set of networks serves a labeled and an unlabeled batch.
        """
        if isinstance(self, Joint):
            return Joint(*[f.replace_var(**{k: v for k, v in names.items() if k in f._var or k in f._cond_var})
                           for f in self._text_order])
        known = set(self._var) | set(self._cond_var)
        unknown = sorted(set(names) - known)
        if unknown:
            raise DistributionError(f"{self.text_name}: replace_var got {unknown}, which are not its variables "
                                    f"({sorted(known)})")
        bad = [v for v in names.values() if not isinstance(v, str) or not v]
        if bad:
            raise DistributionError(f"{self.text_name}: replace_var needs non-empty names, got {bad}")
        # A shallow copy shares the module's parameter, buffer and submodule dicts: the view runs
        # the same network with the same weights and only reads other names from x_dict.
        view = copy.copy(self)
        view._var = [names.get(v, v) for v in self._var]
        view._cond_var = [names.get(v, v) for v in self._cond_var]
        view._cond_tuple = tuple(view._cond_var)
        view._origin = self._base()
        view._base_id = id(view._origin)
        view._var0 = view._var[0]
        view._std_cache = None
        all_names = view._var + view._cond_var
        if len(set(all_names)) != len(all_names):
            raise DistributionError(f"{self.text_name}: replace_var({names}) gives two variables the same name")
        return view


def _as_dict(owner: Distribution, x_dict) -> dict:
    if x_dict is None:
        return {}
    if isinstance(x_dict, Tensor):
        if len(owner.input_var) != 1:
            raise DistributionError(f"{owner.text_name}: a bare tensor can stand for one conditioning variable only; "
                                    f"pass a dict with {owner.input_var}")
        return {owner.input_var[0]: x_dict}
    if isinstance(x_dict, (list, tuple)):
        if len(x_dict) != len(owner.input_var):
            raise DistributionError(f"{owner.text_name}: got {len(x_dict)} tensors for the variables {owner.input_var}")
        return dict(zip(owner.input_var, x_dict))
    if not isinstance(x_dict, Mapping):
        raise DistributionError(f"{owner.text_name}: x_dict must be a dict of variable names to tensors, "
                                f"got {type(x_dict).__name__}")
    return x_dict if isinstance(x_dict, dict) else dict(x_dict)


def _batch_size(x_dict: Mapping) -> int:
    for value in x_dict.values():
        if isinstance(value, Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


def _num_samples(sample_shape) -> int | None:
    shape = torch.Size(sample_shape if not isinstance(sample_shape, int) else (sample_shape,))
    if len(shape) == 0:
        return None
    if len(shape) > 1:
        raise DistributionError(f"sample_shape must have at most one dimension (the number of samples), got {tuple(shape)}")
    return shape[0]


# -- families ----------------------------------------------------------------------------------

_NORMAL_SCALE = frozenset(("loc", "scale"))
_NORMAL_LOGVAR = frozenset(("loc", "logvar"))


class Normal(Distribution):
    r"""Diagonal Gaussian :math:`\mathcal N(\mathrm{loc}, \mathrm{scale}^2)`.

    ``forward`` returns ``{"loc", "scale"}`` or ``{"loc", "logvar"}`` (a log-variance goes to
    the kernels as is; a scale costs one ``log``). Sampling is reparameterized
    (``fastgen.reparameterize``), ``log_prob`` is ``gaussian_log_likelihood``, the KL to
    another Normal is ``gaussian_kl``, and a sample taken together with the KL to
    :math:`\mathcal N(0, I)` in one loss comes from one ``reparameterize_kl`` call.
    """

    family = "Normal"
    param_sets = (_NORMAL_SCALE, _NORMAL_LOGVAR)
    reparameterizable = True

    def __init__(self, *, var=("x",), cond_var=(), name: str = "p", features_shape=(), loc=None, scale=None,
                 logvar=None) -> None:
        super().__init__(var=var, cond_var=cond_var, name=name, features_shape=features_shape, loc=loc, scale=scale,
                         logvar=logvar)

    def _normalize(self, out: dict) -> tuple:
        keys = out.keys()
        if keys == _NORMAL_SCALE:
            loc, scale = out["loc"], out["scale"]
            self._check_params(loc, scale, "scale")
            # log's backward reads its input, so doubling its fresh output in place is safe
            return loc, torch.log(scale).mul_(2.0)
        if keys == _NORMAL_LOGVAR:
            loc, logvar = out["loc"], out["logvar"]
            self._check_params(loc, logvar, "logvar")
            return loc, logvar
        raise self._bad_keys(out)

    def _check_params(self, loc, spread, key: str) -> None:
        if not (isinstance(loc, Tensor) and isinstance(spread, Tensor)):
            bad = "loc" if not isinstance(loc, Tensor) else key
            value = loc if bad == "loc" else spread
            raise DistributionError(f"{self.text_name}: parameter {bad} must be a tensor, got {type(value).__name__}")
        if self._features_shape:
            self._check_features("loc", loc)

    def _mean(self, params: tuple) -> Tensor:
        return params[0]

    def _log_prob(self, params: tuple, value: Tensor) -> Tensor:
        loc, logvar = params
        return _ops.gaussian_log_likelihood(value, loc, logvar, event_dims=self.event_dims(value))

    def _draw(self, params: tuple, reparam: bool, ctx: EvalContext, num_samples: int | None = None) -> Tensor:
        loc, logvar = params
        if loc.shape != logvar.shape:
            loc, logvar = torch.broadcast_tensors(loc, logvar)
        z = _ops.reparameterize(loc, logvar, num_samples=num_samples, generator=ctx.generator)
        return z if reparam else z.detach()

    def _entropy(self, params: tuple) -> Tensor:
        loc, logvar = params
        if logvar.shape != loc.shape:
            logvar = logvar.expand(torch.broadcast_shapes(loc.shape, logvar.shape))
        ed = self.event_dims(logvar)
        half = 0.5 * logvar
        if ed:
            half = half.sum(tuple(range(-ed, 0)))
        return half + _HALF_LOG_TWO_PI_E * math.prod(logvar.shape[logvar.dim() - ed:])

    # -- N(0, I) and the fused sample + KL --------------------------------------------------------
    def is_standard(self) -> bool:
        """Whether this is an unconditioned, fixed N(0, I) (the KL to it is the cheapest)."""
        if self._cond_tuple or self._std_never:
            return False
        buffers = self._buffers
        loc = buffers["loc"]
        spread = buffers.get("scale")
        if spread is None:
            spread = buffers["logvar"]
        cache = self._std_cache
        if cache is None or cache[0] is not loc or cache[1] is not spread or cache[2] != loc._version \
                or cache[3] != spread._version:
            target = 1.0 if "scale" in buffers else 0.0
            result = bool((loc == 0).all()) and bool((spread == target).all())
            cache = self._std_cache = (loc, spread, loc._version, spread._version, result)
        return cache[4]

    def _fused_slot(self, entry: list, ctx: EvalContext) -> list:
        """``[z or None, kl]``: the fused sample and KL to N(0, I) of this entry (drawn on first use)."""
        slot = entry[2]
        if slot is None:
            loc, logvar = entry[0]
            if loc.shape != logvar.shape:
                loc, logvar = torch.broadcast_tensors(loc, logvar)
            z, kl = _ops.reparameterize_kl(loc, logvar, generator=ctx.generator, event_dims=self.event_dims(loc))
            slot = entry[2] = [z, kl]
        return slot

    def _fused_sample(self, entry: list, ctx: EvalContext) -> Tensor:
        slot = self._fused_slot(entry, ctx)
        z = slot[0]
        if z is None:  # another term took the fused sample: this one draws its own
            return self._draw(entry[0], True, ctx)
        slot[0] = None
        return z

    def _fused_kl(self, entry: list, ctx: EvalContext) -> Tensor:
        return self._fused_slot(entry, ctx)[1]


class Bernoulli(Distribution):
    r"""Independent Bernoulli variables, from ``{"logits"}`` or ``{"probs"}``.

    ``log_prob`` is ``bernoulli_log_likelihood`` on the logits (soft targets in ``[0, 1]``
    allowed); probabilities are turned into logits stably (clamped to
    :math:`[\epsilon, 1-\epsilon]`, :math:`\epsilon` the dtype's machine epsilon, as
    ``torch.distributions`` does).
    """

    family = "Bernoulli"
    param_sets = (frozenset(("probs",)), frozenset(("logits",)))

    def __init__(self, *, var=("x",), cond_var=(), name: str = "p", features_shape=(), probs=None,
                 logits=None) -> None:
        super().__init__(var=var, cond_var=cond_var, name=name, features_shape=features_shape, probs=probs,
                         logits=logits)

    def _normalize(self, out: dict) -> tuple:
        if len(out) == 1:
            logits = out.get("logits")
            if logits is None:
                probs = out.get("probs")
                if probs is None:
                    raise self._bad_keys(out)
                if not isinstance(probs, Tensor):
                    raise DistributionError(f"{self.text_name}: parameter probs must be a tensor, "
                                            f"got {type(probs).__name__}")
                logits = torch.logit(probs, eps=torch.finfo(probs.dtype).eps)
                key = "probs"
            else:
                key = "logits"
                if not isinstance(logits, Tensor):
                    raise DistributionError(f"{self.text_name}: parameter logits must be a tensor, "
                                            f"got {type(logits).__name__}")
            if self._features_shape:
                self._check_features(key, logits)
            return (logits,)
        raise self._bad_keys(out)

    def _mean(self, params: tuple) -> Tensor:
        return torch.sigmoid(params[0])

    def _log_prob(self, params: tuple, value: Tensor) -> Tensor:
        return _ops.bernoulli_log_likelihood(params[0], value, event_dims=self.event_dims(value))

    def _draw(self, params: tuple, reparam: bool, ctx: EvalContext, num_samples: int | None = None) -> Tensor:
        probs = torch.sigmoid(params[0].detach())
        if num_samples is not None:
            probs = probs.expand(num_samples, *probs.shape)
        return torch.bernoulli(probs, generator=ctx.generator)

    def _entropy(self, params: tuple) -> Tensor:
        logits = params[0]
        return -_ops.bernoulli_log_likelihood(logits, torch.sigmoid(logits), event_dims=self.event_dims(logits))


class Categorical(Distribution):
    r"""One categorical variable over the last dimension, from ``{"logits"}`` or ``{"probs"}``.

    Values are one-hot float vectors (what networks conditioned on the class read);
    ``log_prob`` is :math:`\sum_k y_k \log \pi_k`. ``fastgen.dgm.Expectation`` over a
    Categorical enumerates the classes (exact, differentiable in the probabilities) instead of
    sampling. ``features_shape`` defaults to the number of classes when the parameters are
    given at construction (a fixed prior ``Categorical(probs=torch.full((10,), 0.1), ...)``).
    """

    family = "Categorical"
    param_sets = (frozenset(("probs",)), frozenset(("logits",)))

    def __init__(self, *, var=("x",), cond_var=(), name: str = "p", features_shape=(), probs=None,
                 logits=None) -> None:
        if not cond_var and not features_shape:
            given = probs if probs is not None else logits
            if given is not None and torch.as_tensor(given).dim() >= 1:
                features_shape = torch.as_tensor(given).shape[-1:]
        super().__init__(var=var, cond_var=cond_var, name=name, features_shape=features_shape, probs=probs,
                         logits=logits)
        if self._event_dims not in (None, 1):
            raise DistributionError(f"{self.text_name}: features_shape must be (num_classes,), "
                                    f"got {tuple(self._features_shape)}")

    def event_dims(self, tensor: Tensor) -> int:
        return 1

    def _normalize(self, out: dict) -> tuple:
        if len(out) == 1:
            logits = out.get("logits")
            if logits is not None:
                key = "logits"
                log_probs = torch.log_softmax(logits, dim=-1)
            else:
                probs = out.get("probs")
                if probs is None:
                    raise self._bad_keys(out)
                key = "probs"
                log_probs = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
            if self._features_shape:
                self._check_features(key, log_probs)
            return (log_probs,)
        raise self._bad_keys(out)

    def _mean(self, params: tuple) -> Tensor:
        return torch.exp(params[0])

    def _check_value(self, name: str, value: Tensor, like: Tensor) -> None:
        if isinstance(value, Tensor) and not value.is_floating_point():
            raise DistributionError(f"{self.text_name}: variable '{name}' must be one-hot float vectors, got dtype "
                                    f"{value.dtype}; convert class indices with "
                                    f"F.one_hot({name}, {like.shape[-1]}).float()")
        super()._check_value(name, value, like)

    def _log_prob(self, params: tuple, value: Tensor) -> Tensor:
        return (value * params[0]).sum(-1)

    def _draw(self, params: tuple, reparam: bool, ctx: EvalContext, num_samples: int | None = None) -> Tensor:
        log_probs = params[0].detach()
        classes = log_probs.shape[-1]
        flat = torch.exp(log_probs.reshape(-1, classes))
        draws = num_samples or 1
        index = torch.multinomial(flat, draws, replacement=True, generator=ctx.generator)  # (N, draws)
        one_hot = F.one_hot(index.t(), classes).to(log_probs.dtype)
        one_hot = one_hot.reshape((draws,) + tuple(log_probs.shape))
        return one_hot if num_samples is not None else one_hot[0]

    def _entropy(self, params: tuple) -> Tensor:
        log_probs = params[0]
        return -(torch.exp(log_probs) * log_probs).sum(-1)


# -- joints and renamed views ------------------------------------------------------------------

class Joint(Distribution):
    r"""The product of distributions, e.g. ``p(x|z) * p(z)`` is :math:`p(x,z) = p(x|z)\,p(z)`.

    Its variables are every factor's; its conditioning variables those no factor provides.
    Factors are ordered once so that each comes after the ones providing its conditioning
    variables: ``sample`` draws them in that order, ``log_prob`` sums their log-densities.
    """

    family = "Joint"

    def __init__(self, *factors: Distribution, name: str | None = None) -> None:
        flat: list[Distribution] = []
        for factor in factors:
            if not isinstance(factor, Distribution):
                raise DistributionError(f"a joint distribution multiplies distributions, got {type(factor).__name__}")
            flat.extend(factor._factors())
        provided: dict[str, Distribution] = {}
        for factor in flat:
            for v in factor._var:
                if v in provided:
                    raise DistributionError(f"both {provided[v].prob_text} and {factor.prob_text} are over '{v}': "
                                            f"a joint distribution needs each variable from one factor")
                provided[v] = factor
        order = _sampling_order(flat, provided)
        var = [v for f in flat for v in f._var]
        cond = []
        for f in order:
            cond += [c for c in f._cond_var if c not in provided and c not in cond]
        nn.Module.__init__(self)
        self._name = name or flat[0].name  # p(x|z) * p_prior(z) is p(x,z); q(y|x) * q(z|x,y) is q(y,z|x)
        self._var, self._cond_var, self._cond_tuple = var, cond, tuple(cond)
        self._forward_names, self._origin = (), None
        self._var0, self._base_id = var[0], id(self)
        self._features_shape, self._event_dims = torch.Size(), None
        self._fixed, self._std_cache, self._std_never, self._merge_fixed = {}, None, True, False
        self._text_order = flat
        self.factors = nn.ModuleList(order)

    def _factors(self) -> list[Distribution]:
        return list(self._text_order)

    @property
    def prob_factorized_text(self) -> str:
        return "".join(f.prob_text for f in self._text_order)

    def forward(self, **cond):
        raise DistributionError(f"{self.prob_text} is a joint distribution: it has no parameters of its own "
                                f"(ask its factors: {', '.join(f.prob_text for f in self._text_order)})")

    def params(self, x_dict, ctx=None):
        return self.forward()

    def get_params(self, x_dict=None):
        return self.forward()

    def _sample_into(self, x_dict: dict, ctx: EvalContext, reparam: bool, batch_n=None, num_samples=None) -> dict:
        if num_samples is not None:
            raise DistributionError(f"{self.prob_text}: sample_shape is not supported for a joint distribution; "
                                    f"tile the conditioning variables instead")
        work = dict(x_dict)
        new = {}
        for factor in self.factors:
            drawn = factor._sample_into(work, ctx, reparam and factor.reparameterizable, batch_n)
            work.update(drawn)
            new.update(drawn)
        return new

    def _log_prob_of(self, x_dict: Mapping, ctx: EvalContext) -> Tensor:
        total = None
        for factor in self.factors:
            term = factor._log_prob_of(x_dict, ctx)
            total = term if total is None else total + term
        return total

    @property
    def reparameterizable(self) -> bool:  # type: ignore[override]
        return all(f.reparameterizable for f in self.factors)


def _sampling_order(factors: list[Distribution], provided: Mapping[str, Distribution]) -> list[Distribution]:
    order, done, visiting = [], set(), set()

    def visit(factor):
        if id(factor) in done:
            return
        if id(factor) in visiting:
            raise DistributionError(f"the factors of the joint distribution depend on each other in a cycle "
                                    f"(through {factor.prob_text})")
        visiting.add(id(factor))
        for c in factor._cond_var:
            parent = provided.get(c)
            if parent is not None:
                visit(parent)
        visiting.discard(id(factor))
        done.add(id(factor))
        order.append(factor)

    for factor in factors:
        visit(factor)
    return order
