"""Acceptance tables of the IWAE / WGAN-GP ops: reparameterize_log_weights and grad_norm_penalty.

CPU, one torch thread (``--threads`` changes it), times are the calling thread's CPU time
(``time.thread_time_ns``), the variants of each measurement are timed round-robin (one
sample of each per round) and every number is a median of many rounds; ratios are taken
between variants of the same measurement only. Sections:

1. the ops, forward + backward (mode ``full``: inputs require grad) and forward under
   ``torch.no_grad()`` (``fwd``), at 128x20, 128x784 and 4096x1024 float32, against the eager
   formula and ``torch.compile`` of it: ``reparameterize_log_weights`` with one sample (the
   registry's bench case) and with K = 5 (z of shape (5, B, D)), and ``grad_norm_penalty``
   (eager: ``grad.view(B, -1).norm(2, dim=1)``, ``- 1``, ``** 2``);
2. the IWAE training step (784-400-20 MLP VAE, Bernoulli decoder, batch 128, Adam) with
   K = 5 and K = 50: the eager IWAE loss, ``torch.compile`` of it, and fastgen's
   (``reparameterize_log_weights`` + ``bernoulli_log_likelihood``);
3. the WGAN-GP critic step (28x28 layer-norm critic, batch 64, lambda = 10, Adam, G forward
   without grad): eager penalty against ``fastgen.gradient_penalty``.

    python -m bench.iwae_wgangp              # several minutes on a 2-core host (torch.compile)
    python -m bench.iwae_wgangp --quick      # seconds: small sizes, few rounds, no compile
"""
from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench import cases, env, steps
from bench.runner import parse_sizes
from bench.small_sizes import Bench, _ms, _size, _us, _x
from bench.timing import TimerConfig, add_table_arguments, table_timer, torch_threads

SIZES = [(128, 20), (128, 784), (4096, 1024)]
MODES = ("full", "fwd")
K_OP = 5
IWAE_KS = (5, 50)


def _eager_log_weights_k(mu, logvar):
    std = torch.exp(0.5 * logvar)
    eps = torch.randn(K_OP, *mu.shape)
    z = mu + eps * std
    log_q = -0.5 * torch.sum(cases.LOG_2PI + logvar + eps.pow(2), dim=-1)
    log_p = -0.5 * torch.sum(cases.LOG_2PI + z.pow(2), dim=-1)
    return z, log_p - log_q


def _fused_log_weights_k(mu, logvar):
    import fastgen

    return fastgen.reparameterize_log_weights(mu, logvar, num_samples=K_OP)


def op_specs() -> List[cases.OpSpec]:
    base = cases.OPS["reparameterize_log_weights"]
    k = cases.OpSpec(f"reparameterize_log_weights[K={K_OP}]", base.op, _eager_log_weights_k, _fused_log_weights_k,
                     base.make, base.elements, event_dims=1, random=True)
    return [base, k, cases.OPS["grad_norm_penalty"]]


def section_ops(b: Bench, sizes, with_compile: bool) -> List[str]:
    lines = ["### 1. The ops: t(eager) / t(fastgen) and t(torch.compile) / t(fastgen), float32", "",
             "full = forward + backward (inputs require grad); fwd = forward under torch.no_grad(). "
             "Medians in microseconds.", "",
             "| op | mode | size | eager us | compile us | fastgen us | vs eager | vs compile |",
             "|---|---|---|---|---|---|---|---|"]
    for spec in op_specs():
        for size in sizes:
            torch.manual_seed(0)
            inputs = spec.make(*size, torch.float32, b.device)
            for mode in MODES:
                st = b.time(b.op_variants(spec, inputs, mode, with_compile=with_compile))
                e, c, f = _ms(st, "eager"), _ms(st, "compile"), _ms(st, "fastgen")
                b.log(f"{spec.key:32s} {mode:5s} {_size(size):>10s}  eager {_us(e)}  compile {_us(c)}  "
                      f"fastgen {_us(f)} us")
                lines.append(f"| {spec.key} | {mode} | {_size(size)} | {_us(e)} | {_us(c)} | {_us(f)} | "
                             f"{_x(e, f)} | {_x(c, f)} |")
            del inputs
    return lines


def section_steps(b: Bench, batch: int, wgan_batch: int, ks: Sequence[int], with_compile: bool) -> List[str]:
    lines = ["### 2. Training steps: t(eager) / t(X)", "",
             f"`iwae K=k`: one Adam step of the 784-400-20 VAE on the k-sample IWAE bound, batch {batch}. "
             f"`wgan_gp critic`: one WGAN-GP critic step (G forward without grad, Wasserstein loss + "
             f"10 x penalty, Adam), 28x28 layer-norm critic, batch {wgan_batch}. Medians in milliseconds.", "",
             "| step | eager ms | compile ms | fastgen ms | fastgen vs eager | compile vs eager |",
             "|---|---|---|---|---|---|"]
    device = b.device
    for k in ks:
        variants = [("eager", contextlib.nullcontext, steps.make_iwae_step(steps.iwae_loss_eager, k, device, batch))]
        if with_compile:
            torch._dynamo.reset()
            compiled = torch.compile(lambda model, x, k_=k: steps.iwae_loss_eager(model, x, k_), dynamic=False)
            variants.append(("compile", contextlib.nullcontext, steps.make_iwae_step(compiled, k, device, batch)))
        with b.fg():
            variants.append(("fastgen", b.fg, steps.make_iwae_step(steps.iwae_loss_fastgen, k, device, batch)))
        st = b.time(variants)
        e, c, f = _ms(st, "eager"), _ms(st, "compile"), _ms(st, "fastgen")
        b.log(f"iwae K={k}: eager {e} compile {c} fastgen {f} ms")
        lines.append(f"| iwae K={k} | {e:.2f} | {'-' if c is None else f'{c:.2f}'} | {f:.2f} | {_x(e, f)} | "
                     f"{_x(e, c)} |")
    variants = [("eager", contextlib.nullcontext,
                 steps.make_wgan_gp_critic_step(steps.gradient_penalty_eager, device, wgan_batch)),
                ("fastgen", b.fg, steps.make_wgan_gp_critic_step(steps.gradient_penalty_fastgen, device, wgan_batch))]
    st = b.time(variants)
    e, f = _ms(st, "eager"), _ms(st, "fastgen")
    b.log(f"wgan_gp critic: eager {e} fastgen {f} ms")
    lines.append(f"| wgan_gp critic | {e:.2f} | - | {f:.2f} | {_x(e, f)} | - |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.iwae_wgangp", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(_size(s) for s in SIZES), help="BxD list (default %(default)s)")
    add_table_arguments(p)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--no-steps", action="store_true", help="skip the training steps")
    p.add_argument("--quick", action="store_true", help="seconds, for tests: 128x20, few rounds, no compile")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with torch_threads(max(1, args.threads)):
        return _main(args, list(argv) if argv is not None else sys.argv[1:])


def _main(args, argv: List[str]) -> int:
    sizes = parse_sizes(args.sizes)
    cfg = table_timer(args)
    with_compile = not args.no_compile
    batch, wgan_batch, ks = 128, 64, IWAE_KS
    if args.quick:
        sizes, cfg, with_compile, batch, wgan_batch, ks = [(128, 20)], TimerConfig.quick(), False, 8, 8, (5,)
    b = Bench(cfg, args.backend)
    load = env.load_note()
    started = env.now_iso()
    body = section_ops(b, sizes, with_compile) + [""]
    if not args.no_steps:
        body += section_steps(b, batch, wgan_batch, ks, with_compile) + [""]
    v = env.versions()
    rounds = f"{min(b.rounds)}-{max(b.rounds)}" if b.rounds else "-"
    head = [f"## IWAE log-weights and the WGAN-GP penalty: {env.cpu_model()}, CPU", "",
            f"- {started}; torch {v['torch']}, fastgen {v['fastgen'] or '-'} (backend {args.backend!r})",
            f"- torch threads {torch.get_num_threads()}; timer {b.clock}; variants interleaved round-robin; "
            f"medians of {rounds} rounds (>= {cfg.min_reps} rounds and {cfg.min_time_s:g} s per variant)",
            f"- host at start: {load}",
            f"- command: `{' '.join(['python -m bench.iwae_wgangp'] + [shlex.quote(a) for a in argv])}`", ""]
    text = "\n".join(head + body).rstrip() + "\n"
    print()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
