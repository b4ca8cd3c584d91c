r"""Variational autoencoders over user-supplied encoder and decoder networks.

With encoder :math:`q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \operatorname{diag} e^{\log\sigma^2_\phi(x)})`,
prior :math:`p(z) = \mathcal N(0, I)` and decoder likelihood :math:`p_\theta(x\mid z)`, the
evidence lower bound of one sample is

.. math::
    \mathrm{ELBO}(x) = \mathbb E_{q}\left[\log p_\theta(x\mid z)\right]
                       - \mathrm{KL}\left(q_\phi(z\mid x)\,\|\,p(z)\right) \le \log p_\theta(x),

estimated with one reparameterized draw :math:`z = \mu + e^{\frac12\log\sigma^2}\epsilon`. The
objective is evaluated by ``fastgen.dgm``, the one place a VAE objective is computed: the
encoder is the distribution :math:`q(z\mid x)` (a ``fastgen.dgm.Normal`` from its mean and
log-variance), the decoder :math:`p(x\mid z)` (a ``Bernoulli`` from logits, or a ``Normal``),
and ``loss`` evaluates ``KullbackLeibler(q, N(0, I))`` and ``StochasticReconstructionLoss(q, p)``
together -- so the draw and the analytic KL come from one fused pass
(``fastgen.reparameterize_kl``) and the reconstruction term from
``fastgen.bernoulli_log_likelihood`` or ``fastgen.gaussian_log_likelihood``.

Every ``loss`` returns a :class:`VAELoss` of scalars, each a **sum over features and a mean
over the batch**, in nats:

* ``reconstruction`` :math:`= -\log p_\theta(x\mid z)` (the reconstruction error),
* ``kl`` :math:`= \mathrm{KL}(q\,\|\,p)`,
* ``elbo`` :math:`= -(\text{reconstruction} + \text{kl})` (for IWAE: the :math:`K`-sample bound),
* ``loss`` the quantity minimized, :math:`\text{reconstruction} + \beta\,\text{kl}` (:math:`\beta=1`
  except for :class:`BetaVAE`; :math:`-\mathcal L_K` for :class:`IWAE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fastgen import dgm as _dgm
from fastgen import ops as _ops

from .base import GenerativeModel, OptimizerFactory, one_hot_labels
from .networks import conv_decoder, conv_encoder, mlp_decoder, mlp_encoder

__all__ = ["VAELoss", "VAE", "BetaVAE", "ConditionalVAE", "IWAE"]


class VAELoss(NamedTuple):
    """Scalar VAE objectives (sum over features, mean over batch, nats)."""

    loss: Tensor
    elbo: Tensor
    kl: Tensor
    reconstruction: Tensor


_LIKELIHOODS = ("bernoulli", "gaussian")


class VAE(GenerativeModel):
    """Variational autoencoder (Kingma & Welling, 2014).

    Args:
        encoder: ``encoder(x) -> (mean, logvar)``, each ``(B, latent_dim)``.
        decoder: ``decoder(z) -> output`` with ``z`` of shape ``(*lead, latent_dim)`` and
            ``output`` of shape ``(*lead, *x.shape[1:])``: Bernoulli logits, or Gaussian
            means (or a ``(mean, logvar)`` pair) for ``likelihood="gaussian"``.
        latent_dim: size of ``z``.
        likelihood: ``"bernoulli"`` (data in ``[0, 1]``, soft targets allowed) or ``"gaussian"``.
        observation_logvar: Gaussian only, when the decoder returns means alone: a fixed
            float log-variance, or ``"learned"`` for one learned scalar.
        beta: weight of the KL term in ``loss`` (1 gives the ELBO).
        optimizer: optimizer, or a callable ``params -> Optimizer``; default Adam, ``lr``.
        eval_num_samples: importance samples for the ``nll`` reported by :meth:`evaluate`
            (0 skips it).
    """

    network_names = ("encoder", "decoder")
    capturable = True

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, *,
                 likelihood: str = "bernoulli", observation_logvar: float | str = "learned",
                 beta: float = 1.0, optimizer: OptimizerFactory | torch.optim.Optimizer | None = None,
                 lr: float = 1e-3, eval_num_samples: int = 50) -> None:
        super().__init__()
        if likelihood not in _LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {_LIKELIHOODS}, got {likelihood!r}")
        if not (isinstance(latent_dim, int) and latent_dim > 0):
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if eval_num_samples < 0:
            raise ValueError(f"eval_num_samples must be >= 0, got {eval_num_samples}")
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.beta = float(beta)
        self.lr = lr
        self.eval_num_samples = eval_num_samples
        self._optimizer_spec = optimizer
        if likelihood == "gaussian":
            if observation_logvar == "learned":
                self.observation_logvar = nn.Parameter(torch.zeros(()))
            elif isinstance(observation_logvar, (int, float)):
                self.register_buffer("observation_logvar", torch.tensor(float(observation_logvar)))
            else:
                raise ValueError(f"observation_logvar must be a float or 'learned', got {observation_logvar!r}")

    # -- builders ---------------------------------------------------------------------------
    @classmethod
    def mlp(cls, data_shape: int | Sequence[int], latent_dim: int = 16, hidden: int | Sequence[int] = (256,),
            **kwargs) -> "VAE":
        """The model over MLP encoder and decoder for data of shape ``data_shape``."""
        num_classes = kwargs.get("num_classes", 0)
        return cls(mlp_encoder(data_shape, hidden, latent_dim, num_classes=num_classes),
                   mlp_decoder(latent_dim, tuple(reversed(_widths(hidden))), data_shape, num_classes=num_classes),
                   latent_dim, **kwargs)

    @classmethod
    def conv(cls, image_shape: Sequence[int], latent_dim: int = 16, channels: int = 32, **kwargs) -> "VAE":
        """The model over convolutional encoder and decoder for ``(C, H, W)`` images."""
        num_classes = kwargs.get("num_classes", 0)
        return cls(conv_encoder(image_shape, latent_dim, channels=channels, num_classes=num_classes),
                   conv_decoder(latent_dim, image_shape, channels=channels, num_classes=num_classes),
                   latent_dim, **kwargs)

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        parameters = [p for p in self.parameters() if p.requires_grad]
        default = lambda params: torch.optim.Adam(params, lr=self.lr)  # noqa: E731
        return {"model": self._make_optimizer(self._optimizer_spec, parameters, default, "optimizer")}

    # -- conditioning hooks (ConditionalVAE overrides) ---------------------------------------
    def _condition(self, labels: Tensor | None, lead_shape: torch.Size, device: torch.device) -> Tensor | None:
        if labels is not None:
            raise ValueError(f"{type(self).__name__} is unconditional; labels (y) must not be given")
        return None

    def _call(self, name: str, inputs: Tensor, condition: Tensor | None):
        network = self.network(name)
        return network(inputs) if condition is None else network(inputs, condition)

    # -- building blocks --------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters ``(mean, logvar)``, in float32 even under autocast."""
        mean, logvar = self._call("encoder", x, self._condition(y, x.shape[:1], x.device))
        return mean.float(), logvar.float()

    def decode(self, z: Tensor, y: Tensor | None = None):
        """Decoder output for latents ``z`` of shape ``(*lead, latent_dim)``."""
        return self._call("decoder", z, self._condition(y, z.shape[:-1], z.device))

    def _mean_of(self, output) -> Tensor:
        """Mean of p(x | z): sigmoid of the logits, or the Gaussian mean."""
        if self.likelihood == "bernoulli":
            return torch.sigmoid(output.float())
        return (output[0] if isinstance(output, tuple) else output).float()

    def reconstruction_log_likelihood(self, output, x: Tensor) -> Tensor:
        r""":math:`\log p_\theta(x\mid z)` summed over the features of ``x``; shape ``output``'s lead."""
        likelihood = self.distributions().p
        return likelihood._log_prob(likelihood._normalize(likelihood.params_of(output)), x)

    # -- the model as fastgen.dgm distributions and losses -------------------------------------
    def distributions(self) -> "VAEDistributions":
        r"""The model as ``fastgen.dgm`` distributions and the terms of its objective (built once).

        ``q`` is :math:`q(z\mid x)` (:math:`q(z\mid x, c)` with the one-hot labels ``c`` of a
        conditional model), ``p`` is :math:`p(x\mid z)`, ``prior`` :math:`\mathcal N(0, I)`;
        ``terms`` evaluates ``kl`` and ``reconstruction`` per sample in one pass.
        They call this model's networks (through DDP while distributed) and hold no
        parameters of their own, so ``state_dict`` is unchanged.
        """
        parts = self.__dict__.get("_dgm_parts")
        if parts is None:
            conditional = bool(self.num_classes)
            q = _Posterior(self, conditional)
            p = (_BernoulliLikelihood if self.likelihood == "bernoulli" else _GaussianLikelihood)(self, conditional)
            prior = _dgm.Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[self.latent_dim], name="p")
            terms = _dgm.Terms(kl=_dgm.KullbackLeibler(q, prior),
                               reconstruction=_dgm.StochasticReconstructionLoss(q, p))
            parts = self.__dict__["_dgm_parts"] = VAEDistributions(q, p, prior, terms)
        return parts

    def _variables(self, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        condition = self._condition(y, x.shape[:1], x.device)
        return {"x": x} if condition is None else {"x": x, "c": condition}

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() < 2:
            raise ValueError(f"x must be batched, shape (B, *features); got shape {tuple(x.shape)}")

    # -- objectives -------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None, *, generator: torch.Generator | None = None) -> VAELoss:
        """Single-sample ELBO of a batch; ``loss`` is ``reconstruction + beta * kl``."""
        self._check_input(x)
        terms = self.distributions().terms.eval(self._variables(x, y), generator=generator)
        reconstruction = terms["reconstruction"].mean()
        kl = terms["kl"].float().mean()
        return VAELoss(loss=reconstruction + self.beta * kl, elbo=-(reconstruction + kl), kl=kl,
                       reconstruction=reconstruction)

    def importance_log_weights(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1, *,
                               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        r"""Log importance weights :math:`\log w_k = \log p(x\mid z_k) + \log p(z_k) - \log q(z_k\mid x)`.

        Returns ``(log_w, reconstruction_log_likelihood, kl)`` with ``log_w`` and the
        reconstruction term of shape ``(K, B)`` and the analytic ``kl`` of shape ``(B,)``.
        """
        self._check_input(x)
        mean, logvar = self.encode(x, y)
        event_dims = mean.dim() - 1
        # The K samples and their log p(z_k) - log q(z_k|x) in one pass (eps regenerated in backward).
        z, log_prior_minus_posterior = _ops.reparameterize_log_weights(
            mean, logvar, num_samples=num_samples, generator=generator, event_dims=event_dims)
        kl = _ops.gaussian_kl(mean, logvar, event_dims=event_dims)
        reconstruction_ll = self.reconstruction_log_likelihood(self.decode(z, y), x)
        return reconstruction_ll + log_prior_minus_posterior, reconstruction_ll, kl.float()

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1000, *,
                       chunk_size: int = 100, generator: torch.Generator | None = None) -> Tensor:
        r"""Importance-sampled estimate of :math:`\log p_\theta(x)` per sample, shape ``(B,)``.

        .. math:: \log p(x) \approx \log \frac1K \sum_{k=1}^K
                  \frac{p(x\mid z_k)\,p(z)}{q(z_k\mid x)},\quad z_k \sim q(z\mid x),

        a lower bound in expectation that tightens as ``K`` grows (Burda et al., 2016); the
        negative mean over a test set is the reported test NLL. Samples are drawn
        ``chunk_size`` at a time to bound memory.
        """
        if not (isinstance(num_samples, int) and num_samples > 0):
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        chunks = []
        for start in range(0, num_samples, chunk_size):
            count = min(chunk_size, num_samples - start)
            chunks.append(self.importance_log_weights(x, y, count, generator=generator)[0])
        return torch.logsumexp(torch.cat(chunks), dim=0) - math.log(num_samples)

    # -- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples: the mean of :math:`p(x\\mid z)` for :math:`z \\sim \\mathcal N(0, I)`."""
        if not (isinstance(n, int) and n >= 0):
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return self._mean_of(self.decode(z, self._labels_for_sampling(y, n)))

    def _labels_for_sampling(self, y, n: int) -> Tensor | None:
        if y is not None:
            raise ValueError(f"{type(self).__name__} is unconditional; sample(n) takes no labels")
        return None

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decode the posterior mean of each input: the mean of :math:`p(x\\mid z=\\mu_\\phi(x))`."""
        self._check_input(x)
        mean, _ = self.encode(x, y)
        return self._mean_of(self.decode(mean, y)).reshape(x.shape)

    # -- trainer interface ------------------------------------------------------------------
    def _training_inputs(self, batch) -> tuple[Tensor, Tensor | None]:
        x, labels = self._unpack(batch)
        # Datasets usually carry labels; an unconditional model just does not use them.
        return x, (labels if self.num_classes else None)

    def step(self, batch) -> dict[str, float]:
        """One optimizer step on ``loss``; returns the batch's objectives as floats."""
        x, labels = self._training_inputs(batch)
        objectives = self._update(x, labels, captured=False)
        return {name: float(value) for name, value in objectives.items()}

    def _step_inputs(self, batch) -> tuple[Tensor, Tensor | None]:
        x, labels = self._training_inputs(batch)
        # Class labels become one-hot rows here, where their range check may synchronize.
        if labels is not None:
            labels = one_hot_labels(labels, self.num_classes, device=x.device)
        return x, labels

    def _capturable_step(self, x: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        return self._update(x, labels, captured=True)

    def _update(self, x: Tensor, labels: Tensor | None, *, captured: bool) -> dict[str, Tensor]:
        """One optimizer step on ``loss``. ``captured``: inside a CUDA-graph capture, where nothing
        may synchronize (the trainer checks the accumulated objectives instead of each loss) and
        autocast keeps no cache (a cached cast would be a tensor of the capture)."""
        optimizer = self.optimizers()["model"]
        with self._autocast(cache=not captured):
            objectives = self.loss(x, labels)
        if not captured:
            self._require_finite("loss", objectives.loss)
        optimizer.zero_grad(set_to_none=True)
        objectives.loss.backward()
        self._average_loose_gradients()
        optimizer.step()
        return {name: value.detach() for name, value in objectives._asdict().items()}

    @torch.no_grad()
    def evaluate(self, batch, generator: torch.Generator | None = None) -> dict[str, float]:
        """Objectives of a held-out batch, plus ``nll`` (importance-sampled ``-log p(x)``)."""
        x, labels = self._training_inputs(batch)
        with self._autocast():
            objectives = self.loss(x, labels, generator=generator)
            metrics = {name: float(value) for name, value in objectives._asdict().items()}
            if self.eval_num_samples:
                nll = -self.log_likelihood(x, labels, self.eval_num_samples, generator=generator).mean()
                metrics["nll"] = float(nll)
        return metrics


class VAEDistributions(NamedTuple):
    """A VAE as ``fastgen.dgm`` distributions: ``q(z|x)``, ``p(x|z)``, the prior and the objective's terms."""

    q: _dgm.Normal
    p: _dgm.Distribution
    prior: _dgm.Normal
    terms: _dgm.Terms


class _Posterior(_dgm.Normal):
    """q(z|x) or q(z|x,c): the model's encoder, ``(mean, logvar)`` in float32."""

    def __init__(self, owner: VAE, conditional: bool) -> None:
        super().__init__(var=["z"], cond_var=["x", "c"] if conditional else ["x"], name="q")
        object.__setattr__(self, "_owner", owner)  # not a child module: the model owns its networks

    def forward(self, x, c=None):
        mean, logvar = self._owner._call("encoder", x, c)
        return {"loc": mean.float(), "logvar": logvar.float()}


class _BernoulliLikelihood(_dgm.Bernoulli):
    """p(x|z) or p(x|z,c) from the decoder's logits; the data may be soft, in any float dtype."""

    def __init__(self, owner: VAE, conditional: bool) -> None:
        super().__init__(var=["x"], cond_var=["z", "c"] if conditional else ["z"], name="p")
        object.__setattr__(self, "_owner", owner)

    def forward(self, z, c=None):
        return self.params_of(self._owner._call("decoder", z, c))

    @staticmethod
    def params_of(output) -> dict[str, Tensor]:
        return {"logits": output.float()}

    def _log_prob(self, params, value):
        # summed over the features of x; the decoder's output may carry more leading dims (K draws)
        return _ops.bernoulli_log_likelihood(params[0], value.float(), event_dims=value.dim() - 1)


class _GaussianLikelihood(_dgm.Normal):
    """p(x|z) or p(x|z,c) from the decoder's mean (and log-variance, or the model's ``observation_logvar``)."""

    def __init__(self, owner: VAE, conditional: bool) -> None:
        super().__init__(var=["x"], cond_var=["z", "c"] if conditional else ["z"], name="p")
        object.__setattr__(self, "_owner", owner)

    def forward(self, z, c=None):
        return self.params_of(self._owner._call("decoder", z, c))

    def params_of(self, output) -> dict[str, Tensor]:
        if isinstance(output, tuple):
            return {"loc": output[0].float(), "logvar": output[1].float()}
        mean = output.float()
        return {"loc": mean, "logvar": self._owner.observation_logvar.float().expand_as(mean)}

    def _log_prob(self, params, value):
        loc, logvar = params
        return _ops.gaussian_log_likelihood(value.float(), loc, logvar, event_dims=value.dim() - 1)


def _widths(hidden: int | Sequence[int]) -> tuple[int, ...]:
    return (hidden,) if isinstance(hidden, int) else tuple(hidden)


class BetaVAE(VAE):
    r""":math:`\beta`-VAE (Higgins et al., 2017): minimizes reconstruction :math:`+\ \beta\,` KL.

    ``elbo`` stays the true ELBO (:math:`\beta = 1`); only ``loss`` is reweighted.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, *, beta: float = 4.0, **kwargs) -> None:
        super().__init__(encoder, decoder, latent_dim, beta=beta, **kwargs)


class ConditionalVAE(VAE):
    r"""Conditional VAE (Sohn et al., 2015): :math:`q(z\mid x, y)`, :math:`p(x\mid z, y)`, prior :math:`\mathcal N(0, I)`.

    Labels are integer classes; the encoder and decoder receive them one-hot as a second
    argument (``encoder(x, y_onehot)``, ``decoder(z, y_onehot)``; for ``K`` samples the
    one-hot rows are broadcast to ``(K, B, num_classes)``). ``loss(x, y)``,
    ``sample(n, y)`` and ``log_likelihood(x, y, K)`` (an estimate of :math:`\log p(x\mid y)`)
    all take the labels.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, num_classes: int, **kwargs) -> None:
        if not (isinstance(num_classes, int) and num_classes > 0):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        super().__init__(encoder, decoder, latent_dim, **kwargs)
        self.num_classes = num_classes

    @classmethod
    def mlp(cls, data_shape, num_classes: int, latent_dim: int = 16, hidden=(256,), **kwargs) -> "ConditionalVAE":
        return super().mlp(data_shape, latent_dim, hidden, num_classes=num_classes, **kwargs)

    @classmethod
    def conv(cls, image_shape, num_classes: int, latent_dim: int = 16, channels: int = 32, **kwargs) -> "ConditionalVAE":
        return super().conv(image_shape, latent_dim, channels, num_classes=num_classes, **kwargs)

    def _condition(self, labels: Tensor | None, lead_shape: torch.Size, device: torch.device) -> Tensor:
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs labels y (integer classes)")
        if isinstance(labels, Tensor) and labels.dim() == 2 and labels.shape[-1] == self.num_classes \
                and labels.is_floating_point():
            one_hot = labels.to(device)  # already one-hot (or soft) rows
        else:
            one_hot = one_hot_labels(labels, self.num_classes, device=device)
        batch = lead_shape[-1] if len(lead_shape) else 1
        if one_hot.shape[0] != batch:
            raise ValueError(f"y must hold one label per sample ({batch}), got {one_hot.shape[0]}")
        return one_hot.expand(*lead_shape, self.num_classes)

    def _labels_for_sampling(self, y, n: int) -> Tensor:
        if y is None:
            raise ValueError("ConditionalVAE.sample(n, y) needs the class labels y (an int or n ints)")
        return one_hot_labels(y, self.num_classes, count=n, device=self.device)

    def loss(self, x: Tensor, y: Tensor | None = None, *, generator: torch.Generator | None = None) -> VAELoss:
        if y is None:
            raise ValueError("ConditionalVAE.loss(x, y) needs the class labels y")
        return super().loss(x, y, generator=generator)


class IWAE(VAE):
    r"""Importance-weighted autoencoder (Burda et al., 2016).

    With :math:`K` draws :math:`z_k \sim q(z\mid x)` (all from one fused
    ``reparameterize_log_weights(..., num_samples=K)`` call, which also gives each draw's
    :math:`\log p(z_k) - \log q(z_k\mid x)`) it maximizes

    .. math:: \mathcal L_K(x) = \mathbb E\left[\log \frac1K \sum_{k=1}^K
              \frac{p(x\mid z_k)\,p(z_k)}{q(z_k\mid x)}\right],
              \qquad \mathrm{ELBO} = \mathcal L_1 \le \mathcal L_K \le \log p(x).

    ``loss(x).elbo`` is :math:`\mathcal L_K` (log-mean-exp of the weights), ``loss`` its
    negation, ``kl`` the analytic KL of the encoder, ``reconstruction`` the mean over the
    :math:`K` draws of :math:`-\log p(x\mid z_k)`.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, *, num_samples: int = 5,
                 **kwargs) -> None:
        if not (isinstance(num_samples, int) and num_samples > 0):
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        super().__init__(encoder, decoder, latent_dim, **kwargs)
        self.num_samples = num_samples

    def loss(self, x: Tensor, y: Tensor | None = None, *, generator: torch.Generator | None = None) -> VAELoss:
        log_weights, reconstruction_ll, kl = self.importance_log_weights(x, y, self.num_samples, generator=generator)
        bound = (torch.logsumexp(log_weights, dim=0) - math.log(self.num_samples)).mean()
        return VAELoss(loss=-bound, elbo=bound, kl=kl.mean(), reconstruction=-reconstruction_ll.mean())
