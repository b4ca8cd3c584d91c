"""pytest-benchmark view of the same case table as ``python -m bench``.

    pytest bench/ --benchmark-group-by=param:op,param:mode,param:dtype,param:size
    FASTGEN_BENCH_SIZES=128x20,1024x1024 pytest bench/ -k "reparameterize and full"
    pytest bench/ --benchmark-timer time.thread_time    # the thread's CPU time, as python -m bench

Each test times one (case, mode, provider, dtype, size) cell -- the cases of
``bench.cases.OPS`` (every op of fastgen's registry, event_dims 1 and 0), the modes
``fwd`` / ``fwd-grad`` / ``bwd`` / ``full`` -- with pytest-benchmark's own calibrated timer:
wall clock unless ``--benchmark-timer`` says otherwise; on CPU torch runs on
``FASTGEN_BENCH_THREADS`` threads (default 1, as ``python -m bench``). On CUDA every call is
followed by ``torch.cuda.synchronize``, so launch latency is included -- use
``python -m bench`` for device-side timings. ``extra_info`` carries the ideal fused kernel's
bytes so GB/s can be derived from the saved JSON. Sizes default to the smallest and largest
of the device's sweep; set ``FASTGEN_BENCH_SIZES`` to change them.
"""
from __future__ import annotations

import os

import pytest
import torch

from bench import cases
from bench.runner import parse_sizes
from bench.timing import torch_threads

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_sweep = cases.SIZES[DEVICE.type]
SIZES = parse_sizes(os.environ.get("FASTGEN_BENCH_SIZES", f"{_sweep[0][0]}x{_sweep[0][1]},"
                                                          f"{_sweep[-1][0]}x{_sweep[-1][1]}"))
FG = cases.fastgen_backends(DEVICE)
PROVIDERS = {p.name: p for p in cases.make_providers(DEVICE)}
OP_CELLS = [(key, mode) for key, spec in cases.OPS.items() for mode in spec.modes]


def _cell_id(key: str, mode: str) -> str:
    """``gaussian_kl-full``; the element-wise case ``gaussian_kl-ed0-full`` (``-k ed0`` selects them)."""
    spec = cases.OPS[key]
    return f"{spec.name}{'-ed0' if spec.event_dims == 0 else ''}-{mode}"


@pytest.fixture(autouse=True, scope="module")
def _threads():
    """One torch thread on CPU (``FASTGEN_BENCH_THREADS``), as ``python -m bench``."""
    with torch_threads(int(os.environ.get("FASTGEN_BENCH_THREADS", "1")) if DEVICE.type == "cpu" else None):
        yield


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", list(cases.DTYPES))
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("op,mode", OP_CELLS, ids=[_cell_id(o, m) for o, m in OP_CELLS])
def test_op(benchmark, op, mode, provider, dtype, size):
    spec = cases.OPS[op]
    prov = PROVIDERS[provider]
    B, D = size
    torch.manual_seed(0)
    with prov.context():
        fn = prov.bind(spec)
        inputs = spec.make(B, D, cases.DTYPES[dtype], DEVICE)
        call = cases.mode_callable(fn, inputs, mode)

        def timed():
            out = call()
            _sync()
            return out

        for _ in range(3):  # compile / autotune / lazy init outside the measurement
            timed()
        benchmark.group = f"{op} {mode} {dtype} {B}x{D}"
        nbytes = spec.nbytes(mode, B, D, torch.tensor([], dtype=cases.DTYPES[dtype]).element_size())
        benchmark.extra_info.update(op=spec.name, event_dims=spec.event_dims, mode=mode,
                                    provider=provider, dtype=dtype, shape=f"{B}x{D}", numel=B * D,
                                    bytes=nbytes, device=str(DEVICE), threads=torch.get_num_threads())
        out = benchmark(timed)
    for t in cases.as_tuple(out):
        assert torch.isfinite(t.float()).all()


CLIP_PROVIDERS = ["eager", "foreach"] + [f"fastgen-{b}" for b in FG]


@pytest.mark.parametrize("count", [9, 100, 1000])
@pytest.mark.parametrize("provider", CLIP_PROVIDERS)
def test_clip_weights(benchmark, provider, count):
    torch.manual_seed(0)
    if count == 9:
        from bench.models import DCGANCritic28

        params = list(DCGANCritic28().to(DEVICE).parameters())
    else:
        params = cases.synthetic_params(count, torch.float32, DEVICE).params
    if provider.startswith("fastgen-"):
        ctx, fn = cases.fastgen_backend(provider[len("fastgen-"):]), cases.clip_fastgen
    else:
        import contextlib

        ctx, fn = contextlib.nullcontext(), cases.CLIP_PROVIDERS[provider]

    def timed():
        fn(params)
        _sync()

    with ctx:
        timed()
        benchmark.group = f"clip_weights {count} tensors"
        benchmark.extra_info.update(provider=provider, tensors=count,
                                    numel=sum(p.numel() for p in params))
        benchmark(timed)
    assert max(p.detach().abs().max().item() for p in params) <= cases.CLIP_VALUE + 1e-7
