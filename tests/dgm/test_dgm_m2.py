"""M2 (examples/m2_digits.py) on fastgen.dgm: its loss, and its classifier against supervised-only training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import m2_digits  # noqa: E402


def test_m2_text_and_unlabeled_loss_marginalizes_y():
    torch.manual_seed(0)
    model, q_y, q, p = m2_digits.build(hidden=16, z_dim=2)
    assert p.prob_joint_factorized_and_text == "p(x,y,z) = p(x|y,z)p(y)p(z)"
    assert q.prob_joint_factorized_and_text == "q(y,z|x) = q(y|x)q(z|x,y)"
    assert "E_{q(y_u|x_u)}[KL[q(z|x_u,y_u)||p(z)]" in model.loss_cls.loss_text
    assert sorted(model.loss_cls.input_var) == ["x", "x_u", "y"]
    x = torch.rand(3, 64)
    y = F.one_hot(torch.tensor([0, 4, 9]), 10).float()
    value = model.loss_cls.eval({"x": x, "y": y, "x_u": x})
    assert value.dim() == 0 and torch.isfinite(value)


@pytest.mark.parametrize("seed", [0])
def test_m2_classifier_beats_the_same_network_on_the_labels_alone(seed):
    m2, _ = m2_digits.train_m2(steps=500, seed=seed)
    supervised = m2_digits.train_supervised(seed=seed)
    print(f"held-out accuracy, 10 labels per class: M2 q(y|x) {m2:.3f}, supervised only {supervised:.3f}")
    assert m2 > supervised + 0.01
