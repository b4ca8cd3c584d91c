"""CPU acceptance check (issue 2): fused CPU kernels against the seed formulas, one run.

At 4096x1024 float32, with torch's default thread count (all cores; ``--threads`` changes it):

* the training forward (mode ``fwd-grad``: inputs require grad) of every op of fastgen's
  registry (its ``event_dims=1`` cases in ``bench.cases``; ``clamp`` in place, without
  autograd): time and speed-up against the eager formula (target >= 3x) and against
  ``torch.compile`` of it (target >= 1x, i.e. no slower);
* ``reparameterize`` forward + backward against eager (target >= 3x);
* clipping a DCGAN critic's parameters (the 9-tensor 28x28 critic) with
  ``fastgen.clip_weights_`` against the per-parameter ``p.data.clamp_(-c, c)`` loop
  (target >= 1.5x); the ``torch._foreach`` pair is shown for reference.

The providers of a row are timed round-robin (one sample of each per round,
``bench.timing.time_cpu_interleaved``), so the ratios compare measurements taken in the same
rounds; medians after warm-up. The clock is the wall clock with more than one torch thread
(the calling thread's CPU time would miss the workers' time), the thread's CPU time with
``--threads 1``. Issue 7's table at the sizes users train at (one thread) is
``python -m bench.small_sizes``. Prints a markdown table; ``--out FILE`` also writes it. Exit
status 0 unless ``--strict`` and a target is missed.

    python -m bench.cpu_speed            # or: python bench/cpu_speed.py
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench import cases, env
from bench.models import DCGANCritic28
from bench.timing import TimerConfig, cpu_clock, time_cpu_interleaved, torch_threads


def forward_cases() -> List[cases.OpSpec]:
    """Every op of the registry, its event_dims=1 (or event_dims-free) cases."""
    return [s for s in cases.OPS.values() if s.event_dims in (None, 1)]


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a and b else None


def _fmt_ms(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.2f}")


def _fmt_x(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


def measure(size=(4096, 1024), cfg: Optional[TimerConfig] = None, backend: str = "cpu",
            with_compile: bool = True, log=print) -> List[dict]:
    """Rows of {case, eager, compile, fastgen, foreach, targets} in milliseconds."""
    cfg = cfg or TimerConfig(min_time_s=0.5, min_reps=15)
    device = torch.device("cpu")
    B, D = size
    have_fastgen = backend in cases.fastgen_backends(device)
    if not have_fastgen:
        log(f"warning: fastgen backend {backend!r} is not built; fastgen columns stay empty")
    rows = []

    def timed(variants, inputs, mode):
        """Medians of the variants [(context factory, fn)], round-robin."""
        calls = []
        for ctx, fn in variants:
            with ctx():
                calls.append((ctx, cases.mode_callable(fn, inputs, mode)))
        return [st.median_ms for st in time_cpu_interleaved(calls, cfg)]

    cases_list = [(s.key, "fwd-grad" if s.differentiable else "fwd") for s in forward_cases()]
    cases_list.append(("reparameterize", "full"))
    for op, mode in cases_list:
        spec = cases.OPS[op]
        torch.manual_seed(0)
        inputs = spec.make(B, D, torch.float32, device)
        variants = [(contextlib.nullcontext, spec.eager)]
        if with_compile:
            variants.append((contextlib.nullcontext, cases.compile_formula(spec.eager)))
        if have_fastgen:
            variants.append((lambda: cases.fastgen_backend(backend), spec.fused))
        times = iter(timed(variants, inputs, mode))
        t_e = next(times)
        t_c = next(times) if with_compile else None
        t_f = next(times) if have_fastgen else None
        label = f"{op} {'forward+backward' if mode == 'full' else 'forward'}"
        targets = {"eager": 3.0} if mode == "full" else {"eager": 3.0, "compile": 1.0}
        rows.append(dict(case=label, eager=t_e, compile=t_c, fastgen=t_f, foreach=None,
                         targets=targets))
        log(f"{label:45s} eager {_fmt_ms(t_e)}  compile {_fmt_ms(t_c)}  fastgen {_fmt_ms(t_f)} ms")
        del inputs

    torch.manual_seed(0)
    critic = DCGANCritic28()
    params = list(critic.parameters())
    # every variant walks critic.parameters() per call, as a training loop does
    variants = [(contextlib.nullcontext, lambda: cases.clip_loop(critic.parameters())),
                (contextlib.nullcontext, lambda: cases.clip_foreach(list(critic.parameters())))]
    if have_fastgen:
        variants.append((lambda: cases.fastgen_backend(backend), lambda: cases.clip_fastgen(critic)))
    times = [st.median_ms for st in time_cpu_interleaved(variants, cfg)]
    t_loop, t_each = times[0], times[1]
    t_f = times[2] if have_fastgen else None
    label = f"clip_weights_ {len(params)}-tensor DCGAN critic ({sum(p.numel() for p in params)} el.)"
    rows.append(dict(case=label, eager=t_loop, compile=None, fastgen=t_f, foreach=t_each,
                     targets={"eager": 1.5}))
    log(f"{label:45s} loop {_fmt_ms(t_loop)}  foreach {_fmt_ms(t_each)}  fastgen {_fmt_ms(t_f)} ms")
    return rows


def table(rows: Sequence[dict]) -> List[str]:
    lines = ["| case | eager ms | torch.compile ms | foreach ms | fastgen ms | vs eager | vs compile "
             "| target | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ve, vc = _ratio(r["eager"], r["fastgen"]), _ratio(r["compile"], r["fastgen"])
        goals, met = [], []
        for base, goal in r["targets"].items():
            got = ve if base == "eager" else vc
            name = "loop" if r["foreach"] is not None and base == "eager" else base
            goals.append(f">= {goal:g}x vs {name}")
            met.append("n/a" if got is None else ("yes" if got >= goal else "NO"))
        lines.append(f"| {r['case']} | {_fmt_ms(r['eager'])} | {_fmt_ms(r['compile'])} | "
                     f"{_fmt_ms(r['foreach'])} | {_fmt_ms(r['fastgen'])} | {_fmt_x(ve)} | {_fmt_x(vc)} | "
                     f"{'; '.join(goals)} | {', '.join(met)} |")
    return lines


def targets_met(rows: Sequence[dict]) -> bool:
    for r in rows:
        for base, goal in r["targets"].items():
            got = _ratio(r["eager"] if base == "eager" else r["compile"], r["fastgen"])
            if got is None or got < goal:
                return False
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_speed", description=__doc__.splitlines()[0])
    p.add_argument("--size", default="4096x1024", help="BxD of the op inputs (default 4096x1024)")
    p.add_argument("--backend", default="cpu", help="fastgen backend to measure (default cpu)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of samples per measurement")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    p.add_argument("--quick", action="store_true", help="tiny run for tests (64x32, few reps, no compile)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    with torch_threads(args.threads or None):
        return _main(args)


def _main(args) -> int:
    b, d = (int(v) for v in args.size.lower().split("x"))
    cfg = TimerConfig(min_time_s=args.min_time, min_reps=15)
    with_compile = not args.no_compile
    if args.quick:
        b, d, cfg, with_compile = 64, 32, TimerConfig.quick(), False
    load = env.load_note()
    rows = measure((b, d), cfg, args.backend, with_compile)
    v = env.versions()
    head = [f"fastgen CPU speed, {b}x{d} float32, {env.cpu_model()}, {load}; timer {cpu_clock(cfg)[1]}, "
            f"providers interleaved; torch {v['torch']}, fastgen {v['fastgen'] or '-'}; {env.now_iso()}", ""]
    text = "\n".join(head + table(rows)) + "\n"
    print()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.strict and not targets_met(rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
