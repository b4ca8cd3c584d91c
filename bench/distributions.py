"""fastgen.distributions against torch.distributions, side by side in one run.

``python -m bench.distributions`` prints a markdown table: for each call, size and mode,
torch's time, fastgen's time and their ratio t(torch) / t(fastgen) (above 1: fastgen is
faster). Both sides run the same code with the class namespace swapped
(``torch.distributions`` vs ``fastgen.distributions``), as a user changing an import would;
distributions are built inside the timed call, as in a training step, except fixed priors
(built once, as a module holds them).

Method: CPU, ``torch.set_num_threads(1)``, the calling thread's CPU time
(``time.thread_time_ns``, so a shared machine's preemption does not count), the two
providers interleaved round-robin (one sample of each per round, so whatever disturbs the
host hits both alike), each sample ``inner`` calls long (about 1 ms), the median over the
rounds. ``fwd`` runs under ``torch.no_grad()``; ``full`` is the forward with inputs that
require grad plus ``torch.autograd.grad`` of the summed output. ``validate`` is the
distributions' ``validate_args``: ``on`` is torch's default, ``off`` is ``validate_args=False``.

The last rows time one training step (forward, backward, Adam) of a pixyz-style VAE on the
digits data -- a conditional Normal encoder, a Bernoulli decoder, KL + reconstruction --
written once against a distributions namespace (``pixyz_vae_*`` below, also used by
``tests/test_distributions_vae.py``). On fastgen's classes the sample and the KL come from
``rsample_and_kl`` (one ``reparameterize_kl`` pass); on torch's from ``rsample`` and
``kl_divergence``.

    python -m bench.distributions                  # the full table (about a minute)
    python -m bench.distributions --quick          # a few seconds
    python -m bench.distributions --sizes 128x20 --modes fwd --validate on
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributions as td
import torch.nn.functional as F
from torch import nn

import fastgen
import fastgen.distributions as fd

# ----------------------------------------------------------------------------- the VAE


class PixyzEncoder(nn.Module):
    """q(z | x): a conditional Normal, as pixyz writes one (a network giving loc and scale)."""

    def __init__(self, dists, x_dim: int, z_dim: int, hidden: int):
        super().__init__()
        self.dists = dists
        self.hidden = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU())
        self.loc = nn.Linear(hidden, z_dim)
        self.scale = nn.Linear(hidden, z_dim)

    def forward(self, x: torch.Tensor):
        h = self.hidden(x)
        d = self.dists
        return d.Independent(d.Normal(self.loc(h), F.softplus(self.scale(h)) + 1e-4), 1)


class PixyzDecoder(nn.Module):
    """p(x | z): a conditional Bernoulli on logits (soft targets in [0, 1], so no validation)."""

    def __init__(self, dists, x_dim: int, z_dim: int, hidden: int):
        super().__init__()
        self.dists = dists
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def forward(self, z: torch.Tensor):
        d = self.dists
        return d.Independent(d.Bernoulli(logits=self.net(z), validate_args=False), 1)


class PixyzVAE(nn.Module):
    """Encoder, decoder and a standard normal prior over `dists` (torch.distributions or
    fastgen.distributions); the loss is the negative ELBO, KL + reconstruction."""

    def __init__(self, dists, x_dim: int = 64, z_dim: int = 8, hidden: int = 128):
        super().__init__()
        self.dists = dists
        self.encoder = PixyzEncoder(dists, x_dim, z_dim, hidden)
        self.decoder = PixyzDecoder(dists, x_dim, z_dim, hidden)
        self.prior = dists.Independent(dists.Normal(torch.zeros(z_dim), torch.ones(z_dim)), 1)

    def sample_and_kl(self, q):
        rsample_and_kl = getattr(self.dists, "rsample_and_kl", None)
        if rsample_and_kl is not None:  # fastgen: z and KL(q || prior) in one pass
            return rsample_and_kl(q, self.prior)
        return q.rsample(), self.dists.kl_divergence(q, self.prior)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        q = self.encoder(x)
        z, kl = self.sample_and_kl(q)
        reconstruction = self.decoder(z).log_prob(x)
        return (kl - reconstruction).mean()


def digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits scaled to [0, 1], split (fixed permutation) into train and test."""
    from sklearn.datasets import load_digits

    data = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(data) * test_fraction)
    return data[order[n_test:]], data[order[:n_test]]


def pixyz_vae_train(dists, train: torch.Tensor, *, epochs: int = 30, batch_size: int = 64, seed: int = 0,
                    lr: float = 2e-3) -> PixyzVAE:
    """Trains a PixyzVAE over `dists` with a fixed seed (same initial weights, same batches)."""
    torch.manual_seed(seed)
    model = PixyzVAE(dists)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=batches)
        for start in range(0, len(train), batch_size):
            loss = model.loss(train[order[start:start + batch_size]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


@torch.no_grad()
def pixyz_vae_elbo(model: PixyzVAE, data: torch.Tensor, *, samples: int = 16, seed: int = 1) -> float:
    """Held-out ELBO per example (nats), evaluated with torch's own distributions whatever the
    model was trained with: analytic KL to N(0, I) plus a `samples`-draw estimate of
    E_q log p(x | z)."""
    torch.manual_seed(seed)
    h = model.encoder.hidden(data)
    q = td.Independent(td.Normal(model.encoder.loc(h), F.softplus(model.encoder.scale(h)) + 1e-4), 1)
    prior = td.Independent(td.Normal(torch.zeros_like(q.mean), torch.ones_like(q.mean)), 1)
    z = q.rsample((samples,))
    likelihood = td.Independent(td.Bernoulli(logits=model.decoder.net(z), validate_args=False), 1)
    reconstruction = likelihood.log_prob(data).mean(0)
    return float((reconstruction - td.kl_divergence(q, prior)).mean())


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    name: str  # the call, as the table shows it
    build: Callable  # (dists, tensors, validate) -> a function of no arguments giving the output(s)
    tensors: Callable  # (B, D, generator) -> dict of named input tensors
    grad: tuple[str, ...]  # the inputs that require grad in "full" mode


def _gaussian(B, D, g):
    return {
        "loc": torch.randn(B, D, generator=g),
        "scale": torch.rand(B, D, generator=g) + 0.5,
        "x": torch.randn(B, D, generator=g),
        "loc2": torch.randn(B, D, generator=g),
        "scale2": torch.rand(B, D, generator=g) + 0.5,
        "zeros": torch.zeros(B, D),
        "ones": torch.ones(B, D),
    }


def _binary(B, D, g):
    return {"logits": 3 * torch.randn(B, D, generator=g), "x": torch.bernoulli(torch.full((B, D), 0.3), generator=g)}


def _normal_log_prob(d, t, v):
    return lambda: d.Normal(t["loc"], t["scale"], validate_args=v).log_prob(t["x"])


def _bernoulli_log_prob(d, t, v):
    return lambda: d.Bernoulli(logits=t["logits"], validate_args=v).log_prob(t["x"])


def _independent_normal_log_prob(d, t, v):
    return lambda: d.Independent(d.Normal(t["loc"], t["scale"], validate_args=v), 1).log_prob(t["x"])


def _independent_bernoulli_log_prob(d, t, v):
    return lambda: d.Independent(d.Bernoulli(logits=t["logits"], validate_args=v), 1).log_prob(t["x"])


def _kl(d, t, v):
    return lambda: d.kl_divergence(
        d.Normal(t["loc"], t["scale"], validate_args=v), d.Normal(t["loc2"], t["scale2"], validate_args=v)
    )


def _kl_standard(d, t, v):
    prior = d.Normal(t["zeros"], t["ones"], validate_args=v)
    return lambda: d.kl_divergence(d.Normal(t["loc"], t["scale"], validate_args=v), prior)


def _kl_independent(d, t, v):
    return lambda: d.kl_divergence(
        d.Independent(d.Normal(t["loc"], t["scale"], validate_args=v), 1),
        d.Independent(d.Normal(t["loc2"], t["scale2"], validate_args=v), 1),
    )


def _kl_independent_standard(d, t, v):
    prior = d.Independent(d.Normal(t["zeros"], t["ones"], validate_args=v), 1)
    return lambda: d.kl_divergence(d.Independent(d.Normal(t["loc"], t["scale"], validate_args=v), 1), prior)


def _rsample(d, t, v):
    return lambda: d.Normal(t["loc"], t["scale"], validate_args=v).rsample()


def _rsample_and_kl(d, t, v):
    prior = d.Independent(d.Normal(t["zeros"], t["ones"], validate_args=v), 1)
    if d is fd:
        return lambda: fd.rsample_and_kl(d.Independent(d.Normal(t["loc"], t["scale"], validate_args=v), 1), prior)

    def torch_version():
        q = d.Independent(d.Normal(t["loc"], t["scale"], validate_args=v), 1)
        return q.rsample(), d.kl_divergence(q, prior)

    return torch_version


CASES = [
    Case("Normal.log_prob", _normal_log_prob, _gaussian, ("loc", "scale")),
    Case("Bernoulli.log_prob", _bernoulli_log_prob, _binary, ("logits",)),
    Case("Independent(Normal, 1).log_prob", _independent_normal_log_prob, _gaussian, ("loc", "scale")),
    Case("Independent(Bernoulli, 1).log_prob", _independent_bernoulli_log_prob, _binary, ("logits",)),
    Case("kl_divergence(Normal, Normal)", _kl, _gaussian, ("loc", "scale", "loc2", "scale2")),
    Case("kl_divergence(Normal, N(0,1))", _kl_standard, _gaussian, ("loc", "scale")),
    Case("kl_divergence(Independent, Independent)", _kl_independent, _gaussian, ("loc", "scale", "loc2", "scale2")),
    Case("kl_divergence(Independent, Independent N(0,1))", _kl_independent_standard, _gaussian, ("loc", "scale")),
    Case("Normal.rsample", _rsample, _gaussian, ("loc", "scale")),
    Case("rsample + KL to N(0,1) (fastgen: rsample_and_kl)", _rsample_and_kl, _gaussian, ("loc", "scale")),
]

REQUIRED = CASES[:8]  # the calls the targets name

# ----------------------------------------------------------------------------- timing


def _total(out) -> torch.Tensor:
    if isinstance(out, tuple):
        return sum(o.sum() for o in out)
    return out.sum()


def _runner(fn: Callable, mode: str, inputs: list[torch.Tensor]) -> Callable[[], None]:
    if mode == "fwd":
        def run():
            with torch.no_grad():
                fn()
    else:
        def run():
            torch.autograd.grad(_total(fn()), inputs)
    return run


def time_interleaved(runs: dict[str, Callable[[], None]], *, min_time_s: float, min_rounds: int = 15,
                     max_rounds: int = 400, target_sample_s: float = 1e-3) -> dict[str, list[float]]:
    """Per provider, seconds per call of each round (providers round-robin within a round)."""
    inner = {}
    for name, run in runs.items():  # warm up, then size a sample to about target_sample_s
        for _ in range(3):
            run()
        start = time.thread_time_ns()
        run()
        once = max(time.thread_time_ns() - start, 1) * 1e-9
        inner[name] = max(1, min(1000, int(target_sample_s / once)))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        began = time.perf_counter()
        rounds = 0
        while rounds < min_rounds or (time.perf_counter() - began < min_time_s and rounds < max_rounds):
            for name, run in runs.items():
                n = inner[name]
                start = time.thread_time_ns()
                for _ in range(n):
                    run()
                samples[name].append((time.thread_time_ns() - start) * 1e-9 / n)
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


@dataclass
class Row:
    op: str
    size: str
    mode: str
    validate: str
    torch_s: float
    fastgen_s: float

    @property
    def ratio(self) -> float:
        return self.torch_s / self.fastgen_s


def bench_case(case: Case, B: int, D: int, mode: str, validate: bool, min_time_s: float) -> Row:
    runs = {}
    for label, dists in (("torch", td), ("fastgen", fd)):
        tensors = case.tensors(B, D, torch.Generator().manual_seed(0))
        inputs = []
        if mode == "full":
            for name in case.grad:
                tensors[name].requires_grad_(True)
                inputs.append(tensors[name])
        runs[label] = _runner(case.build(dists, tensors, validate), mode, inputs)
    samples = time_interleaved(runs, min_time_s=min_time_s)
    return Row(case.name, f"{B}x{D}", mode, "on" if validate else "off",
               statistics.median(samples["torch"]), statistics.median(samples["fastgen"]))


def bench_vae_step(min_time_s: float) -> Row:
    """One training step (forward, backward, Adam) of the pixyz-style VAE, batch 64 of digits."""
    train, _ = digits()
    batch = train[:64]
    runs = {}
    for label, dists in (("torch", td), ("fastgen", fd)):
        torch.manual_seed(0)
        model = PixyzVAE(dists)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(model=model, optimizer=optimizer):
            loss = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        runs[label] = step
    samples = time_interleaved(runs, min_time_s=min_time_s)
    return Row("pixyz-style VAE training step (digits, 64x64, z=8)", "64x64", "step", "on/off",
               statistics.median(samples["torch"]), statistics.median(samples["fastgen"]))


def markdown(rows: list[Row]) -> str:
    lines = [
        "| op | size | mode | validate | torch (us) | fastgen (us) | torch / fastgen |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.op} | {r.size} | {r.mode} | {r.validate} | {r.torch_s * 1e6:.1f} | "
                     f"{r.fastgen_s * 1e6:.1f} | {r.ratio:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.distributions", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128x784,128x20", help="comma-separated BxD (default: 128x784,128x20)")
    parser.add_argument("--modes", default="fwd,full", help="fwd, full (default: both)")
    parser.add_argument("--validate", default="on,off", help="on, off: validate_args (default: both)")
    parser.add_argument("--cases", default="all", help="'all' or 'required' (the issue's eight calls)")
    parser.add_argument("--min-time", type=float, default=0.4, help="seconds of rounds per row (default 0.4)")
    parser.add_argument("--no-vae", action="store_true", help="skip the VAE training-step row")
    parser.add_argument("--quick", action="store_true", help="128x20, required cases, short rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.cases, args.min_time = "128x20", "required", 0.02
    torch.set_num_threads(1)
    sizes = [tuple(int(n) for n in s.split("x")) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    validates = [v == "on" for v in args.validate.split(",")]
    cases = REQUIRED if args.cases == "required" else CASES
    rows = []
    for case in cases:
        for B, D in sizes:
            for mode in modes:
                for validate in validates:
                    rows.append(bench_case(case, B, D, mode, validate, args.min_time))
    if not args.no_vae:
        rows.append(bench_vae_step(max(args.min_time, 0.05) * 4))
    print(f"torch {torch.__version__}, fastgen {fastgen.__version__}, 1 thread, CPU time per call "
          f"(median over interleaved rounds); ratio = t(torch) / t(fastgen), above 1: fastgen faster\n")
    print(markdown(rows))
    slower = [r for r in rows if r.ratio < 1.0]
    if slower:
        print(f"\n{len(slower)} row(s) below 1.00x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
