r"""Loss API: a model is its objective, written with the distributions it is made of.

::

    loss = (KullbackLeibler(q, prior) + StochasticReconstructionLoss(q, p)).mean()   # -ELBO
    loss.eval({"x": x})            # a scalar tensor, differentiable
    print(loss.loss_text)          # mean(KL[q(z|x)||p_{prior}(z)] - E_{q(z|x)}[log p(x|z)])

=====================================  ===============================================  =======================
loss                                   value (per sample, features summed)              kernel
=====================================  ===============================================  =======================
``LogProb(p)``                         :math:`\log p(x\mid z)`                          the family's likelihood
``Prob(p)``                            :math:`p(x\mid z)`                               ``exp`` of the above
``KullbackLeibler(p, q)``              :math:`\mathrm{KL}(p\,\|\,q)`, closed form        ``gaussian_kl``, ...
``Entropy(p)``                         :math:`H[p]`, closed form
``Expectation(p, f)``                  :math:`\mathbb E_{p}[f]`: one reparameterized
                                       draw, or every class of a ``Categorical``
``StochasticReconstructionLoss(q, p)`` :math:`-\mathbb E_{q(z\mid x)}[\log p(x\mid z)]`
=====================================  ===============================================  =======================

Losses combine with ``+ - * /`` (with each other and with numbers), ``-loss``, ``.mean()``,
``.sum()``, ``.abs()``; ``loss_text`` shows the formula.

How an evaluation runs: every ``eval`` shares one context between its terms, so a network
runs once per evaluation however many terms read its distribution, and the kernels are picked
per term -- the KL of a Normal to another is ``gaussian_kl`` (the standard Normal prior passes
no prior tensors at all), a Bernoulli likelihood is ``bernoulli_log_likelihood``, and when one
loss both draws ``z ~ q`` (by reparameterization) and needs ``KL(q || N(0, I))``, the draw and the KL
come from one ``reparameterize_kl`` call. Which distributions get that fusion is decided once per
loss, at its first evaluation; the draw is the one ``fastgen.reparameterize`` would give for the
same generator state, so fusing never changes a value.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch
from torch import Tensor

from fastgen import ops as _ops

from .distributions import Categorical, Distribution, EvalContext, Joint, Normal

__all__ = ["Loss", "LossError", "LogProb", "Prob", "KullbackLeibler", "Entropy", "Expectation",
           "StochasticReconstructionLoss", "Constant", "Terms"]


class LossError(ValueError):
    """A loss was built from distributions that do not fit together, or evaluated without its variables."""


def _unique(names) -> list[str]:
    out: list[str] = []
    for name in names:
        if name not in out:
            out.append(name)
    return out


# Precedences for the text of a loss (higher binds tighter).
_ADD, _MUL, _UNARY, _ATOM = 1, 2, 3, 4


class Loss:
    """Base class: an expression over distributions that evaluates to a tensor.

    ``input_var`` lists the variables ``eval`` must find in ``x_dict``.
    """

    _precedence = _ATOM
    #: ``_eval_negated(x_dict, ctx)`` gives ``-value`` without a negation op, where a loss has one
    _eval_negated = None

    def __init__(self, input_var=()) -> None:
        self._input_var = _unique(input_var)
        self._fusable: frozenset | None = None

    # -- what it reads, how it reads ------------------------------------------------------------
    @property
    def input_var(self) -> list[str]:
        return list(self._input_var)

    @property
    def loss_text(self) -> str:
        return self._text()

    def _text(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.loss_text

    def _children(self) -> tuple["Loss", ...]:
        return ()

    def _distributions(self) -> list[Distribution]:
        return []

    # -- evaluation ----------------------------------------------------------------------------
    def eval(self, x_dict: Mapping | None = None, return_dict: bool = False, *,
             generator: torch.Generator | None = None):
        """The value of the loss for the variables in ``x_dict``.

        ``generator`` feeds every draw (default: the device's generator).
        ``return_dict=True`` returns ``(value, x_dict)``.
        """
        if x_dict is None:
            x_dict = {}
        elif type(x_dict) is not dict:
            if not isinstance(x_dict, Mapping):
                raise LossError(f"{self.loss_text}: x_dict must be a dict of variable names to tensors, "
                                f"got {type(x_dict).__name__}")
            x_dict = dict(x_dict)
        fusable = self._fusable
        if fusable is None:
            fusable = self._fusable = _fusion_plan([self])
        value = self._eval(x_dict, EvalContext(generator, fusable))
        return (value, x_dict) if return_dict else value

    def _eval(self, x_dict: dict, ctx: EvalContext) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- arithmetic ----------------------------------------------------------------------------
    def __add__(self, other):
        return _Binary(self, _wrap(other), "+")

    def __radd__(self, other):
        return _Binary(_wrap(other), self, "+")

    def __sub__(self, other):
        return _Binary(self, _wrap(other), "-")

    def __rsub__(self, other):
        return _Binary(_wrap(other), self, "-")

    def __mul__(self, other):
        return _Binary(self, _wrap(other), "*")

    def __rmul__(self, other):
        return _Binary(_wrap(other), self, "*")

    def __truediv__(self, other):
        return _Binary(self, _wrap(other), "/")

    def __rtruediv__(self, other):
        return _Binary(_wrap(other), self, "/")

    def __neg__(self):
        return _Unary(self, "neg")

    def mean(self) -> "Loss":
        """The mean over every element (the batch): a scalar."""
        return _Unary(self, "mean")

    def sum(self) -> "Loss":
        """The sum over every element (the batch): a scalar."""
        return _Unary(self, "sum")

    def abs(self) -> "Loss":
        return _Unary(self, "abs")

    def expectation(self, p: Distribution, **kwargs) -> "Expectation":
        """``E_p[self]``: see :class:`Expectation`."""
        return Expectation(p, self, **kwargs)


def _wrap(value) -> Loss:
    if isinstance(value, Loss):
        return value
    if isinstance(value, numbers.Real) or (isinstance(value, Tensor) and value.dim() == 0):
        return Constant(value)
    raise LossError(f"losses combine with losses and numbers, got {type(value).__name__}")


class Constant(Loss):
    """A number (or a 0-dim tensor, e.g. an annealed weight changed in place) inside a loss."""

    def __init__(self, value) -> None:
        super().__init__()
        self.value = value

    def _text(self) -> str:
        value = float(self.value) if isinstance(self.value, Tensor) else self.value
        return f"{value:g}" if isinstance(value, float) else str(value)

    def _eval(self, x_dict, ctx):
        return self.value if isinstance(self.value, Tensor) else torch.tensor(self.value)


class _Binary(Loss):
    _functions = {"+": torch.add, "-": torch.sub, "*": torch.mul, "/": torch.div}
    _precedences = {"+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL}

    def __init__(self, a: Loss, b: Loss, symbol: str) -> None:
        super().__init__(a._input_var + b._input_var)
        self.a, self.b, self.symbol = a, b, symbol
        self._precedence = self._precedences[symbol]
        # numbers stay Python numbers: torch takes them without building a tensor each call
        self._a_const = a.value if isinstance(a, Constant) and not isinstance(a.value, Tensor) else None
        self._b_const = b.value if isinstance(b, Constant) and not isinstance(b.value, Tensor) else None
        # a + (-c) is computed as a - c (and a - (-c) as a + c): one op fewer, in backward too
        self._b_negated = symbol in "+-" and self._b_const is None and b._eval_negated is not None

    def _children(self):
        return (self.a, self.b)

    def _text(self) -> str:
        left = self.a._text()
        if self.a._precedence < self._precedence:
            left = f"({left})"
        right = self.b._text()
        if self.symbol == "+" and right.startswith("-") and self.b._precedence >= _MUL:
            return f"{left} - {right[1:]}"  # a + -E[...] reads a - E[...]
        # a - (b + c), a / (b * c), a - -b
        if self.b._precedence < self._precedence or (self.b._precedence == self._precedence and self.symbol in "-/") \
                or right.startswith("-"):
            right = f"({right})"
        return f"{left} {self.symbol} {right}"

    def _eval(self, x_dict, ctx):
        symbol = self.symbol
        a = self._a_const if self._a_const is not None else self.a._eval(x_dict, ctx)
        if self._b_negated:
            c = self.b._eval_negated(x_dict, ctx)
            return a - c if symbol == "+" else a + c
        b = self._b_const if self._b_const is not None else self.b._eval(x_dict, ctx)
        if symbol == "+":
            return a + b
        if symbol == "-":
            return a - b
        if symbol == "*":
            return a * b
        return a / b


class _Unary(Loss):
    def __init__(self, a: Loss, kind: str) -> None:
        super().__init__(a._input_var)
        self.a, self.kind = a, kind
        self._precedence = _UNARY if kind == "neg" else _ATOM
        if kind == "neg":
            self._eval_negated = self._neg_inner

    def _children(self):
        return (self.a,)

    def _text(self) -> str:
        inner = self.a._text()
        if self.kind == "neg":
            return f"-({inner})" if self.a._precedence < _UNARY or inner.startswith("-") else f"-{inner}"
        if self.kind == "abs":
            return f"|{inner}|"
        return f"{self.kind}({inner})"

    def _neg_inner(self, x_dict, ctx):
        return self.a._eval(x_dict, ctx)

    def _eval(self, x_dict, ctx):
        value = self.a._eval(x_dict, ctx)
        kind = self.kind
        if kind == "mean":
            return value.mean()
        if kind == "sum":
            return value.sum()
        if kind == "neg":
            return -value
        return value.abs()


# -- terms over distributions -----------------------------------------------------------------

def _require_distribution(value, what: str, argument: str) -> Distribution:
    if not isinstance(value, Distribution):
        raise LossError(f"{what}: {argument} must be a fastgen.dgm distribution, got {type(value).__name__}")
    return value


class LogProb(Loss):
    r""":math:`\log p(\mathrm{var}\mid\mathrm{cond\_var})` at the values in ``x_dict``, summed over the features."""

    def __init__(self, p: Distribution) -> None:
        self.p = _require_distribution(p, "LogProb", "p")
        super().__init__(p._var + p._cond_var)

    def _distributions(self):
        return [self.p]

    def _text(self) -> str:
        return f"log {self.p.prob_text}"

    def _eval(self, x_dict, ctx):
        return self.p._log_prob_of(x_dict, ctx)


class Prob(LogProb):
    r""":math:`p(\mathrm{var}\mid\mathrm{cond\_var})`, the exponent of :class:`LogProb`."""

    def _text(self) -> str:
        return self.p.prob_text

    def _eval(self, x_dict, ctx):
        return torch.exp(self.p._log_prob_of(x_dict, ctx))


class Entropy(Loss):
    r"""Closed-form entropy :math:`H[p(\mathrm{var}\mid\mathrm{cond\_var})]`, summed over the features."""

    def __init__(self, p: Distribution) -> None:
        self.p = _require_distribution(p, "Entropy", "p")
        if isinstance(p, Joint):
            raise LossError(f"Entropy({p.prob_text}): a joint distribution has no closed-form entropy here; "
                            f"write -Expectation(p, LogProb(p)) for a Monte Carlo estimate")
        super().__init__(p._cond_var)

    def _distributions(self):
        return [self.p]

    def _text(self) -> str:
        return f"H[{self.p.prob_text}]"

    def _eval(self, x_dict, ctx):
        return self.p._entropy(self.p.params(x_dict, ctx))


_KL_FAMILIES = {("Normal", "Normal"), ("Bernoulli", "Bernoulli"), ("Categorical", "Categorical")}


class KullbackLeibler(Loss):
    r""":math:`\mathrm{KL}(p\,\|\,q)` in closed form, summed over the features.

    Normal to Normal runs ``gaussian_kl`` (with no prior tensors when ``q`` is a fixed
    :math:`\mathcal N(0, I)`, and fused with the draw of ``p`` when the loss also samples
    from ``p``); Bernoulli and Categorical pairs have their closed forms too.
    ``analytical=False`` (or another pair of families) gives the one-sample Monte Carlo
    estimate :math:`\mathbb E_{p}[\log p - \log q]` instead.
    """

    def __init__(self, p: Distribution, q: Distribution, analytical: bool = True) -> None:
        self.p = _require_distribution(p, "KullbackLeibler", "p")
        self.q = _require_distribution(q, "KullbackLeibler", "q")
        if sorted(p._var) != sorted(q._var):
            raise LossError(f"KullbackLeibler({p.prob_text}, {q.prob_text}): the two distributions must be over "
                            f"the same variables, got {p._var} and {q._var}")
        super().__init__(p._cond_var + q._cond_var)
        self._family = (p.family, q.family)
        self._estimate = None
        if not analytical or self._family not in _KL_FAMILIES:
            # no closed form for this pair (or not asked for): the one-sample Monte Carlo estimate
            self._estimate = Expectation(p, LogProb(p) - LogProb(q), method="sample")
            self._input_var = self._estimate._input_var

    def _distributions(self):
        return [self.p, self.q]

    def _children(self):
        return (self._estimate,) if self._estimate is not None else ()

    def _text(self) -> str:
        return f"KL[{self.p.prob_text}||{self.q.prob_text}]"

    def _eval(self, x_dict, ctx):
        if self._estimate is not None:
            return self._estimate._eval(x_dict, ctx)
        p, q = self.p, self.q
        entry = p._entry(x_dict, ctx)
        params = entry[0]
        family = self._family[0]
        if family == "Normal":
            if q.is_standard():
                if p._base_id in ctx.fusable:
                    return p._fused_kl(entry, ctx)
                loc, logvar = params
                return _ops.gaussian_kl(loc, logvar, event_dims=p.event_dims(loc))
            loc, logvar = params
            prior_loc, prior_logvar = q.params(x_dict, ctx)
            self._check_features(loc, prior_loc)
            return _ops.gaussian_kl(loc, logvar, prior_loc, prior_logvar, event_dims=p.event_dims(loc))
        other = q.params(x_dict, ctx)[0]
        self._check_features(params[0], other)
        if family == "Bernoulli":
            logits, other_logits = params[0], other
            ed = p.event_dims(logits)
            probs = torch.sigmoid(logits)
            return (_ops.bernoulli_log_likelihood(logits, probs, event_dims=ed)
                    - _ops.bernoulli_log_likelihood(other_logits, probs, event_dims=ed))
        log_probs = params[0]
        return (torch.exp(log_probs) * (log_probs - other)).sum(-1)

    def _check_features(self, mine: Tensor, other: Tensor) -> None:
        ed = self.p.event_dims(mine)
        if ed and other.dim() and mine.shape[-ed:] != other.shape[-ed:]:
            raise LossError(f"{self.loss_text}: {self.p.prob_text} has parameters of shape {tuple(mine.shape)} and "
                            f"{self.q.prob_text} of shape {tuple(other.shape)}: their features do not match")


class Expectation(Loss):
    r""":math:`\mathbb E_{p}[f]`, the loss ``f`` averaged over the variables of ``p``.

    ``method="auto"`` (default): a ``Categorical`` ``p`` is enumerated -- ``f`` is evaluated
    once for every class in one batch of ``K x B`` rows and weighted by the class
    probabilities, exact and differentiable in them (how M2 marginalizes an unknown label);
    any other ``p`` is sampled once, by reparameterization where the family allows it
    (``"sample"`` forces that for a Categorical too, without gradient to its probabilities;
    ``"enumerate"`` insists on enumeration). ``f`` must be per-sample (no ``.mean()`` inside).
    """

    def __init__(self, p: Distribution, f: Loss, method: str = "auto") -> None:
        self.p = _require_distribution(p, "Expectation", "p")
        if not isinstance(f, Loss):
            raise LossError(f"Expectation({p.prob_text}, ...): f must be a fastgen.dgm loss, got {type(f).__name__}")
        if method not in ("auto", "sample", "enumerate"):
            raise LossError(f"Expectation: method must be 'auto', 'sample' or 'enumerate', got {method!r}")
        enumerable = isinstance(p, Categorical) and not isinstance(p, Joint)
        if method == "enumerate" and not enumerable:
            raise LossError(f"Expectation({p.prob_text}, ...): only a Categorical can be enumerated, "
                            f"{p.prob_text} is a {p.family}")
        self.f = f
        self.method = "enumerate" if (enumerable and method != "sample") else "sample"
        self._outer = [v for v in f._input_var if v not in p._var]
        super().__init__(p._cond_var + self._outer)
        self._eye: Tensor | None = None

    def _distributions(self):
        return [self.p]

    def _children(self):
        return (self.f,)

    def _text(self) -> str:
        return f"E_{{{self.p.prob_text}}}[{self.f._text()}]"

    def _eval(self, x_dict, ctx):
        if self.method == "enumerate":
            return self._enumerate(x_dict, ctx)
        p = self.p
        drawn = p._sample_into(x_dict, ctx, p.reparameterizable)
        return self.f._eval({**x_dict, **drawn}, ctx)

    def _enumerate(self, x_dict, ctx):
        p = self.p
        log_probs = p.params(x_dict, ctx)[0]
        if log_probs.dim() != 2:
            raise LossError(f"{self.loss_text}: enumeration needs class probabilities of shape (batch, classes), "
                            f"got {tuple(log_probs.shape)}")
        batch, classes = log_probs.shape
        tiled = {}
        for name in self._outer:
            try:
                value = x_dict[name]
            except KeyError:
                raise LossError(f"{self.loss_text} needs variable '{name}', which x_dict lacks "
                                f"(x_dict has {sorted(x_dict)})") from None
            if value.dim() == 0 or value.shape[0] != batch:
                raise LossError(f"{self.loss_text}: variable '{name}' has shape {tuple(value.shape)}, but "
                                f"{p.prob_text} has a batch of {batch}")
            tiled[name] = value.unsqueeze(0).expand(classes, *value.shape).reshape(classes * batch, *value.shape[1:])
        eye = self._eye
        if eye is None or eye.shape[0] != classes or eye.dtype != log_probs.dtype or eye.device != log_probs.device:
            eye = self._eye = torch.eye(classes, dtype=log_probs.dtype, device=log_probs.device)
        tiled[p._var[0]] = eye.unsqueeze(1).expand(classes, batch, classes).reshape(classes * batch, classes)
        inner = self.f._eval(tiled, ctx)
        if inner.shape != (classes * batch,):
            raise LossError(f"{self.loss_text}: the loss inside an enumerated expectation must give one value per "
                            f"sample (shape ({classes * batch},) here), got {tuple(inner.shape)}; "
                            f"take .mean() outside the expectation")
        return (torch.exp(log_probs).t() * inner.view(classes, batch)).sum(0)


class StochasticReconstructionLoss(Expectation):
    r""":math:`-\mathbb E_{q(z\mid x)}[\log p(x\mid z)]` with one reparameterized draw of ``z``.

    ``encoder`` is ``q(z|x)``, ``decoder`` ``p(x|z)``: the decoder must be conditioned on a
    variable the encoder provides.
    """

    _precedence = _UNARY  # its text is a negation

    def __init__(self, encoder: Distribution, decoder: Distribution) -> None:
        _require_distribution(encoder, "StochasticReconstructionLoss", "encoder")
        _require_distribution(decoder, "StochasticReconstructionLoss", "decoder")
        if not set(encoder._var) & set(decoder._cond_var):
            raise LossError(f"StochasticReconstructionLoss({encoder.prob_text}, {decoder.prob_text}): the decoder is "
                            f"not conditioned on any variable the encoder provides ({encoder._var})")
        self.decoder = decoder
        super().__init__(encoder, -LogProb(decoder), method="sample")
        self._eval_negated = self._log_likelihood

    def _text(self) -> str:
        return f"-E_{{{self.p.prob_text}}}[log {self.decoder.prob_text}]"

    def _eval(self, x_dict, ctx):
        return -self._log_likelihood(x_dict, ctx)

    def _log_likelihood(self, x_dict, ctx):
        p = self.p
        drawn = p._sample_into(x_dict, ctx, p.reparameterizable)
        return self.decoder._log_prob_of({**x_dict, **drawn}, ctx)


class Terms:
    """Several named losses evaluated in one context: their networks run once, fusions apply.

    ``Terms(kl=KullbackLeibler(q, prior), reconstruction=StochasticReconstructionLoss(q, p))
    .eval({"x": x})`` returns ``{"kl": ..., "reconstruction": ...}`` -- one encoder pass, one
    fused ``reparameterize_kl``.
    """

    def __init__(self, **losses: Loss) -> None:
        for name, loss in losses.items():
            if not isinstance(loss, Loss):
                raise LossError(f"Terms: {name} must be a fastgen.dgm loss, got {type(loss).__name__}")
        self.losses = dict(losses)
        self.input_var = _unique(v for loss in losses.values() for v in loss._input_var)
        self._fusable = _fusion_plan(list(losses.values()))

    def eval(self, x_dict: Mapping | None = None, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x_dict = {} if x_dict is None else (x_dict if type(x_dict) is dict else dict(x_dict))
        ctx = EvalContext(generator, self._fusable)
        return {name: loss._eval(x_dict, ctx) for name, loss in self.losses.items()}

    def __repr__(self) -> str:
        return "Terms(" + ", ".join(f"{name}={loss.loss_text}" for name, loss in self.losses.items()) + ")"


# -- the fusion plan --------------------------------------------------------------------------

def _fusion_plan(roots) -> frozenset:
    """Ids of the Normal distributions that a loss both samples and compares to a fixed Normal prior.

    Their reparameterized draw and their KL to N(0, I) come from one ``reparameterize_kl``
    (whether the prior is exactly N(0, I) is checked again at each evaluation).
    """
    kl_of, sampled = set(), set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, KullbackLeibler) and node._estimate is None and node._family == ("Normal", "Normal") \
                and not node.q._cond_var and not isinstance(node.q, Joint):
            if node.p._cond_var:
                kl_of.add(node.p._base_id)
        if isinstance(node, Expectation) and node.method == "sample":
            for factor in (node.p.factors if isinstance(node.p, Joint) else [node.p]):
                if isinstance(factor, Normal):
                    sampled.add(factor._base_id)
        stack.extend(node._children())
    return frozenset(kl_of & sampled)

