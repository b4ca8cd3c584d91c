"""The seed's own VAE cell runs on fastgen.dgm with only its imports changed (and x_dim = 64 for digits),
and reaches the held-out ELBO of fastgen.models.VAE (same networks, same batches) within 1 nat."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.utils.data
from torch import nn, optim
from torch.nn import functional as F

from fastgen.models import VAE as FastgenVAE

CELL = Path(__file__).with_name("seed_cell.py")
EPOCHS = 5


def _loader(images, labels, seed):
    dataset = torch.utils.data.TensorDataset(images, labels)
    return torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def _held_out_elbo(negative_elbo, draws=20):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return sum(-float(negative_elbo(generator)) for _ in range(draws)) / draws


class _Encoder(nn.Module):
    """The seed's Inference network for fastgen.models.VAE: (mean, logvar) instead of a dict."""

    def __init__(self, x_dim=64, z_dim=64):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(x_dim, 512), nn.Linear(512, 512)
        self.fc31, self.fc32 = nn.Linear(512, z_dim), nn.Linear(512, z_dim)

    def forward(self, x):
        h = F.relu(self.fc2(F.relu(self.fc1(x))))
        return self.fc31(h), self.fc32(h)


def test_seed_cell_runs_and_matches_fastgen_models_vae(digit_splits, capsys):
    train_set, test_set = digit_splits
    images, labels = train_set.tensors[0].reshape(-1, 64), train_set.tensors[1]
    test_images = test_set.tensors[0].reshape(-1, 64)

    # what the seed's first cell defines, on digits instead of MNIST
    torch.manual_seed(1)
    namespace = {"torch": torch, "nn": nn, "F": F, "optim": optim, "tqdm": lambda iterable: iterable,
                 "train_loader": _loader(images, labels, seed=1), "__name__": "seed_cell"}
    exec(compile(CELL.read_text(), str(CELL), "exec"), namespace)
    for epoch in range(1, EPOCHS + 1):
        namespace["train"](epoch)
    assert f"Epoch: {EPOCHS} Train loss:" in capsys.readouterr().out
    loss, q, p = namespace["loss"], namespace["q"], namespace["p"]
    assert namespace["print_latex"](loss) == "mean(KL[q(z|x)||p_{prior}(z)] - E_{q(z|x)}[log p(x|z)])"
    assert (p * namespace["prior"]).prob_joint_factorized_and_text == "p(x,z) = p(x|z)p_{prior}(z)"
    elbo_dgm = _held_out_elbo(lambda g: loss.eval({"x": test_images}, generator=g))

    torch.manual_seed(1)
    decoder = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 64))
    model = FastgenVAE(_Encoder(), decoder, latent_dim=64, lr=1e-3)
    loader = _loader(images, labels, seed=1)  # the same batches in the same order
    for _ in range(EPOCHS):
        for x, _ in loader:
            model.step(x)
    elbo_models = _held_out_elbo(lambda g: -model.loss(test_images, generator=g).elbo)

    print(f"held-out ELBO after {EPOCHS} epochs: fastgen.dgm (seed cell) {elbo_dgm:.2f}, "
          f"fastgen.models.VAE {elbo_models:.2f}")
    assert elbo_dgm > -40 and elbo_models > -40  # both learned (an untrained one is near -51)
    assert abs(elbo_dgm - elbo_models) < 1.0
