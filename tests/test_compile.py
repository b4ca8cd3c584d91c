"""torch.compile(fullgraph=True) through every fastgen op: no graph break, same results as eager."""

from __future__ import annotations

import pytest
import torch
from fastgen_checks import rand

import fastgen


def _inputs(dtype=torch.float32):
    mu = rand((4, 6), dtype, seed=1, requires_grad=True)
    logvar = rand((4, 6), dtype, seed=2, requires_grad=True)
    prior_mu = rand((6,), dtype, seed=3, requires_grad=True)
    target = rand((4, 6), dtype, low=0, high=1, seed=4)
    return mu, logvar, prior_mu, target


def deterministic_losses(mu, logvar, prior_mu, target):
    kl = fastgen.gaussian_kl(mu, logvar, prior_mu, logvar * 0.5, reduction="sum")
    bce = fastgen.bernoulli_log_likelihood(mu, target, reduction="mean")
    gll = fastgen.gaussian_log_likelihood(target, mu, logvar, event_dims=2)
    gll_unit = fastgen.gaussian_log_likelihood(target, prior_mu)
    return kl, bce, gll, gll_unit.sum()


def every_op(mu, logvar, prior_mu, target):
    z = fastgen.reparameterize(mu, logvar, num_samples=2)
    z2, kl_std = fastgen.reparameterize_kl(mu, logvar)
    recon = fastgen.bernoulli_log_likelihood(z, target, reduction="sum")
    deterministic = deterministic_losses(mu, logvar, prior_mu, target)
    return z, z2, recon + kl_std.sum() + sum(deterministic), deterministic


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def test_every_op_forward_and_backward_no_graph_break():
    compiled = torch.compile(every_op, fullgraph=True, backend="inductor")
    inputs = _inputs()
    torch.manual_seed(0)
    z, z2, loss, deterministic = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs[:3])
    assert not torch._dynamo.utils.counters["graph_break"]
    assert z.shape == (2, 4, 6) and z2.shape == (4, 6) and loss.dtype == torch.float32
    # Deterministic ops equal eager; random ones reproduce eager for the same seed.
    eager_inputs = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    torch.manual_seed(0)
    ez, ez2, eloss, edet = every_op(*eager_inputs)
    egrads = torch.autograd.grad(eloss, eager_inputs[:3])
    for a, e in zip(deterministic, edet):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z, ez, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z2, ez2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, eloss, rtol=1e-5, atol=1e-4)
    for a, e in zip(grads, egrads):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4)
    # Fresh noise on the next call of the compiled function.
    z_again = compiled(*inputs)[0]
    assert not torch.equal(z_again, z)


def test_clamp_compiles_without_graph_break():
    def clip(ts):
        fastgen.clamp_(ts, -0.1, 0.1)
        return ts[0] * 2

    ts = [torch.linspace(-1, 1, 11), torch.linspace(-1, 1, 7)]
    expected = [t.clamp(-0.1, 0.1) for t in ts]
    out = torch.compile(clip, fullgraph=True, backend="aot_eager")(ts)
    assert not torch._dynamo.utils.counters["graph_break"]
    for t, e in zip(ts, expected):
        torch.testing.assert_close(t, e)
    torch.testing.assert_close(out, expected[0] * 2)


def test_autocast_bfloat16():
    """Under CPU autocast to bfloat16, losses come back float32 and reparameterize keeps its input dtype."""

    def run(mu, logvar, prior_mu, target):
        z = fastgen.reparameterize(mu, logvar)
        z_half = fastgen.reparameterize(mu.to(torch.bfloat16), logvar.to(torch.bfloat16))
        _, kl_std = fastgen.reparameterize_kl(mu.to(torch.bfloat16), logvar.to(torch.bfloat16))
        losses = deterministic_losses(mu, logvar, prior_mu, target)
        half_losses = deterministic_losses(*(t.to(torch.bfloat16) for t in (mu, logvar, prior_mu, target)))
        return z, z_half, kl_std, losses, half_losses

    inputs = _inputs()
    for fn in (run, torch.compile(run, fullgraph=True, backend="aot_eager")):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z, z_half, kl_std, losses, half_losses = fn(*inputs)
        assert z.dtype == torch.float32 and z_half.dtype == torch.bfloat16
        assert kl_std.dtype == torch.float32
        for loss, half_loss in zip(losses, half_losses):
            assert loss.dtype == torch.float32 and half_loss.dtype == torch.float32
            torch.testing.assert_close(half_loss, loss, rtol=2e-2, atol=5e-2)
        sum(half_losses).backward()
    assert not torch._dynamo.utils.counters["graph_break"]
    assert inputs[0].grad is not None and inputs[0].grad.dtype == torch.float32


def test_every_registered_op_is_opchecked():
    """Every op of both namespaces (public and kernel ops) is opchecked in tests/ops."""
    import pathlib

    sources = "".join(path.read_text() for path in (pathlib.Path(__file__).parent / "ops").glob("test_*.py"))
    names = {name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("fastgen::")}
    assert set(fastgen.ops.REGISTRY) <= names
    missing = {name for name in names if f"torch.ops.fastgen.{name}.default" not in sources}
    assert not missing, f"ops without an opcheck test in tests/ops: {sorted(missing)}"
    triton_names = {
        name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("fastgen_triton::")
    }
    assert triton_names == names, "both namespaces define the same ops"
