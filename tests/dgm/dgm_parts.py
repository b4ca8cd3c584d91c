"""Small distributions over the digits' sizes shared by the fastgen.dgm tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastgen import dgm


class Inference(dgm.Normal):
    """q(z|x): loc and softplus scale (the seed's encoder, small)."""

    def __init__(self, x_dim=12, z_dim=3, hidden=16, logvar=False):
        super().__init__(cond_var=["x"], var=["z"], name="q")
        self.fc = nn.Linear(x_dim, hidden)
        self.loc = nn.Linear(hidden, z_dim)
        self.spread = nn.Linear(hidden, z_dim)
        self.use_logvar = logvar
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = torch.tanh(self.fc(x))
        if self.use_logvar:
            return {"loc": self.loc(h), "logvar": self.spread(h)}
        return {"loc": self.loc(h), "scale": F.softplus(self.spread(h))}


class Generator(dgm.Bernoulli):
    """p(x|z) with probs (as the seed) or logits."""

    def __init__(self, x_dim=12, z_dim=3, hidden=16, probs=True):
        super().__init__(cond_var=["z"], var=["x"], name="p")
        self.fc = nn.Linear(z_dim, hidden)
        self.out = nn.Linear(hidden, x_dim)
        self.use_probs = probs

    def forward(self, z):
        logits = self.out(torch.tanh(self.fc(z)))
        return {"probs": torch.sigmoid(logits)} if self.use_probs else {"logits": logits}


class Classifier(dgm.Categorical):
    """q(y|x) over four classes."""

    def __init__(self):
        super().__init__(cond_var=["x"], var=["y"], name="q")
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        return {"logits": self.fc(x)}
