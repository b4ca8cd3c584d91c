"""fastgen.dgm models: Model.train / test, the VAE and ML presets, clipping, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgm_parts import Generator, Inference
from fastgen import dgm
from fastgen.dgm import KullbackLeibler, LossError, Model, StochasticReconstructionLoss


def _batches(count=40, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centers = torch.bernoulli(torch.full((4, 12), 0.5), generator=generator)
    return [centers[torch.randint(0, 4, (size,), generator=generator)] for _ in range(count)]


def test_model_trains_and_tests(vae_parts):
    q, p, prior, _ = vae_parts
    loss = (KullbackLeibler(q, prior) + StochasticReconstructionLoss(q, p)).mean()
    model = Model(loss=loss, distributions=[p, q], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
    batches = _batches()
    held_out = {"x": batches[0]}
    before = float(model.test(held_out, generator=torch.Generator().manual_seed(0)))
    values = [model.train({"x": x}) for x in batches]
    after = float(model.test(held_out, generator=torch.Generator().manual_seed(0)))
    assert all(v.dim() == 0 and not v.requires_grad for v in values)
    assert after < before - 1.0
    assert q.training and p.training  # test() puts them back
    text = str(model)
    assert "p(x|z)" in text and "mean(KL[q(z|x)||p_{prior}(z)] - E_{q(z|x)}[log p(x|z)])" in text and "Adam" in text
    state = model.state_dict()
    clone = Model(loss=loss, distributions=[p, q])
    clone.load_state_dict(state)


def test_test_runs_without_gradient_in_eval_mode(vae_parts):
    q, p, prior, x = vae_parts
    q.dropout = nn.Dropout(0.5)
    modes = []
    q.register_forward_hook(lambda module, args, out: modes.append(module.training))
    model = Model(loss=(KullbackLeibler(q, prior)).mean(), distributions=[q])
    value = model.test({"x": x})
    assert not value.requires_grad and modes == [False]
    model.train({"x": x})
    assert modes == [False, True]


def test_presets_vae_and_ml(vae_parts):
    q, p, prior, _ = vae_parts
    vae = dgm.VAE(q, p, regularizer=KullbackLeibler(q, prior), optimizer_params={"lr": 1e-2})
    assert vae.loss_cls.loss_text == "mean(-E_{q(z|x)}[log p(x|z)] + KL[q(z|x)||p_{prior}(z)])"
    batches = _batches()
    first = float(vae.train({"x": batches[0]}))
    for x in batches[1:]:
        last = float(vae.train({"x": x}))
    assert last < first

    learned = dgm.Bernoulli(logits=nn.Parameter(torch.zeros(12)), var=["x"], name="p")
    ml = dgm.ML(learned, optimizer_params={"lr": 0.1})
    data = torch.bernoulli(torch.full((256, 12), 0.8), generator=torch.Generator().manual_seed(0))
    for _ in range(100):
        ml.train({"x": data})
    torch.testing.assert_close(torch.sigmoid(learned.logits), data.mean(0), atol=0.03, rtol=0)


def test_clipping_and_shared_views(vae_parts):
    q, p, prior, x = vae_parts
    loss = StochasticReconstructionLoss(q, p).mean() + KullbackLeibler(q.replace_var(x="x_u"), prior).mean()
    model = Model(loss, distributions=[q, q.replace_var(x="x_u"), p], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.0}, clip_grad_norm=1e-3, clip_grad_value=1e-4)
    assert len(list(model.parameters())) == len(list(q.parameters())) + len(list(p.parameters()))
    model.train({"x": x, "x_u": x})
    assert max(float(param.grad.abs().max()) for param in model.parameters()) <= 1e-4


def test_model_errors(vae_parts):
    q, p, prior, x = vae_parts
    per_sample = KullbackLeibler(q, prior)
    model = Model(per_sample, distributions=[q])
    with pytest.raises(LossError, match=r"scalar.*shape \(5,\).*\.mean\(\)"):
        model.train({"x": x})
    with pytest.raises(LossError, match="must be a fastgen.dgm loss"):
        Model(lambda x: x, distributions=[q])
    with pytest.raises(LossError, match="must be fastgen.dgm distributions"):
        Model(per_sample.mean(), distributions=[nn.Linear(2, 2)])
