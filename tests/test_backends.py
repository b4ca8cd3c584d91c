"""Backend selection: set_backend, use_backend, FASTGEN_BACKEND, and reference == cpu."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from fastgen_checks import DTYPES, assert_close, rand

import fastgen
from fastgen import reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "FASTGEN_BACKEND"}
    full_env.update(env)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=120)


def test_available_backends():
    names = fastgen.available_backends()
    assert "reference" in names and "cpu" in names
    assert set(names) <= {"cpu", "cuda", "triton", "reference"}


def test_set_backend_returns_previous_and_get_backend():
    fastgen.set_backend("auto")
    assert fastgen.set_backend("reference") == "auto"
    assert fastgen.get_backend() == "reference"
    assert fastgen.set_backend("cpu") == "reference"
    assert fastgen.get_backend() == "cpu"


def test_use_backend_restores_even_on_error():
    fastgen.set_backend("cpu")
    with fastgen.use_backend("reference"):
        assert fastgen.get_backend() == "reference"
    assert fastgen.get_backend() == "cpu"
    with pytest.raises(KeyError):
        with fastgen.use_backend("reference"):
            raise KeyError("boom")
    assert fastgen.get_backend() == "cpu"


@pytest.mark.parametrize("name", ["gpu", "CPU", "", "torch", None])
def test_unknown_backend(name):
    with pytest.raises(ValueError, match=r"fastgen.set_backend: name must be one of auto, cpu, cuda, triton, reference"):
        fastgen.set_backend(name)
    with pytest.raises(ValueError, match="must be one of"):
        with fastgen.use_backend(name):
            pass


def test_environment_variable():
    """FASTGEN_BACKEND picks the backend at import, and ops then run on it (seen through the seed draw)."""
    code = (
        "import torch, fastgen\n"
        "from fastgen import reference\n"
        "mu = torch.zeros(8)\n"
        "z = fastgen.reparameterize(mu, mu, generator=torch.Generator().manual_seed(3))\n"
        "seed = int(reference.draw_stream(torch.zeros(1), 8, torch.Generator().manual_seed(3))[0])\n"
        "print(fastgen.get_backend(), torch.equal(z, reference.philox_normal(8, seed, 0)))\n"
    )
    proc = _python(code, FASTGEN_BACKEND="reference")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "reference True"
    proc = _python(code, FASTGEN_BACKEND="nonsense")
    assert proc.returncode != 0 and "name must be one of" in proc.stderr and "'nonsense'" in proc.stderr


def test_default_backend_is_auto():
    # In this process the backend came from FASTGEN_BACKEND, "auto" without it.
    assert fastgen.get_backend() == os.environ.get("FASTGEN_BACKEND", "auto")
    with fastgen.use_backend("cpu"):
        torch.manual_seed(3)
        z_cpu = fastgen.reparameterize(torch.zeros(8), torch.zeros(8))
    with fastgen.use_backend("auto"):
        torch.manual_seed(3)
        assert torch.equal(fastgen.reparameterize(torch.zeros(8), torch.zeros(8)), z_cpu)  # auto on CPU is cpu


def test_fallback_without_extension():
    code = (
        "import sys, warnings\n"
        "sys.modules['fastgen._C'] = None  # as if the extension were not built\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import fastgen, torch\n"
        "msgs = [str(w.message) for w in caught if 'extension' in str(w.message)]\n"
        "print(len(msgs), 'cpu' in fastgen.available_backends(), 'reference' in fastgen.available_backends())\n"
        "x = torch.randn(3, 4)\n"
        "print(float((fastgen.gaussian_kl(x, x) - fastgen.reference.gaussian_kl(x, x)).abs().max()))\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()[-2:]
    assert first == "1 False True"  # one warning; no cpu backend, the reference is there
    assert float(second) == 0.0


@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_gpu_backend_on_cpu_tensors(name):
    x = torch.zeros(2, 3)
    fastgen.set_backend(name)
    if name in fastgen.available_backends():
        if "cpu" in fastgen.ops.backend_device_types(name):
            pytest.skip("the Triton interpreter (TRITON_INTERPRET=1) runs this backend on CPU tensors")
        with pytest.raises(ValueError, match=rf"fastgen.gaussian_kl: backend '{name}' runs on cuda tensors, got tensors on cpu"):
            fastgen.gaussian_kl(x, x)
    else:
        with pytest.raises(RuntimeError, match=rf"fastgen: backend '{name}' is not built here \(available: .*reference"):
            fastgen.gaussian_kl(x, x)
        with pytest.raises(RuntimeError, match="is not built here"):
            fastgen.reparameterize(x, x)
        with pytest.raises(RuntimeError, match="is not built here"):
            fastgen.clamp_([x], -1, 1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_backend_on_cuda_tensors():
    x = torch.zeros(2, 3, device="cuda")
    with fastgen.use_backend("cpu"):
        with pytest.raises(ValueError, match="backend 'cpu' runs on cpu tensors, got tensors on cuda"):
            fastgen.gaussian_kl(x, x)


def _deterministic_ops(dtype, requires_grad):
    mu = rand((5, 37), dtype, seed=1, requires_grad=requires_grad)
    logvar = rand((5, 37), dtype, seed=2, requires_grad=requires_grad)
    pm = rand((37,), dtype, seed=3, requires_grad=requires_grad)
    target = rand((5, 37), dtype, low=0, high=1, seed=4, requires_grad=requires_grad)
    leaves = [mu, logvar, pm, target]

    def run():
        return [
            fastgen.gaussian_kl(mu, logvar),
            fastgen.gaussian_kl(mu, logvar, pm, logvar, event_dims=2),
            fastgen.bernoulli_log_likelihood(mu, target, reduction="mean"),
            fastgen.gaussian_log_likelihood(target, mu, logvar, event_dims=0),
            fastgen.gaussian_log_likelihood(target, pm, reduction="sum"),
        ]

    return leaves, run


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_equals_cpu_deterministic_ops(dtype):
    leaves, run = _deterministic_ops(dtype, True)
    results = {}
    for name in ("reference", "cpu", "auto"):
        with fastgen.use_backend(name):
            outs = run()
            grads = torch.autograd.grad(sum(o.float().sum() * (i + 1) for i, o in enumerate(outs)), leaves)
            results[name] = (outs, grads)
    for name in ("cpu", "auto"):
        for a, e in zip(results[name][0] + list(results[name][1]), results["reference"][0] + list(results["reference"][1])):
            assert a.dtype == e.dtype and a.shape == e.shape
            assert_close(a, e, scale=4)
    # auto on CPU is the cpu kernels
    for a, e in zip(results["auto"][0], results["cpu"][0]):
        assert torch.equal(a, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_samples", [None, 2])
def test_reference_equals_cpu_noise_for_the_same_seed(dtype, num_samples):
    """The two backends draw their Philox seed differently from the generator.

    The cpu kernel takes the CPU generator's random64() and the reference a
    torch.randint over int64, so the same generator state gives each backend
    its own seed; the noise for a given seed is the same. Compare through the
    seeds each one reports or draws.
    """
    mu = rand((4, 45), dtype, seed=1, requires_grad=True)
    logvar = rand((4, 45), dtype, seed=2, requires_grad=True)
    shape = mu.shape if num_samples is None else (num_samples, *mu.shape)
    n = mu.numel() * (num_samples or 1)
    # reference backend: its seed is draw_stream's, from the generator
    with fastgen.use_backend("reference"):
        z_ref = fastgen.reparameterize(mu, logvar, num_samples=num_samples, generator=torch.Generator().manual_seed(6))
    ref_seed = int(reference.draw_stream(torch.zeros(1), n, torch.Generator().manual_seed(6))[0])
    # cpu backend: its seed is in rng_state
    with fastgen.use_backend("cpu"):
        z_cpu = fastgen.reparameterize(mu, logvar, num_samples=num_samples, generator=torch.Generator().manual_seed(6))
    _, rng_state = torch.ops.fastgen._reparameterize(mu.detach(), logvar.detach(), num_samples, torch.Generator().manual_seed(6))
    cpu_seed, offset = (int(v) for v in rng_state)
    assert offset == 0
    std = torch.exp(0.5 * logvar.detach().double())
    for z, seed in ((z_ref, ref_seed), (z_cpu, cpu_seed)):
        assert z.dtype == dtype and z.shape == shape
        eps_cpu = torch.empty(n)
        torch.ops.fastgen.philox_normal_(eps_cpu, seed, 0)
        eps_ref = reference.philox_normal(n, seed, 0)
        for eps in (eps_cpu, eps_ref):
            expected = mu.detach().double() + std * eps.double().reshape(shape)
            tol = {"scale": 4} if dtype in (torch.float16, torch.bfloat16) else {"rtol": 1e-5, "atol": 3e-5}
            assert_close(z, expected, **tol)
    # Either backend reproduces itself under torch.manual_seed.
    for name in ("reference", "cpu"):
        with fastgen.use_backend(name):
            torch.manual_seed(9)
            a = fastgen.reparameterize(mu, logvar, num_samples=num_samples)
            torch.manual_seed(9)
            b = fastgen.reparameterize(mu, logvar, num_samples=num_samples)
        assert torch.equal(a, b)


def test_reference_equals_cpu_gradients_of_random_ops():
    """Gradients of both backends satisfy grad_logvar = g * (z - mu) / 2 for their own z."""
    mu = rand((3, 20), torch.float64, seed=1, requires_grad=True)
    logvar = rand((3, 20), torch.float64, seed=2, requires_grad=True)
    g = rand((2, 3, 20), torch.float64, seed=3)
    for name in ("reference", "cpu"):
        with fastgen.use_backend(name):
            z, kl = fastgen.reparameterize_kl(mu, logvar, num_samples=2)
            grad_mu, grad_lv = torch.autograd.grad((z, kl), (mu, logvar), (g, torch.ones_like(kl)))
        expected_lv = (0.5 * g * (z.detach() - mu.detach())).sum(0) + 0.5 * (torch.exp(logvar.detach()) - 1)
        torch.testing.assert_close(grad_mu, g.sum(0) + mu.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_lv, expected_lv, rtol=1e-10, atol=1e-10)


def test_reference_backend_clamp():
    tensors = [rand((10,), seed=1), rand((4, 4), torch.float64, seed=2).t()]
    expected = [t.clamp(-0.2, 0.3) for t in tensors]
    with fastgen.use_backend("reference"):
        fastgen.clamp_(tensors, -0.2, 0.3)
    for t, e in zip(tensors, expected):
        assert torch.equal(t, e)
