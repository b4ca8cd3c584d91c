"""bench.dgm_step compares like with like: the dgm step and the hand-written one compute the same loss."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a repository tool, not part of the installed package
    sys.path.insert(0, str(ROOT))

from bench import dgm_step  # noqa: E402


def test_providers_take_the_same_step(one_thread):
    steps = dgm_step.make_steps(x_dim=16, z_dim=4, batch=8, hidden=8)
    values = {}
    for name, step in steps.items():
        torch.manual_seed(0)
        values[name] = [float(step()) for _ in range(3)]
    # same weights, same data, same noise stream: dgm is the hand-written step
    assert values["dgm"] == values["fastgen"]
    # torch's noise differs, the objective does not: every provider's first loss is close
    for name in ("torch.distributions", "eager"):
        assert abs(values[name][0] - values["fastgen"][0]) < 0.1 * abs(values["fastgen"][0])
