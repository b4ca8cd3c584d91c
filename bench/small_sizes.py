"""Acceptance table of issue 7: fastgen against the eager formula at the sizes users train at.

CPU, one torch thread (``torch.set_num_threads(1)``; ``--threads`` changes it), times are the
calling thread's CPU time (``time.thread_time_ns``, so a shared machine's preemption does
not inflate them), the variants of each measurement are timed round-robin (one sample of
each per round, so they see the same host), and every number is the median of many rounds
(at least ``--min-reps`` rounds and ``--min-time`` seconds per variant). Ratios are taken
between variants of the same measurement only. Sections:

1. every differentiable op of fastgen's registry (its ``event_dims=1`` cases in
   ``bench.cases``): t(eager formula) / t(fastgen) at 128x2, 128x20, 128x64, 128x784 and
   4096x1024, modes ``full`` (forward + backward) and ``fwd`` (forward under no_grad);
2. ``torch.compile`` of the formula against fastgen for ``gaussian_kl`` at 128x784 and
   4096x1024, modes ``fwd`` and ``full``;
3. host cost: ``fastgen.gaussian_kl`` at 128x20 with grad (``fwd-grad``: forward recording
   the graph; ``full``: forward + backward) against one ``torch.exp`` of a 128x20 tensor
   that requires grad, same modes;
4. ``event_dims=0`` against ``event_dims=1``: ``bernoulli_log_likelihood`` at 4096x1024,
   nanoseconds per element, fastgen and the eager formula, modes ``fwd`` and ``full``;
5. ``clip_weights_`` against the per-parameter ``p.data.clamp_(-c, c)`` loop and the
   ``torch._foreach_clamp_min_`` / ``_foreach_clamp_max_`` pair, on the DCGAN critics of
   ``bench/models.py`` (each call walks ``critic.parameters()``, as a training loop does).

Prints a markdown table (for a closing note); ``--out FILE`` also writes it.

    python -m bench.small_sizes              # about 2-4 minutes on a 2-core host
    python -m bench.small_sizes --quick      # seconds: tiny sizes, few rounds (tests)
"""
from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench import cases, env
from bench.models import DCGANCritic28, DCGANCritic64
from bench.runner import parse_sizes
from bench.timing import (Stats, TimerConfig, add_table_arguments, cpu_clock, table_timer, time_cpu_interleaved,
                          torch_threads)

SIZES = cases.USER_SIZES + [(4096, 1024)]
RATIO_MODES = ("full", "fwd")
COMPILE_SIZES = [(128, 784), (4096, 1024)]
HOST_SIZE = (128, 20)
EVENT_DIMS_SIZE = (4096, 1024)

Variant = Tuple[str, Callable[[], contextlib.AbstractContextManager], Callable[[], object]]


def _size(s: Tuple[int, int]) -> str:
    return f"{s[0]}x{s[1]}"


def _us(ms: Optional[float]) -> str:
    if ms is None:
        return "-"
    us = ms * 1e3
    return f"{us:.0f}" if us >= 100 else f"{us:.1f}" if us >= 10 else f"{us:.2f}"


def _x(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


class Bench:
    """Runs measurements: each a list of variants timed round-robin on the same inputs."""

    def __init__(self, cfg: TimerConfig, backend: str = "cpu", log=print):
        self.cfg, self.backend, self.log = cfg, backend, log
        self.device = torch.device("cpu")
        self.have_fastgen = backend in cases.fastgen_backends(self.device)
        self.clock = cpu_clock(cfg)[1]
        self.rounds: List[int] = []
        if not self.have_fastgen:
            log(f"warning: fastgen backend {backend!r} is not built; fastgen columns stay empty")

    def fg(self) -> contextlib.AbstractContextManager:
        return cases.fastgen_backend(self.backend)

    def time(self, variants: Sequence[Variant]) -> Dict[str, Stats]:
        variants = [v for v in variants if v[0] != "fastgen" or self.have_fastgen]
        stats = time_cpu_interleaved([(ctx, fn) for _, ctx, fn in variants], self.cfg)
        self.rounds += [s.reps for s in stats]
        return {label: st for (label, _, _), st in zip(variants, stats)}

    def op_variants(self, spec: cases.OpSpec, inputs: cases.OpInputs, mode: str,
                    with_compile: bool = False) -> List[Variant]:
        out: List[Variant] = [("eager", contextlib.nullcontext, cases.mode_callable(spec.eager, inputs, mode))]
        if with_compile:
            compiled = cases.compile_formula(spec.eager)
            out.append(("compile", contextlib.nullcontext, cases.mode_callable(compiled, inputs, mode)))
        if self.have_fastgen:
            with self.fg():
                out.append(("fastgen", self.fg, cases.mode_callable(spec.fused, inputs, mode)))
        return out


def _ms(stats: Dict[str, Stats], label: str) -> Optional[float]:
    st = stats.get(label)
    return st.median_ms if st else None


def differentiable_cases() -> List[cases.OpSpec]:
    """The event_dims=1 (or event_dims-free) cases of every differentiable registry op."""
    return [s for s in cases.OPS.values() if s.differentiable and s.event_dims in (None, 1)]


def section_ratios(b: Bench, sizes: Sequence[Tuple[int, int]]) -> List[str]:
    specs = differentiable_cases()
    times: Dict[tuple, Dict[str, Stats]] = {}
    for spec in specs:
        for size in sizes:
            torch.manual_seed(0)
            inputs = spec.make(*size, torch.float32, b.device)
            for mode in RATIO_MODES:
                times[(spec.key, mode, size)] = st = b.time(b.op_variants(spec, inputs, mode))
                b.log(f"{spec.key:28s} {mode:5s} {_size(size):>10s}  eager {_us(_ms(st, 'eager'))} us  "
                      f"fastgen {_us(_ms(st, 'fastgen'))} us")
            del inputs
    head = "| op | mode | " + " | ".join(_size(s) for s in sizes) + " |"
    rule = "|---|---|" + "---|" * len(sizes)
    lines = ["### 1. t(eager formula) / t(fastgen), float32", "",
             "Above 1x fastgen is faster. full = forward + backward (inputs require grad); "
             "fwd = forward under torch.no_grad().", "", head, rule]
    for spec in specs:
        for mode in RATIO_MODES:
            cells = [_x(_ms(times[(spec.key, mode, s)], "eager"), _ms(times[(spec.key, mode, s)], "fastgen"))
                     for s in sizes]
            lines.append(f"| {spec.key} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Medians in microseconds, eager / fastgen:", "", head, rule]
    for spec in specs:
        for mode in RATIO_MODES:
            cells = [f"{_us(_ms(times[(spec.key, mode, s)], 'eager'))} / "
                     f"{_us(_ms(times[(spec.key, mode, s)], 'fastgen'))}" for s in sizes]
            lines.append(f"| {spec.key} | {mode} | " + " | ".join(cells) + " |")
    return lines


def section_compile(b: Bench, sizes: Sequence[Tuple[int, int]]) -> List[str]:
    spec = cases.OPS["gaussian_kl"]
    lines = ["### 2. torch.compile of the formula: gaussian_kl, float32", "",
             "`torch.compile(formula, dynamic=False)`, compiled for each shape and grad mode and warmed "
             "up before timing.", "",
             "| size | mode | eager us | compile us | fastgen us | compile vs eager | fastgen vs compile |",
             "|---|---|---|---|---|---|---|"]
    for size in sizes:
        torch.manual_seed(0)
        inputs = spec.make(*size, torch.float32, b.device)
        for mode in ("fwd", "full"):
            st = b.time(b.op_variants(spec, inputs, mode, with_compile=True))
            e, c, f = _ms(st, "eager"), _ms(st, "compile"), _ms(st, "fastgen")
            b.log(f"gaussian_kl compile {mode:5s} {_size(size):>10s}  eager {_us(e)}  compile {_us(c)}  "
                  f"fastgen {_us(f)} us")
            lines.append(f"| {_size(size)} | {mode} | {_us(e)} | {_us(c)} | {_us(f)} | {_x(e, c)} | {_x(c, f)} |")
        del inputs
    return lines


def section_host(b: Bench, size: Tuple[int, int]) -> List[str]:
    spec = cases.OPS["gaussian_kl"]
    torch.manual_seed(0)
    inputs = spec.make(*size, torch.float32, b.device)
    x = torch.randn(size).requires_grad_(True)
    exp_inputs = cases.OpInputs((x,), (x,))
    lines = [f"### 3. Host cost: fastgen.gaussian_kl at {_size(size)} against one torch.exp, float32", "",
             "Inputs require grad. fwd-grad = the forward recording the graph; full = forward + backward "
             f"(`torch.exp` of one {_size(size)} tensor: ExpBackward).", "",
             "| mode | torch.exp us | fastgen.gaussian_kl us | eager formula us | gaussian_kl / exp |",
             "|---|---|---|---|---|"]
    for mode in ("fwd-grad", "full"):
        variants = b.op_variants(spec, inputs, mode)
        variants.insert(0, ("exp", contextlib.nullcontext, cases.mode_callable(torch.exp, exp_inputs, mode)))
        st = b.time(variants)
        t_exp, t_f, t_e = _ms(st, "exp"), _ms(st, "fastgen"), _ms(st, "eager")
        b.log(f"host cost {mode:8s} exp {_us(t_exp)}  gaussian_kl {_us(t_f)}  eager {_us(t_e)} us")
        lines.append(f"| {mode} | {_us(t_exp)} | {_us(t_f)} | {_us(t_e)} | {_x(t_f, t_exp)} |")
    return lines


def section_event_dims(b: Bench, size: Tuple[int, int]) -> List[str]:
    ed1 = cases.OPS["bernoulli_log_likelihood"]
    ed0 = cases.OPS["bernoulli_log_likelihood[event_dims=0]"]
    torch.manual_seed(0)
    inputs = ed1.make(*size, torch.float32, b.device)
    n = size[0] * size[1]
    lines = [f"### 4. event_dims=0 against event_dims=1: bernoulli_log_likelihood {_size(size)}, float32", "",
             "Nanoseconds per element; event_dims=0 writes a (B, D) result (element-wise, as "
             "torch.distributions' log_prob), event_dims=1 a (B,) one.", "",
             "| mode | provider | event_dims=1 ns/el | event_dims=0 ns/el | ed0 / ed1 |",
             "|---|---|---|---|---|"]
    for mode in ("fwd", "full"):
        variants = []
        for tag, spec in (("1", ed1), ("0", ed0)):
            for label, ctx, fn in b.op_variants(spec, inputs, mode):
                variants.append((f"{label}@{tag}", ctx, fn))
        st = b.time(variants)
        for prov in ("eager", "fastgen"):
            t1, t0 = _ms(st, f"{prov}@1"), _ms(st, f"{prov}@0")
            if t1 is None and t0 is None:
                continue
            ns1 = None if t1 is None else t1 * 1e6 / n
            ns0 = None if t0 is None else t0 * 1e6 / n
            b.log(f"event_dims {mode:5s} {prov:8s} ed1 {ns1} ed0 {ns0} ns/el")
            lines.append(f"| {mode} | {prov} | {'-' if ns1 is None else f'{ns1:.3f}'} | "
                         f"{'-' if ns0 is None else f'{ns0:.3f}'} | {_x(t0, t1)} |")
    return lines


def section_clip(b: Bench, critics) -> List[str]:
    lines = ["### 5. Weight clipping: clip_weights_ against the per-parameter loop and the _foreach pair", "",
             "In-place clamp to [-0.01, 0.01] of every parameter of a DCGAN critic, float32; each call "
             "walks `critic.parameters()`.", "",
             "| critic | tensors | elements | loop us | foreach us | clip_weights_ us | vs loop | vs foreach |",
             "|---|---|---|---|---|---|---|---|"]
    for cls in critics:
        torch.manual_seed(0)
        critic = cls()
        params = list(critic.parameters())
        variants: List[Variant] = [
            ("loop", contextlib.nullcontext, lambda: cases.clip_loop(critic.parameters())),
            ("foreach", contextlib.nullcontext, lambda: cases.clip_foreach(list(critic.parameters()))),
            ("fastgen", b.fg, lambda: cases.clip_fastgen(critic)),
        ]
        st = b.time(variants)
        t_l, t_e, t_f = _ms(st, "loop"), _ms(st, "foreach"), _ms(st, "fastgen")
        b.log(f"clip {cls.label}: loop {_us(t_l)}  foreach {_us(t_e)}  fastgen {_us(t_f)} us")
        lines.append(f"| {cls.label} | {len(params)} | {sum(p.numel() for p in params)} | {_us(t_l)} | "
                     f"{_us(t_e)} | {_us(t_f)} | {_x(t_l, t_f)} | {_x(t_e, t_f)} |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.small_sizes", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(_size(s) for s in SIZES),
                   help="BxD list of section 1 (default %(default)s)")
    add_table_arguments(p)
    p.add_argument("--no-compile", action="store_true", help="skip section 2 (torch.compile)")
    p.add_argument("--quick", action="store_true",
                   help="seconds, for tests: 128x2 and 256x64, few rounds, no torch.compile, one critic")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with torch_threads(max(1, args.threads)):
        return _main(args, list(argv) if argv is not None else sys.argv[1:])


def _main(args, argv: List[str]) -> int:
    sizes = parse_sizes(args.sizes)
    cfg = table_timer(args)
    compile_sizes, host_size, ed_size = COMPILE_SIZES, HOST_SIZE, EVENT_DIMS_SIZE
    critics = (DCGANCritic28, DCGANCritic64)
    with_compile = not args.no_compile
    if args.quick:
        sizes, ed_size = [(128, 2), (256, 64)], (256, 64)
        cfg, with_compile, critics = TimerConfig.quick(), False, (DCGANCritic28,)
    b = Bench(cfg, args.backend)
    load = env.load_note()
    started = env.now_iso()
    body: List[str] = []
    body += section_ratios(b, sizes) + [""]
    if with_compile:
        body += section_compile(b, compile_sizes) + [""]
    body += section_host(b, host_size) + [""]
    body += section_event_dims(b, ed_size) + [""]
    body += section_clip(b, critics) + [""]
    v = env.versions()
    rounds = f"{min(b.rounds)}-{max(b.rounds)}" if b.rounds else "-"
    head = [f"## fastgen at the sizes users train at: {env.cpu_model()}, CPU", "",
            f"- {started}; torch {v['torch']}, fastgen {v['fastgen'] or '-'} (backend {args.backend!r})",
            f"- torch threads {torch.get_num_threads()}; timer {b.clock} (the calling thread's CPU time "
            f"when 1 thread); variants interleaved round-robin; medians of {rounds} rounds "
            f"(>= {cfg.min_reps} rounds and {cfg.min_time_s:g} s per variant)",
            f"- host at start: {load}",
            f"- command: `{' '.join(['python -m bench.small_sizes'] + [shlex.quote(a) for a in argv])}`",
            ""]
    text = "\n".join(head + body).rstrip() + "\n"
    print()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
