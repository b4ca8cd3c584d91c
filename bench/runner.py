"""``python -m bench``: the benchmark runner (see ``bench/README.md``).

For every case of ``bench.cases.OPS`` (the ops of fastgen's registry, event_dims 1 and 0)
x dtype x size x mode it times every provider -- on CPU round-robin, one sample of each per
round, with the calling thread's CPU time on one torch thread -- and records one CSV row per
provider: median / p20 / p80 time, the ideal fused kernel's bytes and the GB/s they imply,
the percentage of a plain copy of the same bytes timed in the same run, bytes saved for
backward, CUDA peak memory and kernel launches (CUDA). Then parameter clipping against
the number of parameter tensors, and the end-to-end VAE / WGAN steps.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from bench import cases, env, report, steps
from bench.timing import (CUDAGRAPH_MAX_NUMEL, CopyBaseline, Stats, TimerConfig, cpu_clock, cuda_peak_bytes,
                          launches, saved_tensor_bytes, time_cpu_interleaved, time_fn, torch_threads)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


class Run:
    """Everything one invocation shares: device, timer settings, copy baselines, rows."""

    def __init__(self, device: torch.device, cfg: TimerConfig, *, check: bool = True,
                 verbose: bool = True, interleave: bool = True):
        self.device, self.cfg, self.check, self.verbose = device, cfg, check, verbose
        self.interleave = interleave
        self.copy = CopyBaseline(device, cfg)
        self.rows: List[Dict] = []
        self.failures: List[str] = []
        self.base = {"date": env.now_iso(), "device": env.device_name(device),
                     "threads": torch.get_num_threads(), **env.versions()}

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    def row(self, **kw) -> Dict:
        r = dict(self.base)
        r.update(kw)
        self.rows.append(r)
        return r

    def stats_row(self, st: Stats, *, nbytes: Optional[int], numel: int, **kw) -> Dict:
        gbps = pct = None
        if nbytes and not st.timer.startswith("wall"):  # a host-bound wall time is no bandwidth
            gbps = nbytes / (st.median_ms * 1e-3) / 1e9
            copy = self.copy.time(nbytes, cudagraph=st.timer == "do_bench_cudagraph")
            pct = 100.0 * copy.median_ms / st.median_ms
        return self.row(median_ms=st.median_ms, p20_ms=st.p20_ms, p80_ms=st.p80_ms,
                        bytes=nbytes, gbps=gbps, pct_of_copy=pct, numel=numel,
                        timer=st.timer, reps=st.reps, **kw)


def _check_outputs(spec: cases.OpSpec, got, ref, dtype) -> Optional[str]:
    """Sanity check that a provider computes the op: deterministic ops match eager."""
    got, ref = cases.as_tuple(got), cases.as_tuple(ref)
    if len(got) != len(ref):
        return f"{len(got)} outputs, expected {len(ref)}"
    for i, (g, r) in enumerate(zip(got, ref)):
        if g.shape != r.shape:
            return f"output {i} shape {tuple(g.shape)}, expected {tuple(r.shape)}"
        if not torch.isfinite(g.float()).all():
            return f"output {i} not finite"
        deterministic = not spec.random or (spec.name == "reparameterize_kl" and i == 1)
        if deterministic:
            # error relative to the output's scale; bfloat16 eager rounds every intermediate
            tol = 3e-2 if dtype == torch.bfloat16 else 1e-4
            g32, r32 = g.float(), r.float()
            err = ((g32 - r32).abs().max() / (r32.abs().max() + 1.0)).item() if r.numel() else 0.0
            if err > tol:
                return f"output {i} differs from eager: max error {err:.2e} of scale (tol {tol:.0e})"
    return None


def run_ops(run: Run, specs: Sequence[cases.OpSpec], dtypes: Sequence[str], sizes, providers,
            modes) -> None:
    for spec in specs:
        for dname in dtypes:
            dtype = cases.DTYPES[dname]
            for (B, D) in sizes:
                torch.manual_seed(0)
                inputs = spec.make(B, D, dtype, run.device)
                _run_case(run, spec, inputs, B, D, dtype, dname, providers, modes)
                del inputs


def _fail(run: Run, what: str, e: BaseException) -> None:
    """One provider failing must not lose the whole run: record it, warn, go on."""
    run.failures.append(f"{what}: {e!r}")
    warnings.warn(f"bench: {what} failed: {e!r}")


def _run_case(run: Run, spec: cases.OpSpec, inputs: cases.OpInputs, B: int, D: int,
              dtype: torch.dtype, dname: str, providers, modes) -> None:
    """Every provider and mode of one (op, dtype, size) case."""
    dev, numel, shape, op = run.device, B * D, f"{B}x{D}", spec.name
    itemsize = torch.tensor([], dtype=dtype).element_size()
    bound, ref = [], None
    for prov in providers:
        what = f"{spec.key} {prov.name} {dname} {shape}"
        try:
            with prov.context():
                fn = prov.bind(spec)
                if run.check:
                    ref = _check_provider(run, spec, prov, fn, inputs, dtype, what, ref)
                saved = (saved_tensor_bytes(lambda: fn(*inputs.args), inputs.args)
                         if inputs.grad_inputs else None)
            bound.append((prov, fn, saved))
        except Exception as e:
            _fail(run, what, e)
    for mode in modes:
        if mode not in spec.modes:
            continue
        entries = []
        for prov, fn, saved in bound:
            try:
                with prov.context():
                    entries.append((prov, cases.mode_callable(fn, inputs, mode), saved))
            except Exception as e:
                _fail(run, f"{spec.key} {prov.name} {mode} {dname} {shape}", e)
        stats = _time_entries(run, entries, numel, mode, f"{spec.key} {mode} {dname} {shape}")
        for (prov, call, saved), st in zip(entries, stats):
            if st is None:
                continue
            peak = launches_n = None
            if dev.type == "cuda":
                with prov.context():
                    peak = cuda_peak_bytes(call, dev)
                    launches_n = launches(call, dev)
            r = run.stats_row(st, nbytes=spec.nbytes(mode, B, D, itemsize), numel=numel, op=op,
                              provider=prov.name, mode=mode, dtype=dname, shape=shape,
                              event_dims=spec.event_dims, peak_mem_bytes=peak,
                              saved_bytes=saved if mode in cases.GRAD_MODES else None,
                              launches=launches_n)
            run.log(f"{spec.key:40s} {prov.name:15s} {mode:8s} {dname:8s} {shape:>10s} "
                    f"{st.median_ms:10.4f} ms  {_pct(r['pct_of_copy'])}")


def _time_entries(run: Run, entries, numel: int, mode: str, what: str) -> List[Optional[Stats]]:
    """On CPU all providers round-robin, one sample of each per round (default); with
    ``--no-interleave``, and on CUDA, one provider after another."""
    if run.interleave and run.device.type == "cpu" and entries:
        try:
            return time_cpu_interleaved([(prov.context, call) for prov, call, _ in entries], run.cfg)
        except Exception:  # find out which provider fails, time the others alone
            pass
    out: List[Optional[Stats]] = []
    for prov, call, _ in entries:
        try:
            with prov.context():
                # autograd is never captured (see bench.timing): the wall clock where the host
                # bounds it, CUDA events otherwise; clipping mutates in place, uncaptured too
                host_bound = mode == "step" or (mode in cases.GRAD_MODES and numel <= CUDAGRAPH_MAX_NUMEL)
                out.append(time_fn(call, run.device, run.cfg, numel=numel, host_bound=host_bound,
                                   cudagraph=False if mode in cases.GRAD_MODES + ("clip",) else None))
        except Exception as e:
            _fail(run, f"{what} {prov.name}", e)
            out.append(None)
    return out


def _check_provider(run: Run, spec, prov, fn, inputs, dtype, what: str, ref):
    """Compare a provider's forward with eager's; returns the eager reference output."""
    if inputs.grad_inputs:  # grad enabled, as when timed, so torch.compile builds that graph
        out = fn(*inputs.args)
    else:  # in-place op: on a copy, without autograd as when timed
        with torch.no_grad():
            out = fn(*(a.detach().clone() for a in inputs.args))
    out = tuple(o.detach() for o in cases.as_tuple(out))
    if prov.name == "eager":
        return out
    if ref is not None:
        msg = _check_outputs(spec, out, ref, dtype)
        if msg:
            run.failures.append(f"{what}: {msg}")
            warnings.warn(f"bench: {what}: {msg}")
    return ref


def _pct(p) -> str:
    return "" if p is None else f"{p:5.0f}% of copy"


def run_clip(run: Run, kind: str, dtypes: Sequence[str], fg_backends: Sequence[str]) -> None:
    dev = run.device
    provs = [cases.Provider("eager", None), cases.Provider("foreach", None)]
    fns = {"eager": cases.clip_loop, "foreach": cases.clip_foreach}
    for b in fg_backends:
        provs.append(cases.Provider(f"fastgen-{b}", None, context=lambda b=b: cases.fastgen_backend(b)))
        fns[f"fastgen-{b}"] = cases.clip_fastgen
    for dname in dtypes:
        dtype = cases.DTYPES[dname]
        torch.manual_seed(0)
        for ps in cases.clip_param_sets(kind, dtype, dev):
            nbytes = 2 * ps.numel * ps.params[0].element_size()
            entries = [(p, (lambda fn=fns[p.name], params=ps.params: fn(params)), None) for p in provs]
            # no CUDA graph (mode "clip"): the host-side launch cost is what fusing the loop removes
            stats = _time_entries(run, entries, ps.numel, "clip", f"{report.CLIP_OP} {dname} {ps.label}")
            for (prov, call, _), st in zip(entries, stats):
                if st is None:
                    continue
                try:
                    with prov.context():
                        n_launch = launches(call, dev)
                        peak = cuda_peak_bytes(call, dev) if dev.type == "cuda" else None
                except Exception as e:
                    _fail(run, f"{report.CLIP_OP} {prov.name} {dname} {ps.label}", e)
                    continue
                r = run.stats_row(st, nbytes=nbytes, numel=ps.numel, op=report.CLIP_OP,
                                  provider=prov.name, mode="fwd", dtype=dname, shape=ps.label,
                                  peak_mem_bytes=peak, launches=n_launch)
                r["count"] = ps.count
                run.log(f"{report.CLIP_OP:28s} {prov.name:15s} {dname:8s} {ps.label:>34s} "
                        f"{st.median_ms:10.4f} ms  launches {n_launch}")


def run_steps(run: Run, fg_backends: Sequence[str], *, quick: bool) -> None:
    """The end-to-end steps; the variants of one step (eager, fastgen-*) are timed together
    (round-robin on CPU, like the op cases)."""
    dev = run.device
    groups: Dict[tuple, list] = {}
    for sc in steps.step_cases(dev, list(fg_backends), quick=quick):
        groups.setdefault((sc.op, sc.cudagraph), []).append(sc)
    for (op, _), group in groups.items():
        entries = []
        for sc in group:
            with sc.context():
                try:
                    entries.append((cases.Provider(sc.provider, None, context=sc.context), sc.make(), sc))
                except Exception as e:
                    _fail(run, f"{sc.op} {sc.provider}: setup", e)
        stats = _time_entries(run, entries, 0, "step", op)
        for (prov, step, sc), st in zip(entries, stats):
            if st is None:
                continue
            peak = None
            if dev.type == "cuda":
                try:
                    with prov.context():
                        peak = cuda_peak_bytes(step, dev)
                except Exception as e:
                    _fail(run, f"{sc.op} {sc.provider}: peak memory", e)
                    continue
            run.stats_row(st, nbytes=None, numel=sc.numel, op=sc.op, provider=sc.provider,
                          mode="full", dtype="float32", shape=sc.shape, peak_mem_bytes=peak)
            run.log(f"{sc.op:28s} {sc.provider:24s} {sc.shape:>14s} {st.median_ms:10.4f} ms")


def parse_sizes(text: str):
    out = []
    for part in text.split(","):
        b, d = part.lower().split("x")
        out.append((int(b), int(d)))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, few reps, no torch.compile; writes to a temp dir unless --out")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {RESULTS_DIR})")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--ops", default=None,
                   help="comma list of cases (default: every op of fastgen's registry): "
                        + ",".join(dict.fromkeys(s.name for s in cases.OPS.values()))
                        + "; a name selects its event_dims 1 and 0 cases")
    p.add_argument("--event-dims", default="0,1",
                   help="event_dims of the row ops' cases, comma list (default 0,1)")
    p.add_argument("--providers", default=None,
                   help="comma list: eager,compile,fastgen-cpu,fastgen-cuda,fastgen-triton,"
                        "fastgen-reference (default: eager, compile and every built fastgen backend; "
                        "--quick drops compile)")
    p.add_argument("--modes", default=",".join(cases.MODES))
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--sizes", default=None, help="comma list of BxD (default: the device's sweep)")
    p.add_argument("--min-time", type=float, default=None, help="seconds of samples per CPU measurement")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the run (default: 1 on CPU, so times are the "
                        "calling thread's CPU time; on CUDA torch's default). With more than one "
                        "thread CPU times are wall-clock times")
    p.add_argument("--no-ops", action="store_true", help="skip the op sweep")
    p.add_argument("--no-clip", action="store_true", help="skip the parameter-clipping sweep")
    p.add_argument("--no-steps", action="store_true", help="skip the end-to-end steps")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-check", action="store_true", help="skip the eager-vs-provider output check")
    p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=True,
                   help="CPU: sample the providers of a case round-robin, one sample each per round "
                        "(default); --no-interleave times them one after another, each in its own "
                        "allocator steady state")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else None)
    if threads is not None and threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {threads}")
    with torch_threads(threads):
        return _main(args, argv, device)


def _main(args, argv, device: torch.device) -> int:
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if device.type == "cuda":
        torch.cuda.set_device(device if device.index is not None else 0)
        device = torch.device("cuda", torch.cuda.current_device())
    kind = "quick" if args.quick else device.type
    cfg = TimerConfig.quick() if args.quick else TimerConfig()
    if args.min_time is not None:
        cfg.min_time_s = args.min_time
    out_dir = args.out
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="fastgen-bench-")) if args.quick else RESULTS_DIR
    out_dir = Path(out_dir)

    fg_backends = cases.fastgen_backends(device)
    if args.providers:
        names = [s.strip() for s in args.providers.split(",") if s.strip()]
    else:
        names = ["eager"] + ([] if args.quick else ["compile"]) + [f"fastgen-{b}" for b in fg_backends]
    fg_named = [n[len("fastgen-"):] for n in names if n.startswith("fastgen-")]
    providers = cases.make_providers(device, names)
    try:
        event_dims = [int(v) for v in args.event_dims.split(",") if v.strip()]
        specs = cases.select(args.ops.split(",") if args.ops else None, event_dims)
    except ValueError as e:
        raise SystemExit(str(e))
    sizes = parse_sizes(args.sizes) if args.sizes else cases.SIZES[kind]
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in cases.MODES:
            raise SystemExit(f"unknown mode {m!r}; choose from {', '.join(cases.MODES)}")
    dtypes = [d for d in args.dtypes.split(",") if d]

    slug = env.device_slug(device)
    csv_path = out_dir / f"{slug}.csv"
    try:  # an old CSV with other columns is refused now, not after the run
        report.check_csv(csv_path)
    except RuntimeError as e:
        raise SystemExit(f"bench: {e}")
    run = Run(device, cfg, check=not args.no_check, verbose=not args.quiet, interleave=args.interleave)
    for name in cases.missing_cases():
        run.failures.append(f"op {name!r} of fastgen.ops.REGISTRY has no bench case (add one to "
                            "bench/cases.py CASES)")
    load = env.load_note()
    clock = (cpu_clock(cfg)[1] if device.type == "cpu" else "CUDA events")
    timing = (f"timer {clock}, providers "
              + ("interleaved round-robin" if args.interleave and device.type == "cpu"
                 else "one after another"))
    run.log(f"# {run.base['device']} ({slug}); torch {run.base['torch']}, triton {run.base['triton']}, "
            f"fastgen {run.base['fastgen']} backends {fg_backends}; {load}; {timing}")
    t0 = time.perf_counter()
    if not args.no_ops:
        run_ops(run, specs, dtypes, sizes, providers, modes)
    if not args.no_clip:
        run_clip(run, kind, dtypes, fg_named)
    if not args.no_steps:
        run_steps(run, fg_named, quick=args.quick)
    for r in run.rows:
        r["device"] = run.base["device"]

    report.append_csv(csv_path, run.rows)
    header = {"device_name": run.base["device"], "date": run.base["date"], "load": load,
              "command": command, "timing": timing, **env.versions()}
    notes = {}
    for spec in cases.OPS.values():
        if spec.note and spec.event_dims in (None, 1):
            notes.setdefault(spec.name, spec.note)
    report.write_markdown(out_dir / f"{slug}.md", run.rows, header=header, notes=notes)
    if not args.no_plots:
        report.write_plots(out_dir, slug, run.rows)
    run.log(f"# {len(run.rows)} rows in {time.perf_counter() - t0:.0f} s -> {csv_path}")
    if run.failures:
        print("# problems:\n" + "\n".join("#   " + f for f in run.failures), file=sys.stderr)
        return 1
    return 0
