"""fastgen.reparameterize_log_weights: the z of reparameterize and IWAE's log p(z) - log q(z|x) in one pass."""

from __future__ import annotations

import pytest
import torch
from fastgen_checks import DTYPES, SHAPES, assert_close, f64, normal, rand, seeded

import fastgen

PRIORS = ["none", "learned", "full", "mu_only", "logvar_only"]


def _generator(device, seed=99):
    return torch.Generator(device=device).manual_seed(seed)


def _prior(kind, shape, event_dims, dtype, device, requires_grad=False):
    """(prior_mu, prior_logvar) of a kind; "learned" is a broadcast prior of the event shape."""
    if kind == "none":
        return None, None
    pshape = shape if kind != "learned" else shape[len(shape) - max(event_dims, 1) :]
    pm = rand(pshape, dtype, device, low=-0.5, high=0.5, seed=7, requires_grad=requires_grad)
    plv = rand(pshape, dtype, device, low=-0.5, high=0.5, seed=8, requires_grad=requires_grad)
    return {"mu_only": (pm, None), "logvar_only": (None, plv)}.get(kind, (pm, plv))


def oracle_log_weights(mu, logvar, z, prior_mu=None, prior_logvar=None, event_dims=1):
    """Independent(Normal(prior)).log_prob(z) - Independent(Normal(mu, e^(logvar/2))).log_prob(z), float64.

    z (float64) is the sample; its gradient path to mu and logvar is the
    reparameterization z = mu + e^(logvar/2) eps with eps recovered from z.
    """
    mu, logvar, z = f64(mu), f64(logvar), f64(z).detach()
    eps = ((z - mu) * torch.exp(-0.5 * logvar)).detach()
    z = mu + torch.exp(0.5 * logvar) * eps
    pm = torch.zeros((), dtype=torch.float64, device=z.device) if prior_mu is None else f64(prior_mu)
    plv = torch.zeros((), dtype=torch.float64, device=z.device) if prior_logvar is None else f64(prior_logvar)
    shape = torch.broadcast_shapes(mu.shape, logvar.shape, pm.shape, plv.shape)
    log_p = normal(pm.expand(shape), plv.expand(shape), event_dims).log_prob(z)
    log_q = normal(mu.expand(shape), logvar.expand(shape), event_dims).log_prob(z)
    return log_p - log_q


@pytest.mark.parametrize("shape,event_dims", SHAPES)
@pytest.mark.parametrize("num_samples", [None, 3])
@pytest.mark.parametrize("prior", PRIORS)
def test_matches_reparameterize_and_distributions(device, backend, shape, event_dims, num_samples, prior):
    mu = rand(shape, torch.float64, device, seed=1)
    logvar = rand(shape, torch.float64, device, seed=2)
    pm, plv = _prior(prior, shape, event_dims, torch.float64, device)
    z, log_w = fastgen.reparameterize_log_weights(
        mu, logvar, num_samples=num_samples, generator=_generator(device), event_dims=event_dims,
        prior_mu=pm, prior_logvar=plv,
    )  # fmt: skip
    same_z = fastgen.reparameterize(mu, logvar, num_samples=num_samples, generator=_generator(device))
    torch.testing.assert_close(z, same_z, rtol=0, atol=0)  # exactly the same sample
    batch = shape[: len(shape) - event_dims]
    assert log_w.shape == (batch if num_samples is None else (num_samples, *batch))
    assert_close(log_w, oracle_log_weights(mu, logvar, z, pm, plv, event_dims))


def test_long_rows(device, backend):
    """Rows longer than a CPU parallel chunk (16384) and a GPU row chunk, K samples."""
    mu, logvar = rand((2, 20000), torch.float64, device, seed=1), rand((2, 20000), torch.float64, device, seed=2)
    z, log_w = fastgen.reparameterize_log_weights(mu, logvar, num_samples=2, generator=_generator(device))
    assert_close(log_w, oracle_log_weights(mu, logvar, z), scale=10)


def test_same_z_under_manual_seed(device):
    mu, logvar = rand((4, 6), device=device, seed=1), rand((4, 6), device=device, seed=2)
    torch.manual_seed(5)
    z, _ = fastgen.reparameterize_log_weights(mu, logvar, num_samples=3)
    torch.manual_seed(5)
    torch.testing.assert_close(z, fastgen.reparameterize(mu, logvar, num_samples=3), rtol=0, atol=0)


def test_rng_state_output(device):
    mu, logvar = rand((3, 5), device=device, seed=1), rand((3, 5), device=device, seed=2)
    z, log_w, rng_state = torch.ops.fastgen._reparameterize_log_weights(mu, logvar, None, None, 2, 1, _generator(device))
    z2, rng_state2 = torch.ops.fastgen._reparameterize(mu, logvar, 2, _generator(device))
    assert torch.equal(rng_state.cpu(), rng_state2.cpu()) and rng_state.dtype == torch.int64
    torch.testing.assert_close(z, z2, rtol=0, atol=0)
    assert log_w.shape == (6,)  # sample-major rows


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_samples", [None, 3])
@pytest.mark.parametrize("prior", ["none", "learned"])
def test_dtypes_forward_and_backward(device, backend, dtype, num_samples, prior):
    shape = (5, 40)
    mu = rand(shape, dtype, device, seed=1, requires_grad=True)
    logvar = rand(shape, dtype, device, seed=2, requires_grad=True)
    pm, plv = _prior(prior, shape, 1, dtype, device, requires_grad=True)
    z, log_w = fastgen.reparameterize_log_weights(
        mu, logvar, num_samples=num_samples, generator=_generator(device), prior_mu=pm, prior_logvar=plv
    )
    assert z.dtype == dtype and log_w.dtype == dtype
    # The oracle at the same sample, computed in float64 from the rounded inputs.
    z64 = fastgen.reparameterize(
        mu.detach().double(), logvar.detach().double(), num_samples=num_samples, generator=_generator(device)
    )
    torch.testing.assert_close(z.double(), z64, **({"rtol": 0, "atol": 0} if dtype == torch.float64 else {
        "rtol": 1e-5 if dtype == torch.float32 else 1e-2, "atol": 1e-5 if dtype == torch.float32 else 1e-2}))
    leaves = [t.detach().double().requires_grad_() for t in (mu, logvar, pm, plv) if t is not None]
    expected = oracle_log_weights(leaves[0], leaves[1], z64, *(leaves[2:] or [None, None]))
    # log-weights sum terms of size ~1 over 40 columns: a few ulps of the sum.
    assert_close(log_w, expected, scale=20)
    gz = rand(z.shape, dtype, device, low=-2, high=2, seed=3)
    gw = rand(log_w.shape, dtype, device, low=-2, high=2, seed=4)
    inputs = [t for t in (mu, logvar, pm, plv) if t is not None]
    grads = torch.autograd.grad((z, log_w), inputs, (gz, gw))
    z_oracle = leaves[0] + torch.exp(0.5 * leaves[1]) * ((z64 - leaves[0]) * torch.exp(-0.5 * leaves[1])).detach()
    expected_grads = torch.autograd.grad((z_oracle, expected), leaves, (gz.double(), gw.double()))
    for grad, expected_grad, t in zip(grads, expected_grads, inputs):
        assert grad.dtype == dtype and grad.shape == t.shape
        assert_close(grad, expected_grad, scale=40 if dtype in (torch.float32, torch.float64) else 8)


@pytest.mark.parametrize("num_samples", [None, 3])
@pytest.mark.parametrize("event_dims", [0, 1, 2])
@pytest.mark.parametrize("outputs", ["both", "z", "log_w"])
def test_gradcheck(device, num_samples, event_dims, outputs):
    mu = rand((3, 4), torch.float64, device, seed=1, requires_grad=True)
    logvar = rand((3, 4), torch.float64, device, seed=2, requires_grad=True)

    def fn(mu, logvar, generator):
        z, log_w = fastgen.reparameterize_log_weights(
            mu, logvar, num_samples=num_samples, generator=generator, event_dims=event_dims
        )
        return {"both": (z, log_w), "z": z, "log_w": log_w}[outputs]

    assert torch.autograd.gradcheck(seeded(fn), (mu, logvar))


@pytest.mark.parametrize("prior", ["learned", "full", "mu_only", "logvar_only"])
@pytest.mark.parametrize("num_samples", [None, 2])
def test_gradcheck_with_a_prior(device, prior, num_samples):
    mu = rand((3, 5), torch.float64, device, seed=1, requires_grad=True)
    logvar = rand((3, 5), torch.float64, device, seed=2, requires_grad=True)
    pm, plv = _prior(prior, (3, 5), 1, torch.float64, device, requires_grad=True)
    inputs = [t for t in (mu, logvar, pm, plv) if t is not None]

    def fn(*args, generator):
        named = dict(zip([n for n, t in zip(("mu", "logvar", "pm", "plv"), (mu, logvar, pm, plv)) if t is not None], args))
        return fastgen.reparameterize_log_weights(
            named["mu"], named["logvar"], num_samples=num_samples, generator=generator,
            prior_mu=named.get("pm"), prior_logvar=named.get("plv"),
        )  # fmt: skip

    assert torch.autograd.gradcheck(seeded(fn), tuple(inputs))


def test_broadcast_inputs(device):
    mu = rand((6,), torch.float64, device, seed=1, requires_grad=True)
    logvar = rand((4, 6), torch.float64, device, seed=2, requires_grad=True)
    z, log_w = fastgen.reparameterize_log_weights(mu, logvar, generator=_generator(device))
    assert z.shape == (4, 6) and log_w.shape == (4,)
    assert_close(log_w, oracle_log_weights(mu, logvar, z))
    fn = seeded(lambda a, b, generator: fastgen.reparameterize_log_weights(a, b, generator=generator))
    assert torch.autograd.gradcheck(fn, (mu, logvar))


def test_backward_keeps_nothing_of_the_samples_size(device):
    """Saved for backward: the inputs and the [seed, offset] pair, never K x B x D of noise or samples."""
    mu = rand((64, 20), device=device, seed=1, requires_grad=True)
    logvar = rand((64, 20), device=device, seed=2, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        z, log_w = fastgen.reparameterize_log_weights(mu, logvar, num_samples=50)
    assert sum(t.numel() for t in saved) <= 2 * mu.numel() + 2
    # ... and the eager formula keeps the K samples' noise.
    assert z.numel() == 50 * mu.numel() and log_w.shape == (50, 64)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous(device, layout):
    mu, logvar, pm = (rand((8, 6), device=device, seed=seed) for seed in (1, 2, 3))
    if layout == "transposed":
        mu, logvar, pm = mu.t(), logvar.t(), pm.t()
    else:
        mu, logvar, pm = mu[::2, 1:], logvar[::2, 1:], pm[::2, 1:]
    a = fastgen.reparameterize_log_weights(mu, logvar, num_samples=2, prior_mu=pm, generator=_generator(device))
    b = fastgen.reparameterize_log_weights(
        mu.contiguous(), logvar.contiguous(), num_samples=2, prior_mu=pm.contiguous(), generator=_generator(device)
    )
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize(
    "shape,event_dims,batch", [((0, 5), 1, (0,)), ((4, 0), 1, (4,)), ((4, 0), 2, ()), ((2, 0, 3), 1, (2, 0))]
)
@pytest.mark.parametrize("num_samples", [None, 2])
def test_zero_size(device, shape, event_dims, batch, num_samples):
    mu = torch.zeros(shape, device=device, requires_grad=True)
    logvar = torch.zeros(shape, device=device, requires_grad=True)
    z, log_w = fastgen.reparameterize_log_weights(mu, logvar, num_samples=num_samples, event_dims=event_dims)
    assert z.shape == (shape if num_samples is None else (num_samples, *shape))
    assert log_w.shape == (batch if num_samples is None else (num_samples, *batch)) and log_w.dtype == torch.float32
    assert (log_w == 0).all()
    grads = torch.autograd.grad(z.sum() + log_w.sum(), (mu, logvar))
    assert [g.shape for g in grads] == [shape, shape]


def test_prior_errors_name_the_argument():
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"fastgen\.reparameterize_log_weights: shapes do not broadcast: .*prior_mu \(5,\)"):
        fastgen.reparameterize_log_weights(x, x, prior_mu=torch.zeros(5))
    with pytest.raises(TypeError, match=r"fastgen\.reparameterize_log_weights: prior_logvar must be a floating tensor"):
        fastgen.reparameterize_log_weights(x, x, prior_logvar=torch.zeros(4, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"fastgen\.reparameterize_log_weights: prior_mu must be a torch.Tensor, got list"):
        fastgen.reparameterize_log_weights(x, x, prior_mu=[0.0] * 4)
    with pytest.raises(ValueError, match=r"fastgen\.reparameterize_log_weights: all tensors must be on one device, got .*prior_logvar on meta"):
        fastgen.reparameterize_log_weights(x, x, prior_logvar=torch.zeros(4, device="meta"))
    with pytest.raises(RuntimeError, match=r"the prior must not have more elements than mu"):
        torch.ops.fastgen._reparameterize_log_weights(torch.zeros(4), torch.zeros(4), torch.zeros(3, 4), None, None, 1, None)


def test_compiles_without_graph_break():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    def iwae_terms(mu, logvar, pm):
        z, log_w = fastgen.reparameterize_log_weights(mu, logvar, num_samples=4, prior_mu=pm)
        return z, log_w, (torch.logsumexp(log_w, 0) + z.sum((0, 2))).sum()

    mu, logvar = rand((6, 5), seed=1, requires_grad=True), rand((6, 5), seed=2, requires_grad=True)
    pm = rand((5,), seed=3, requires_grad=True)
    compiled = torch.compile(iwae_terms, fullgraph=True, backend="inductor")
    torch.manual_seed(0)
    z, log_w, loss = compiled(mu, logvar, pm)
    grads = torch.autograd.grad(loss, (mu, logvar, pm))
    assert not torch._dynamo.utils.counters["graph_break"]
    torch.manual_seed(0)
    ez, elog_w, eloss = iwae_terms(mu, logvar, pm)
    egrads = torch.autograd.grad(eloss, (mu, logvar, pm))
    torch.testing.assert_close(z, ez, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_w, elog_w, rtol=1e-5, atol=1e-5)
    for a, e in zip(grads, egrads):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4)
    torch._dynamo.reset()


def test_opcheck(device):
    mu = rand((3, 5), torch.float32, device, seed=1, requires_grad=True)
    logvar = rand((3, 5), torch.float32, device, seed=2, requires_grad=True)
    pm = rand((5,), torch.float32, device, seed=3, requires_grad=True)
    op = torch.ops.fastgen.reparameterize_log_weights.default
    # nondeterministic_seeded: opcheck's aot_dispatch test skips comparing outputs.
    torch.library.opcheck(op, (mu, logvar, None, None, None, 1, None))
    torch.library.opcheck(op, (mu, logvar, pm, None, 2, 1, None))
    torch.library.opcheck(op, (mu, logvar, None, pm, 2, 0, None))
    torch.library.opcheck(op, (mu, logvar, pm, pm, 2, 2, None))
    torch.library.opcheck(
        op, (mu, logvar, None, None, 2, 1, _generator(device)),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )  # fmt: skip
    kernel = torch.ops.fastgen._reparameterize_log_weights.default
    d = (mu.detach(), logvar.detach())
    torch.library.opcheck(kernel, (*d, None, None, None, 1, None))
    torch.library.opcheck(kernel, (*d, pm.detach(), pm.detach(), 2, 0, None))
    _, _, rng_state = kernel(*d, None, None, 2, 1, _generator(device))
    bwd = torch.ops.fastgen._reparameterize_log_weights_backward.default
    gz, gw = rand((2, 3, 5), device=device, seed=3), rand((6,), device=device, seed=4)
    p = pm.detach()
    torch.library.opcheck(bwd, (gz, gw, *d, None, None, rng_state, 2, 1, False, False))
    torch.library.opcheck(bwd, (None, gw, *d, p, p, rng_state, 2, 1, True, True))
    torch.library.opcheck(bwd, (gz[0], None, *d, p, None, rng_state, None, 1, True, False))
    torch.library.opcheck(bwd, (gz, gw[:2], *d, None, None, rng_state, 2, 2, False, False))
