"""fit(..., cuda_graph=True): the VAE family's step captured once and replayed, on a GPU."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from fastgen.data import digits
from fastgen.models import IWAE, VAE, ConditionalVAE
from fastgen.train import fit, load_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")

SHAPE = (1, 8, 8)
BUILDERS = {
    "vae": lambda: VAE.mlp(SHAPE, latent_dim=4, hidden=32),
    "cvae": lambda: ConditionalVAE.mlp(SHAPE, num_classes=10, latent_dim=4, hidden=32),
    "iwae": lambda: IWAE.mlp(SHAPE, latent_dim=4, hidden=32, num_samples=5),
}


@pytest.fixture(scope="module")
def data():
    train, test = digits()
    return TensorDataset(*(t[:512] for t in train.tensors)), TensorDataset(*(t[:128] for t in test.tensors))


def _fit(name, data, out_dir, **kwargs):
    torch.manual_seed(0)
    model = BUILDERS[name]()
    history = fit(model, data[0], eval_data=data[1], out_dir=out_dir, device="cuda", batch_size=64, progress=False,
                  plot_every=100, log=lambda message: None, **kwargs)
    return model, history


@pytest.mark.parametrize("name", list(BUILDERS))
def test_graph_training_follows_eager_training(tmp_path, data, name):
    """The same run with and without the graph: the same metrics, close values, and learning."""
    _, eager = _fit(name, data, tmp_path / "eager", epochs=3)
    model, graphed = _fit(name, data, tmp_path / "graph", epochs=3, cuda_graph=True)
    assert [sorted(row) for row in graphed] == [sorted(row) for row in eager]
    for row in graphed:
        assert all(math.isfinite(value) for value in row.values())
    assert graphed[-1]["train_loss"] < graphed[0]["train_loss"]
    # The warm-up steps are undone and the replays draw the generator's stream in order, so the
    # two runs differ only by kernel-level rounding (cuBLAS may pick other kernels under capture).
    for key in ("train_loss", "eval_loss"):
        for e, g in zip(eager, graphed):
            assert g[key] == pytest.approx(e[key], rel=2e-2), key
    assert next(model.parameters()).is_cuda


def test_graph_run_resumes_from_its_checkpoint(tmp_path, data):
    _, first = _fit("vae", data, tmp_path, epochs=1, cuda_graph=True)
    _, history = _fit("vae", data, tmp_path, epochs=2, cuda_graph=True, resume=True)
    assert history[0] == first[0] and len(history) == 2
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2


def test_graph_step_detects_a_diverged_loss(tmp_path, data):
    torch.manual_seed(0)
    model = VAE.mlp(SHAPE, latent_dim=4, hidden=32, lr=1e30)
    with pytest.raises(FloatingPointError, match="non-finite .* checked every 10 steps"):
        fit(model, data[0], out_dir=tmp_path, device="cuda", batch_size=64, epochs=3, progress=False,
            log=lambda message: None, cuda_graph=True)
