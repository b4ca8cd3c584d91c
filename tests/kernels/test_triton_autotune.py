"""kernels/_tiles.py: the autotuned configs and the capture-safe autotuner.

A call under CUDA-graph capture must never benchmark (the timed, synchronizing runs of
Triton's autotuner invalidate a capture): it runs the tuned config of its key when there
is one, else the pinned CAPTURE_SHAPE config, and leaves the key untuned. Capture is
simulated here (torch.cuda.is_current_stream_capturing patched), so this runs under the
interpreter as on a GPU; tests/cuda/test_noise_backends.py captures for real.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="needs Triton")
import triton.language as tl  # noqa: E402

from fastgen.kernels import _tiles  # noqa: E402

SIZES = (1024, 2048)  # the pinned (1024, 4) and one other


@triton.jit
def _double_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out[:n] = 2 x; program 0 also writes its BLOCK to out[n] (which config ran)."""
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask, other=0.0) * 2.0, mask=mask)
    if pid == 0:
        tl.store(out_ptr + n, BLOCK * 1.0)


def _tuner():
    configs = [triton.Config({"BLOCK": 1024}, num_warps=4), triton.Config({"BLOCK": 2048}, num_warps=8)]
    return _tiles.autotune(configs, key=["n"])(_double_kernel)


def _run(tuner, n, device):
    x = torch.arange(n, dtype=torch.float32, device=device)
    out = torch.zeros(n + 1, dtype=torch.float32, device=device)
    tuner[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x, out, n)
    torch.testing.assert_close(out[:n], 2 * x)
    return int(out[n].item())


def _no_benchmarks(tuner, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("benchmarked a config")

    monkeypatch.setattr(tuner, "_bench", refuse)


def test_configs_stay_within_eight_elements_a_thread():
    """No config the compiler spills on (16 or more elements a thread reach 228-255 registers in float64)."""
    for size, warps in _tiles.TUNED_SHAPES:
        assert size // (32 * warps) <= 8
        assert warps <= 8 or size // (32 * warps) <= 4  # 16 warps: at most 128 registers a thread
    assert _tiles.CAPTURE_SHAPE in _tiles.TUNED_SHAPES


def test_untuned_key_under_capture_runs_the_pinned_config(monkeypatch, device):
    tuner = _tuner()
    _no_benchmarks(tuner, monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert _run(tuner, 3000, device) == _tiles.CAPTURE_SHAPE[0]
    assert not tuner.cache  # the key is tuned later, outside capture


def test_tuned_key_under_capture_runs_its_tuned_config(monkeypatch, device):
    if triton.runtime.autotuner.Autotuner.run.__qualname__ != "Autotuner.run":
        pytest.skip("Autotuner.run is patched (gpu_check.sh's one-config-per-key plugin): no tuned config to find")
    tuner = _tuner()
    _no_benchmarks(tuner, monkeypatch)
    x = torch.zeros(1, device=device)
    # Triton's key: the key arguments, then the dtypes of the tensor arguments.
    tuner.cache[(3000, str(x.dtype), str(x.dtype))] = tuner.configs[1]
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert _run(tuner, 3000, device) == 2048
    # Outside capture Triton's own run finds the same key (so the two spell it alike).
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert _run(tuner, 3000, device) == 2048


@pytest.mark.parametrize(
    "module,name",
    [("reparameterize", "reparameterize_forward_kernel"), ("reparameterize", "reparameterize_kl_backward_kernel"),
     ("gaussian_kl", "gaussian_kl_forward_kernel"), ("bernoulli_log_likelihood", "bernoulli_log_likelihood_backward_kernel"),
     ("gaussian_log_likelihood", "gaussian_log_likelihood_forward_kernel"),
     ("reparameterize_log_weights", "log_weights_backward_kernel"), ("grad_norm_penalty", "finish_kernel"),
     ("grad_norm_penalty", "interpolate_kernel")],
)
def test_op_kernels_use_the_capture_safe_autotuner(module, name):
    import importlib

    kernel = getattr(importlib.import_module(f"fastgen.kernels.{module}"), name)
    if len(kernel.configs) > 1:  # compiled: the capture-safe run is installed
        assert getattr(kernel.run, "func", None) is _tiles._run_capture_safe
    else:  # the interpreter's single config: nothing to tune
        assert _tiles.INTERPRET
