r"""Model API: training is independent of the objective.

``Model(loss, distributions, optimizer=torch.optim.Adam, optimizer_params={})`` owns an
optimizer over the parameters of ``distributions``; ``model.train(x_dict)`` takes one
gradient step on ``loss.eval(x_dict)`` and returns the loss value, ``model.test(x_dict)``
evaluates it (or ``test_loss``) without gradient. The presets build the loss for you:

* ``VAE(encoder, decoder, regularizer=KullbackLeibler(q, prior))``: minimizes
  :math:`(-\mathbb E_{q}[\log p(x\mid z)] + \text{regularizer})` averaged over the batch;
* ``ML(p)``: maximum likelihood, minimizes :math:`-\log p(x)` averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .distributions import Distribution
from .losses import Loss, LossError, LogProb, StochasticReconstructionLoss

__all__ = ["Model", "VAE", "ML"]


class Model:
    """Trains the ``distributions`` to minimize ``loss`` with any torch optimizer.

    Args:
        loss: a scalar ``fastgen.dgm`` loss (take ``.mean()`` or ``.sum()`` of a per-sample one).
        distributions: the distributions whose parameters are trained (a renamed view of one
            counts as the same parameters).
        optimizer: an optimizer class (or any ``callable(params, **optimizer_params)``).
        optimizer_params: its keyword arguments, e.g. ``{"lr": 1e-3}``.
        clip_grad_norm, clip_grad_value: clip the gradients before each step when set.
        test_loss: what :meth:`test` evaluates (default: ``loss``).
    """

    def __init__(self, loss: Loss, test_loss: Loss | None = None, distributions: Iterable[Distribution] = (),
                 optimizer=torch.optim.Adam, optimizer_params: Mapping | None = None,
                 clip_grad_norm: float | None = None, clip_grad_value: float | None = None) -> None:
        for name, value in (("loss", loss), ("test_loss", test_loss)):
            if value is not None and not isinstance(value, Loss):
                raise LossError(f"Model: {name} must be a fastgen.dgm loss, got {type(value).__name__}")
        distributions = list(distributions)
        for d in distributions:
            if not isinstance(d, Distribution):
                raise LossError(f"Model: distributions must be fastgen.dgm distributions, got {type(d).__name__}")
        self.loss_cls = loss
        self.test_loss_cls = test_loss if test_loss is not None else loss
        self.distributions = nn.ModuleList([d._base() for d in _unique_bases(distributions)])
        params, seen = [], set()
        for p in self.distributions.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        self._params = params
        self._modules_list = list(self.distributions)
        self.optimizer = optimizer(params, **dict(optimizer_params or {})) if params else None
        self.clip_norm = clip_grad_norm
        self.clip_value = clip_grad_value

    # -- training ------------------------------------------------------------------------------
    def train(self, train_x_dict: Mapping | None = None, **kwargs) -> Tensor:
        """One optimizer step on the loss of ``train_x_dict``; returns the loss (detached).

        Keyword arguments go to ``loss.eval`` (``generator=``).
        """
        for d in self._modules_list:
            if not d.training:  # after test(), or set by hand: back to training mode
                d.train()
        optimizer = self.optimizer
        if optimizer is None:
            raise LossError("Model.train: the distributions have no parameters to train")
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss_cls.eval(train_x_dict, **kwargs)
        if loss.dim() != 0:
            raise LossError(f"Model.train: the loss must be a scalar, got shape {tuple(loss.shape)}: "
                            f"take .mean() or .sum() of {self.loss_cls.loss_text}")
        loss.backward()
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._params, self.clip_norm)
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(self._params, self.clip_value)
        optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def test(self, test_x_dict: Mapping | None = None, **kwargs) -> Tensor:
        """The test loss of ``test_x_dict`` in eval mode, without gradient."""
        self.distributions.eval()
        try:
            return self.test_loss_cls.eval(test_x_dict, **kwargs)
        finally:
            self.distributions.train()

    # -- plumbing ------------------------------------------------------------------------------
    def parameters(self):
        return iter(self._params)

    def to(self, *args, **kwargs) -> "Model":
        self.distributions.to(*args, **kwargs)
        return self

    def state_dict(self) -> dict:
        return {"distributions": self.distributions.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_state_dict(self, state: Mapping) -> None:
        self.distributions.load_state_dict(state["distributions"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def __str__(self) -> str:
        lines = ["Distributions (for training):"]
        lines += ["  " + d.prob_text for d in self.distributions]
        lines += ["Loss function:", "  " + self.loss_cls.loss_text]
        if self.test_loss_cls is not self.loss_cls:
            lines += ["Test loss function:", "  " + self.test_loss_cls.loss_text]
        if self.optimizer is not None:
            lines += ["Optimizer:"] + ["  " + line for line in repr(self.optimizer).splitlines()]
        return "\n".join(lines)

    __repr__ = __str__


def _unique_bases(distributions):
    out, seen = [], set()
    for d in distributions:
        for factor in d._factors():
            base = factor._base()
            if id(base) not in seen:
                seen.add(id(base))
                out.append(base)
    return out


class VAE(Model):
    r"""Variational autoencoder: minimizes :math:`\mathrm{mean}(-\mathbb E_{q}[\log p(x\mid z)] + \text{regularizer})`.

    ``regularizer`` is usually ``KullbackLeibler(encoder, prior)`` (the ELBO); other terms
    (a weight, an extra penalty) are any loss. ``other_distributions`` adds distributions
    whose parameters are trained too (a learned prior).
    """

    def __init__(self, encoder: Distribution, decoder: Distribution, other_distributions: Iterable[Distribution] = (),
                 regularizer: Loss | None = None, optimizer=torch.optim.Adam, optimizer_params: Mapping | None = None,
                 clip_grad_norm: float | None = None, clip_grad_value: float | None = None) -> None:
        loss = StochasticReconstructionLoss(encoder, decoder)
        if regularizer is not None:
            loss = loss + regularizer
        super().__init__(loss.mean(), distributions=[encoder, decoder, *other_distributions], optimizer=optimizer,
                         optimizer_params=optimizer_params, clip_grad_norm=clip_grad_norm,
                         clip_grad_value=clip_grad_value)


class ML(Model):
    r"""Maximum likelihood: minimizes :math:`-\frac1B\sum \log p(x)` (the loss ``-LogProb(p).mean()``)."""

    def __init__(self, p: Distribution, other_distributions: Iterable[Distribution] = (), optimizer=torch.optim.Adam,
                 optimizer_params: Mapping | None = None, clip_grad_norm: float | None = None,
                 clip_grad_value: float | None = None) -> None:
        super().__init__((-LogProb(p)).mean(), distributions=[p, *other_distributions], optimizer=optimizer,
                         optimizer_params=optimizer_params, clip_grad_norm=clip_grad_norm,
                         clip_grad_value=clip_grad_value)
