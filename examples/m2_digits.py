"""M2, the semi-supervised VAE of Kingma et al. (2014), written with fastgen.dgm.

Generative model ``p(x, y, z) = p(x|y,z) p(y) p(z)`` with ``p(y)`` uniform over the 10 classes
and ``p(z) = N(0, I)``; inference model ``q(z|x,y) q(y|x)``. For a labeled pair the loss is the
negative ELBO

    L(x, y) = KL[q(z|x,y) || p(z)] - E_q(z|x,y)[log p(x|y,z)] - log p(y),

for an unlabeled image ``y`` is marginalized by enumerating the classes,

    U(x) = E_q(y|x)[L(x, y)] - H[q(y|x)],

and the classifier ``q(y|x)`` also learns from the labels directly:
``J = mean L(x_l, y_l) + mean U(x_u) + alpha * mean(-log q(y_l|x_l))``.

On scikit-learn's 8x8 digits with 10 labels per class, the classifier ``q(y|x)`` is compared on
the held-out split with the same network trained on those 100 labels alone::

    python examples/m2_digits.py            # about 20 s per seed on one CPU core
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from fastgen.data import digits
from fastgen.dgm import (Bernoulli, Categorical, Entropy, Expectation, KullbackLeibler, LogProb, Model, Normal,
                         StochasticReconstructionLoss)

X_DIM, Y_DIM = 64, 10


def classifier_network(hidden: int) -> nn.Module:
    """The network of q(y|x): shared by M2 and the supervised-only baseline."""
    return nn.Sequential(nn.Linear(X_DIM, hidden), nn.ReLU(), nn.Linear(hidden, Y_DIM))


class Classifier(Categorical):
    """q(y|x)"""

    def __init__(self, hidden: int):
        super().__init__(cond_var=["x"], var=["y"], name="q")
        self.net = classifier_network(hidden)

    def forward(self, x):
        return {"logits": self.net(x)}


class Encoder(Normal):
    """q(z|x,y)"""

    def __init__(self, hidden: int, z_dim: int):
        super().__init__(cond_var=["x", "y"], var=["z"], name="q")
        self.fc = nn.Linear(X_DIM + Y_DIM, hidden)
        self.loc = nn.Linear(hidden, z_dim)
        self.scale = nn.Linear(hidden, z_dim)

    def forward(self, x, y):
        h = F.relu(self.fc(torch.cat([x, y], dim=-1)))
        return {"loc": self.loc(h), "scale": F.softplus(self.scale(h))}


class Decoder(Bernoulli):
    """p(x|y,z)"""

    def __init__(self, hidden: int, z_dim: int):
        super().__init__(cond_var=["y", "z"], var=["x"], name="p")
        self.fc = nn.Linear(z_dim + Y_DIM, hidden)
        self.out = nn.Linear(hidden, X_DIM)

    def forward(self, y, z):
        return {"logits": self.out(F.relu(self.fc(torch.cat([z, y], dim=-1))))}


def build(hidden: int = 128, z_dim: int = 8, alpha: float = 20.0, lr: float = 3e-3):
    """The M2 model: its distributions, its loss and a fastgen.dgm Model training them."""
    q_y, q_z, p_x = Classifier(hidden), Encoder(hidden, z_dim), Decoder(hidden, z_dim)
    p_y = Categorical(probs=torch.full((Y_DIM,), 1.0 / Y_DIM), var=["y"], name="p")
    p_z = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[z_dim], name="p")

    # labeled batch: variables x, y
    labeled = KullbackLeibler(q_z, p_z) + StochasticReconstructionLoss(q_z, p_x) - LogProb(p_y)
    classification = -LogProb(q_y)
    # unlabeled batch: the same networks read x_u, and y_u is enumerated
    q_z_u, p_x_u = q_z.replace_var(x="x_u", y="y_u"), p_x.replace_var(x="x_u", y="y_u")
    q_y_u, p_y_u = q_y.replace_var(x="x_u", y="y_u"), p_y.replace_var(y="y_u")
    labeled_u = KullbackLeibler(q_z_u, p_z) + StochasticReconstructionLoss(q_z_u, p_x_u) - LogProb(p_y_u)
    unlabeled = Expectation(q_y_u, labeled_u) - Entropy(q_y_u)

    loss = labeled.mean() + unlabeled.mean() + alpha * classification.mean()
    model = Model(loss, distributions=[q_y, q_z, p_x], optimizer=torch.optim.Adam, optimizer_params={"lr": lr})
    return model, q_y, (q_y * q_z), (p_x * p_y * p_z)


def split(labels_per_class: int = 10, seed: int = 0):
    """(x_l, y_l one-hot), x_u and (x_test, y_test) from the digits' fixed train/test split."""
    train, test = digits()
    x, y = train.tensors[0].reshape(-1, X_DIM), train.tensors[1]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=generator)
    chosen = torch.cat([order[y[order] == c][:labels_per_class] for c in range(Y_DIM)])
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[chosen] = True
    x_test, y_test = test.tensors[0].reshape(-1, X_DIM), test.tensors[1]
    return (x[mask], F.one_hot(y[mask], Y_DIM).float()), x[~mask], (x_test, y_test)


def accuracy(logits_fn, x, y) -> float:
    with torch.no_grad():
        return float((logits_fn(x).argmax(-1) == y).float().mean())


def train_m2(steps: int = 1500, batch: int = 64, seed: int = 0, log=None, **kwargs):
    """Train M2; returns (held-out accuracy of q(y|x), the model)."""
    (x_l, y_l), x_u, (x_test, y_test) = split(seed=seed)
    torch.manual_seed(seed)
    model, q_y, _, _ = build(**kwargs)
    generator = torch.Generator().manual_seed(seed)
    order, start = torch.randperm(len(x_u), generator=generator), 0
    for step in range(steps):
        if start + batch > len(order):
            order, start = torch.randperm(len(x_u), generator=generator), 0
        x_batch = x_u[order[start:start + batch]]
        start += batch
        loss = model.train({"x": x_l, "y": y_l, "x_u": x_batch})
        if log and (step + 1) % 250 == 0:
            log(f"step {step + 1}: loss {float(loss):.2f}, held-out accuracy "
                f"{accuracy(lambda x: q_y.get_params({'x': x})['logits'], x_test, y_test):.3f}")
    return accuracy(lambda x: q_y.get_params({"x": x})["logits"], x_test, y_test), model


def train_supervised(steps: int = 500, hidden: int = 128, lr: float = 1e-3, seed: int = 0) -> float:
    """The same classifier network trained on the 100 labels alone; held-out accuracy."""
    (x_l, y_l), _, (x_test, y_test) = split(seed=seed)
    torch.manual_seed(seed)
    net = classifier_network(hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    targets = y_l.argmax(-1)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x_l), targets).backward()
        optimizer.step()
    return accuracy(net, x_test, y_test)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, _, q, p = build()
    print(f"generative model: {p.prob_joint_factorized_and_text}")
    print(f"inference model:  {q.prob_joint_factorized_and_text}")
    print(f"loss: {model.loss_cls.loss_text}")
    for seed in range(args.seeds):
        started = time.perf_counter()
        m2, _ = train_m2(args.steps, seed=seed)
        supervised = train_supervised(seed=seed)
        print(f"seed {seed}: held-out accuracy of q(y|x): M2 {m2:.3f}, supervised only {supervised:.3f} "
              f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
