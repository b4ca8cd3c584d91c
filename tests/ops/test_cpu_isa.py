"""The CPU kernels are built once per SIMD level (default, AVX2, AVX-512) and chosen at import:
every level this machine runs, forced with FASTGEN_CPU_ISA in a fresh process, gives the same
results for every op of the registry (noise included)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fastgen
from fastgen.ops import _common

# Run in a fresh process per level: every op of the registry on fixed inputs,
# forward and backward, results saved to the path given as argv[1].
SCRIPT = r"""
import sys, torch, fastgen
from fastgen.ops import REGISTRY, _common
torch.manual_seed(0)
results = {"isa": _common.CPU_ISA}
for name, info in sorted(REGISTRY.items()):
    if info.kind == "inplace":
        tensors = [torch.randn(1000) * 0.02, torch.randn(37, 5).t() * 0.02]
        info.function(tensors, -0.01, 0.01)
        results[name] = tensors
        continue
    for shape, event_dims in (((3, 300), 1), ((129, 20), 1), ((64, 7), 0)):
        args = [torch.rand(shape, dtype=torch.float64).to(torch.float32).requires_grad_() for _ in info.tensor_args]
        kwargs = {"generator": torch.Generator().manual_seed(5)} if info.kind == "sample" else {}
        if "event_dims" in info.function.__code__.co_varnames:
            kwargs["event_dims"] = event_dims
        out = info.function(*args, **kwargs)
        outs = list(out) if isinstance(out, tuple) else [out]
        grads = torch.autograd.grad(sum(o.sum() for o in outs), args)
        results[f"{name}{shape}{event_dims}"] = [o.detach() for o in outs] + list(grads)
torch.save(results, sys.argv[1])
"""


def _run(isa: str, path: str) -> dict:
    env = dict(os.environ, FASTGEN_CPU_ISA=isa, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", SCRIPT, path], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return torch.load(path)


@pytest.mark.skipif(_common.CPU_ISA is None, reason="needs the compiled CPU kernels")
def test_every_level_this_cpu_runs_gives_the_same_results(tmp_path):
    levels = _common.cpu_isas_supported()
    results = {isa: _run(isa, str(tmp_path / f"{isa}.pt")) for isa in levels}
    for isa, result in results.items():
        assert result["isa"] == isa
    reference = results["default"]
    for isa in levels[:-1]:
        for key, expected in reference.items():
            if key == "isa":
                continue
            for actual, wanted in zip(results[isa][key], expected):
                # The levels differ only in their SIMD exp/log/sincos (a few ulp).
                torch.testing.assert_close(actual, wanted, rtol=2e-5, atol=2e-5, msg=f"{isa} {key}")


def test_the_loaded_level_is_the_highest_this_cpu_runs():
    if os.environ.get("FASTGEN_CPU_ISA", "auto") != "auto" or _common.CPU_ISA is None:
        pytest.skip("a level was forced with FASTGEN_CPU_ISA, or no CPU kernels are built")
    assert _common.CPU_ISA == _common.cpu_isas_supported()[0]
    assert "cpu" in fastgen.available_backends()


def test_a_level_this_cpu_cannot_run_is_refused():
    """ATEN_CPU_CAPABILITY=default makes torch (and fastgen) treat this CPU as one without AVX."""
    env = dict(os.environ, FASTGEN_CPU_ISA="avx2", ATEN_CPU_CAPABILITY="default")
    done = subprocess.run([sys.executable, "-c", "import fastgen"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "FASTGEN_CPU_ISA=avx2, but this CPU runs only default" in done.stderr
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    env.pop("FASTGEN_CPU_ISA", None)
    code = "from fastgen.ops import _common; print(_common.CPU_ISA)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "default", done.stderr


def test_an_unknown_level_is_refused():
    env = dict(os.environ, FASTGEN_CPU_ISA="sse9")
    done = subprocess.run([sys.executable, "-c", "import fastgen"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "FASTGEN_CPU_ISA must be auto, avx512, avx2, default, got 'sse9'" in done.stderr
