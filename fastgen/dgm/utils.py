"""Text of distributions and losses (the seed's ``print_latex``, in plain text)."""

from __future__ import annotations

from .distributions import Distribution
from .losses import Loss, Terms

__all__ = ["Formula", "print_latex"]


class Formula(str):
    """A formula as text; a notebook renders it as LaTeX, a console shows it as is."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_latex_(self) -> str:
        return "$$" + str(self).replace("||", r"\,\|\,") + "$$"


def print_latex(obj) -> Formula:
    """The formula of a distribution (its factorization), a loss, or a model's loss."""
    if isinstance(obj, Distribution):
        return Formula(obj.prob_joint_factorized_and_text)
    if isinstance(obj, Loss):
        return Formula(obj.loss_text)
    if isinstance(obj, Terms):
        return Formula(repr(obj))
    loss = getattr(obj, "loss_cls", None)
    if isinstance(loss, Loss):
        return Formula(loss.loss_text)
    raise TypeError(f"print_latex takes a fastgen.dgm distribution, loss or model, got {type(obj).__name__}")
