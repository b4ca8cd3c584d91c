"""The seed's Distribution / Loss / Model API for deep generative models, on fastgen's fused ops.

* Distribution API (:mod:`fastgen.dgm.distributions`): ``Normal``, ``Bernoulli``,
  ``Categorical`` -- each network hides inside a conditional distribution whose ``forward``
  returns its parameters; ``p(x|z) * p(z)`` is a joint.
* Loss API (:mod:`fastgen.dgm.losses`): ``KullbackLeibler``, ``StochasticReconstructionLoss``,
  ``LogProb``, ``Prob``, ``Expectation``, ``Entropy`` and their arithmetic; evaluation runs
  the fused kernels (``gaussian_kl``, ``bernoulli_log_likelihood``, one ``reparameterize_kl``
  for a sample and its KL to N(0, I)).
* Model API (:mod:`fastgen.dgm.models`): ``Model(loss, distributions, optimizer)`` with
  ``train(x_dict)`` / ``test(x_dict)``, and the presets ``VAE`` and ``ML``.

The seed's example runs with its imports pointed here::

    from fastgen.dgm.distributions import Normal, Bernoulli
    from fastgen.dgm.losses import KullbackLeibler, StochasticReconstructionLoss
    from fastgen.dgm.models import VAE, Model
    from fastgen.dgm.utils import print_latex
"""

from .distributions import Bernoulli, Categorical, Distribution, DistributionError, Joint, Normal
from .losses import (
    Constant,
    Entropy,
    Expectation,
    KullbackLeibler,
    LogProb,
    Loss,
    LossError,
    Prob,
    StochasticReconstructionLoss,
    Terms,
)
from .models import ML, VAE, Model
from .utils import Formula, print_latex

__all__ = [
    "Distribution", "Normal", "Bernoulli", "Categorical", "Joint", "DistributionError",
    "Loss", "LossError", "LogProb", "Prob", "KullbackLeibler", "Entropy", "Expectation",
    "StochasticReconstructionLoss", "Constant", "Terms",
    "Model", "VAE", "ML",
    "Formula", "print_latex",
]
