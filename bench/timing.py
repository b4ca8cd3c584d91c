"""How a time, a memory figure and a launch count are measured.

Timing
------
* CPU: the clock is the calling thread's CPU time (``time.thread_time_ns``) when torch
  runs on one thread (the default of ``python -m bench`` on CPU, ``--threads 1``): time the
  scheduler gives to other processes on a shared machine is not counted, kernel time
  spent on this thread's behalf (page faults of fresh allocations, for one) is. With
  more than one torch thread the intra-op workers' time would be missed, so the clock is
  the wall clock (``time.perf_counter_ns``) instead. ``TimerConfig.clock`` forces either
  ("thread" / "wall"); the ``timer`` column says which one ran. Every measurement starts
  with warm-up calls; the cyclic garbage collector is paused while samples are taken. A
  call shorter than ``target_sample_s`` is repeated ``inner`` times inside one sample and
  the sample divided by ``inner``, so the clock's resolution and the timer's own cost do
  not dominate microsecond-sized calls. Samples are repeated until ``min_time_s`` has
  passed (between ``min_reps`` and ``max_reps`` samples); the row records the median and
  the 20th / 80th percentiles of the samples.
  ``time_cpu_interleaved`` times the providers of one case round-robin, one sample of
  each per round, so whatever disturbs the host during the measurement (other processes'
  cache and memory-bandwidth use, frequency changes) is spread over all of them alike and
  their ratio is a ratio from the same rounds. This is the runner's default on CPU. It
  also means each provider runs with the others' allocations between its calls, as an
  op runs inside a training step; the eager formula's large temporaries can then come
  back from the allocator as fresh pages, and the page faults count (they are this
  thread's kernel time). ``--no-interleave`` times providers one after another instead,
  each in its own allocator steady state.
* CUDA: ``triton.testing.do_bench`` (CUDA events, L2 cache flushed before each call),
  or for tiny shapes ``triton.testing.do_bench_cudagraph`` (calls unrolled into one CUDA
  graph, so the launch cost of the Python + dispatcher path is not what is measured; no
  L2 flush -- tiny tensors stay in L2 in a real training step too). Both are asked for
  every sample (``return_mode="all"``) and summarised with the same quantiles as on CPU.
  Calls under autograd on tiny shapes (fwd-grad, bwd, full) and whole training steps are
  host-bound: they are timed by the wall clock per call (``wall``), the device drained at
  the end of each sample, and never captured -- a capture that fails inside autograd
  leaves the CUDA generator marked as capturing, and every later random draw refuses to
  run ("Offset increment outside graph capture", seen on an H200).
  The timer actually used is recorded in the ``timer`` column.

Memory
------
* ``saved_bytes``: bytes of the tensors autograd keeps for backward, summed with
  ``torch.autograd.graph.saved_tensors_hooks`` over one forward; tensors that share
  storage with an input (the inputs are alive anyway) are not counted, each storage is
  counted once. The textbook reparameterization keeps ``std`` and ``eps`` alive; a fused
  op that regenerates its noise keeps nothing beyond its inputs.
* ``peak_mem_bytes`` (CUDA only): ``torch.cuda.max_memory_allocated`` during one call
  minus what was allocated before it -- outputs, saved tensors and temporaries.

Launches
--------
* CUDA: kernels seen by ``torch.profiler`` (device-side kernel records, memset/memcpy
  excluded) in one call after warm-up.
* CPU: the number of operator calls reaching the dispatcher below autograd
  (a ``TorchDispatchMode`` counter): a per-parameter ``clamp_`` loop makes one call per
  tensor, the ``_foreach`` pair two, a fused multi-tensor op one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable, List, Optional, Sequence, Tuple

import torch

QUANTILES = (0.5, 0.2, 0.8)

# Below this many elements a CUDA measurement replays a CUDA graph (do_bench_cudagraph).
CUDAGRAPH_MAX_NUMEL = 1 << 18


@dataclass
class TimerConfig:
    """Knobs of the CPU timer (and the time budget of the CUDA one)."""

    warmup: int = 3
    min_reps: int = 15
    max_reps: int = 300
    min_time_s: float = 0.3
    target_sample_s: float = 2e-3
    cuda_rep_ms: int = 100
    cuda_warmup_ms: int = 25
    # CPU clock: "auto" = the thread's CPU time when torch runs on one thread, else wall
    clock: str = "auto"

    @classmethod
    def quick(cls) -> "TimerConfig":
        return cls(warmup=1, min_reps=3, max_reps=5, min_time_s=0.0, target_sample_s=2e-4,
                   cuda_rep_ms=10, cuda_warmup_ms=5)


@dataclass
class Stats:
    """Summary of one measurement, in milliseconds."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    timer: str


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of an already sorted, non-empty sequence.

    ``a + (b - a) * frac`` clamped to ``[a, b]`` rather than ``a * (1 - frac) + b * frac``: the
    latter can round past its neighbours when samples (nearly) tie, so a p20 could exceed the
    median. This form is monotone in ``frac`` and stays between the samples it joins, so the
    quantiles of one sample set are always ordered.
    """
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    a, b = sorted_values[lo], sorted_values[hi]
    return min(max(a + (b - a) * (pos - lo), a), b)


def summarize(samples_ms: Iterable[float], timer: str) -> Stats:
    s = sorted(samples_ms)
    med, p20, p80 = (quantile(s, q) for q in QUANTILES)
    return Stats(med, p20, p80, len(s), timer)


def cpu_clock(cfg: TimerConfig) -> Tuple[Callable[[], int], str]:
    """The CPU clock (nanoseconds) and its name: see the module docstring."""
    clock = cfg.clock
    if clock == "auto":
        clock = "thread" if torch.get_num_threads() == 1 else "wall"
    if clock == "thread":
        return time.thread_time_ns, "thread_time"
    if clock == "wall":
        return time.perf_counter_ns, "perf_counter"
    raise ValueError(f"unknown clock {cfg.clock!r}; expected 'auto', 'thread' or 'wall'")


def _calibrate(fn: Callable[[], object], cfg: TimerConfig, clock: Callable[[], int]):
    """Calls per sample (``inner``) so one sample lasts >= target_sample_s; and its duration (s)."""
    inner = 1
    while True:
        t0 = clock()
        for _ in range(inner):
            fn()
        elapsed = (clock() - t0) * 1e-9
        if elapsed >= cfg.target_sample_s or inner >= 1 << 16:
            return inner, max(elapsed, 1e-9)
        inner *= 2 if elapsed <= 0 else max(2, min(16, int(cfg.target_sample_s / elapsed) + 1))


def _timer_name(clock_name: str, inner: int) -> str:
    return clock_name if inner == 1 else f"{clock_name}/x{inner}"


def time_cpu(fn: Callable[[], object], cfg: TimerConfig) -> Stats:
    """Median / p20 / p80 time of ``fn()`` on the host (see module docstring)."""
    return time_cpu_interleaved([(contextlib.nullcontext, fn)], cfg)[0]


def time_cpu_interleaved(entries: Sequence[Tuple[Callable[[], ContextManager], Callable[[], object]]],
                         cfg: TimerConfig) -> List[Stats]:
    """Time several callables round-robin: one sample of each per round.

    Every entry is ``(context_factory, fn)``; the context (e.g. a fastgen backend selection)
    is entered around each sample, outside the timed region. Interleaving spreads any
    interference from other processes on a shared host over all providers alike, so their
    ratio stays meaningful even when absolute times wobble. All entries get the same
    number of samples.
    """
    clock, clock_name = cpu_clock(cfg)
    plans = []
    for ctx, fn in entries:
        with ctx():
            for _ in range(max(cfg.warmup, 1)):
                fn()
            plans.append(_calibrate(fn, cfg, clock))
    longest = max(per_sample for _, per_sample in plans)
    reps = int(min(cfg.max_reps, max(cfg.min_reps, math.ceil(cfg.min_time_s / longest))))
    samples: List[List[float]] = [[] for _ in entries]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # no cyclic-GC pause inside a sample (a full collect here costs ~0.1 s)
    try:
        for _ in range(reps):
            for i, (ctx, fn) in enumerate(entries):
                inner = plans[i][0]
                with ctx():
                    t0 = clock()
                    for _ in range(inner):
                        fn()
                    samples[i].append((clock() - t0) * 1e-6 / inner)
    finally:
        if gc_was_enabled:
            gc.enable()
    return [summarize(s, _timer_name(clock_name, plans[i][0])) for i, s in enumerate(samples)]


def time_cuda(fn: Callable[[], object], cfg: TimerConfig, *, cudagraph: bool) -> Stats:
    """Median / p20 / p80 device time of ``fn()`` with Triton's benchmarking helpers.

    ``cudagraph=True`` tries ``do_bench_cudagraph`` and falls back to ``do_bench`` when the
    callable cannot be captured (the fallback is visible in the ``timer`` column).
    """
    from triton.testing import do_bench, do_bench_cudagraph

    if cudagraph:
        try:
            samples = do_bench_cudagraph(fn, rep=cfg.cuda_rep_ms, return_mode="all")
            torch.cuda.synchronize()
            return summarize(samples, "do_bench_cudagraph")
        except Exception:  # capture failed (e.g. a host sync inside fn): measure un-captured
            torch.cuda.synchronize()
    samples = do_bench(fn, warmup=cfg.cuda_warmup_ms, rep=cfg.cuda_rep_ms, return_mode="all")
    return summarize(samples, "do_bench")


def time_cuda_wall(fn: Callable[[], object], cfg: TimerConfig) -> Stats:
    """Median / p20 / p80 wall time per call of ``fn()``, the device drained at the end of each
    sample: what a training loop pays per call when the host, not the GPU, is the bottleneck
    (small tensors under autograd, whole steps). CUDA events would time the GPU's idle gaps
    between launches against an L2 flush queued ahead of them instead."""
    clock = time.perf_counter_ns
    for _ in range(cfg.warmup):
        fn()
    torch.cuda.synchronize()
    inner, sample_s = _calibrate(fn, cfg, clock)
    reps = max(cfg.min_reps, min(cfg.max_reps, int(cfg.min_time_s / sample_s) + 1))
    samples = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = clock()
        for _ in range(inner):
            fn()
        torch.cuda.synchronize()
        samples.append((clock() - t0) * 1e-6 / inner)
    return summarize(samples, _timer_name("wall", inner))


def time_fn(fn: Callable[[], object], device: torch.device, cfg: TimerConfig, *,
            numel: Optional[int] = None, cudagraph: Optional[bool] = None, host_bound: bool = False) -> Stats:
    """Dispatch to the CPU or CUDA timer: on CUDA, ``host_bound`` calls get the wall clock, and
    tiny shapes the CUDA-graph timer unless ``cudagraph=False``."""
    if device.type == "cuda":
        if host_bound:
            return time_cuda_wall(fn, cfg)
        if cudagraph is None:
            cudagraph = numel is not None and numel <= CUDAGRAPH_MAX_NUMEL
        return time_cuda(fn, cfg, cudagraph=cudagraph)
    return time_cpu(fn, cfg)


class CopyBaseline:
    """Time of a plain copy moving the same number of bytes (read n/2, write n/2).

    Measured once per byte count and timer kind per run, with the same timer as the op,
    so ``pct_of_copy = 100 * t_copy / t_op`` is the fraction of the achievable memory
    bandwidth (device-to-device on CUDA, RAM on CPU) at that size.
    """

    def __init__(self, device: torch.device, cfg: TimerConfig):
        # the copy is the denominator of every pct_of_copy of its size: sample it more
        self.device = device
        self.cfg = dataclasses.replace(cfg, min_reps=max(cfg.min_reps, 3 * TimerConfig.min_reps)
                                       if cfg.min_time_s > 0 else cfg.min_reps)
        self._cache: dict = {}

    def time(self, nbytes: int, *, cudagraph: bool = False) -> Stats:
        """``cudagraph``: time the copy with the CUDA-graph timer (use the op's timer)."""
        cudagraph = cudagraph and self.device.type == "cuda"
        key = (nbytes, cudagraph)
        if key not in self._cache:
            half = max(nbytes // 2, 1)
            src = torch.empty(half, dtype=torch.uint8, device=self.device).fill_(1)
            dst = torch.empty_like(src)
            self._cache[key] = time_fn(lambda: dst.copy_(src), self.device, self.cfg,
                                       cudagraph=cudagraph)
        return self._cache[key]


def saved_tensor_bytes(fn: Callable[[], object], inputs: Sequence[torch.Tensor]) -> int:
    """Bytes autograd keeps alive for backward in one call of ``fn`` (inputs excluded)."""
    input_storages = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
    seen: dict = {}

    def pack(t: torch.Tensor):
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in input_storages and ptr not in seen:
                seen[ptr] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. a tensor without storage
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return int(sum(seen.values()))


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Extra CUDA memory at the peak of one call (outputs + saved + temporaries)."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return int(peak)


def cuda_kernel_launches(fn: Callable[[], object]) -> int:
    """Number of device kernels one call of ``fn`` launches (profiler records)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    n = 0
    for evt in prof.events():
        if getattr(evt, "device_type", None) == DeviceType.CUDA:
            name = evt.name.lower()
            if not (name.startswith("memset") or name.startswith("memcpy")):
                n += 1
    return n


class _OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # views/aliases (``p.data`` is an ``aten.detach``) move no data: not counted
        if not getattr(func, "is_view", False):
            self.calls += 1
        return func(*args, **(kwargs or {}))


def cpu_op_calls(fn: Callable[[], object]) -> int:
    """Data-moving operator calls one call of ``fn`` makes below autograd (views excluded)."""
    counter = _OpCounter()
    with counter:
        fn()
    return counter.calls


def launches(fn: Callable[[], object], device: torch.device) -> int:
    """Kernel launches (CUDA) or dispatcher-level operator calls (CPU) of one call."""
    if device.type == "cuda":
        return cuda_kernel_launches(fn)
    return cpu_op_calls(fn)


@contextlib.contextmanager
def torch_threads(threads: Optional[int]):
    """``torch.set_num_threads(threads)`` for the block (None leaves it), then the caller's count
    again: a caller in the same process (tests, the CLI) keeps its own."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def add_table_arguments(p) -> None:
    """The options shared by the one-table benchmarks (``bench.small_sizes``, ``bench.iwae_wgangp``)."""
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--backend", default="cpu", help="fastgen backend to measure (default cpu)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of samples per variant (default 0.5)")
    p.add_argument("--min-reps", type=int, default=25, help="rounds per measurement at least (default 25)")


def table_timer(args) -> TimerConfig:
    """The timer of a one-table benchmark from its ``add_table_arguments`` options."""
    return TimerConfig(min_time_s=args.min_time, min_reps=args.min_reps, max_reps=max(300, args.min_reps))
