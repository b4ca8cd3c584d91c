"""A pixyz-style VAE (conditional Normal encoder, Bernoulli decoder, KL + reconstruction) on the
digits data trains on fastgen's classes to the held-out ELBO it reaches on torch's, and its
fastgen loss takes the sample and the KL from one reparameterize_kl pass per step.

The model and its training loop are bench/distributions.py's (which times the training step).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributions as td

import fastgen.distributions as fd
import fastgen.ops

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a repository tool, not part of the installed package
    sys.path.insert(0, str(ROOT))

pytest.importorskip("sklearn")
from bench.distributions import PixyzVAE, digits, pixyz_vae_elbo, pixyz_vae_train


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


def test_the_fastgen_loss_samples_and_takes_the_kl_in_one_fused_pass(monkeypatch):
    calls = []
    for name in ("reparameterize_kl", "reparameterize", "gaussian_kl", "bernoulli_log_likelihood"):
        original = getattr(fastgen.ops, name)

        def counting(*args, _name=name, _original=original, **kwargs):
            calls.append((_name, kwargs.get("event_dims")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(fastgen.ops, name, counting)
    train, _ = digits()
    torch.manual_seed(0)
    fastgen_model = PixyzVAE(fd)
    loss = fastgen_model.loss(train[:32])
    assert calls == [("reparameterize_kl", 1), ("bernoulli_log_likelihood", 1)]
    loss.backward()
    # the same weights on torch's classes give the same loss up to the noise draw
    torch.manual_seed(0)
    torch_model = PixyzVAE(td)
    with torch.no_grad():
        for a, b in zip(fastgen_model.parameters(), torch_model.parameters()):
            torch.testing.assert_close(a, b)
        q = fastgen_model.encoder(train[:32])
        kl_fastgen = fd.rsample_and_kl(q, fastgen_model.prior)[1]
        kl_torch = td.kl_divergence(torch_model.encoder(train[:32]), torch_model.prior)
    torch.testing.assert_close(kl_fastgen, kl_torch)


def test_fastgen_classes_train_to_torchs_held_out_elbo():
    train, test = digits()
    elbo = {}
    for name, dists in (("torch", td), ("fastgen", fd)):
        model = pixyz_vae_train(dists, train, epochs=12, seed=0)
        elbo[name] = pixyz_vae_elbo(model, test)
    assert elbo["fastgen"] == pytest.approx(elbo["torch"], abs=0.5), elbo
    assert elbo["torch"] > -32.0, elbo  # it learned (an untrained model is near -45 nats)


def test_the_benchmark_table_runs(capsys):
    from bench.distributions import REQUIRED, main

    assert main(["--quick", "--no-vae", "--modes", "fwd", "--validate", "off", "--min-time", "0"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "128x20" in line]
    assert [line.split(" | ")[0][2:] for line in lines] == [case.name for case in REQUIRED]
    for line in lines:
        torch_us, fastgen_us = (float(cell) for cell in line.split(" | ")[4:6])
        assert torch_us > 0 and fastgen_us > 0
