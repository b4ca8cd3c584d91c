"""The seed's VAE step through ``fastgen.dgm`` against the same model written by hand.

One Adam step (zero_grad, loss, backward, step) of the seed's VAE -- ``Inference(Normal)``
``x -> 512 -> 512 -> (loc, softplus scale)``, ``Generator(Bernoulli)``
``z -> 512 -> 512 -> sigmoid probs``, prior N(0, I), loss ``mean(KL + reconstruction)`` -- at
batch 128 on one CPU thread, for the seed's MNIST size (``x_dim=784, z_dim=64``), the
digits size (``x_dim=64``) and, to show what the Python layer costs where the networks cost
little, the same model with 32 hidden units and ``z_dim=8``. Providers, all on identical weights and data, each with its own
networks and Adam:

* ``dgm``: the seed's code on ``fastgen.dgm`` (``Model.train``);
* ``fastgen``: the same networks with fastgen's ops written by hand
  (``reparameterize_kl`` of ``loc`` and ``2 log scale``, ``bernoulli_log_likelihood`` of
  ``logit(probs)``);
* ``torch.distributions``: ``Independent(Normal)``, ``rsample``, ``kl_divergence``,
  ``Independent(Bernoulli(probs))`` (``validate_args=False``, torch's fastest setting);
* ``eager``: the seed's own hand-written loss (``binary_cross_entropy`` on the probabilities,
  ``randn_like``, the textbook KL sum).

The clock is the thread's CPU time (``time.thread_time_ns``), the providers are timed
round-robin (one sample of each per round) and the table gives medians; ratios are
``t(provider) / t(fastgen)`` from the same run.

    python -m bench.dgm_step [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.distributions as td
import torch.nn.functional as F
from torch import nn

import fastgen
from fastgen import dgm
from bench import env
from bench.timing import TimerConfig, time_cpu_interleaved, torch_threads

PROVIDERS = ("dgm", "fastgen", "torch.distributions", "eager")


def seed_networks(x_dim: int, z_dim: int, hidden: int = 512):
    """The seed's Inference / Generator / prior (its cell, with x_dim and z_dim as given)."""

    class Inference(dgm.Normal):
        def __init__(self):
            super().__init__(cond_var=["x"], var=["z"], name="q")
            self.fc1 = nn.Linear(x_dim, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.fc31 = nn.Linear(hidden, z_dim)
            self.fc32 = nn.Linear(hidden, z_dim)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            h = F.relu(self.fc2(h))
            return {"loc": self.fc31(h), "scale": F.softplus(self.fc32(h))}

    class Generator(dgm.Bernoulli):
        def __init__(self):
            super().__init__(cond_var=["z"], var=["x"], name="p")
            self.fc1 = nn.Linear(z_dim, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.fc3 = nn.Linear(hidden, x_dim)

        def forward(self, z):
            h = F.relu(self.fc1(z))
            h = F.relu(self.fc2(h))
            return {"probs": torch.sigmoid(self.fc3(h))}

    prior = dgm.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[z_dim],
                       name="p_{prior}")
    return Inference(), Generator(), prior


def make_steps(x_dim: int, z_dim: int = 64, batch: int = 128, hidden: int = 512, seed: int = 0) -> dict:
    """One step callable per provider, all starting from the same weights and data."""
    torch.manual_seed(seed)
    x = torch.rand(batch, x_dim)
    q0, p0, _ = seed_networks(x_dim, z_dim, hidden)

    def fresh():
        q, p, prior = seed_networks(x_dim, z_dim, hidden)
        q.load_state_dict(q0.state_dict())
        p.load_state_dict(p0.state_dict())
        return q, p, prior

    return {name: builder(fresh, x, z_dim) for name, builder in _BUILDERS.items()}


def _dgm_step(fresh, x, z_dim):
    q, p, prior = fresh()
    loss = (dgm.KullbackLeibler(q, prior) + dgm.StochasticReconstructionLoss(q, p)).mean()
    model = dgm.Model(loss=loss, distributions=[p, q], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-3})
    x_dict = {"x": x}
    return lambda: model.train(x_dict)


def _fastgen_step(fresh, x, z_dim):
    q, p, _ = fresh()
    opt = torch.optim.Adam([*p.parameters(), *q.parameters()], lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        out = q(x)
        z, kl = fastgen.reparameterize_kl(out["loc"], torch.log(out["scale"]).mul_(2.0))
        probs = p(z)["probs"]
        rec = fastgen.bernoulli_log_likelihood(torch.logit(probs, eps=torch.finfo(probs.dtype).eps), x)
        loss = (kl - rec).mean()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _td_step(fresh, x, z_dim):
    q, p, _ = fresh()
    opt = torch.optim.Adam([*p.parameters(), *q.parameters()], lr=1e-3)
    prior = td.Independent(td.Normal(torch.zeros(z_dim), torch.ones(z_dim), validate_args=False), 1)

    def step():
        opt.zero_grad(set_to_none=True)
        out = q(x)
        qz = td.Independent(td.Normal(out["loc"], out["scale"], validate_args=False), 1)
        z = qz.rsample()
        kl = td.kl_divergence(qz, prior)
        px = td.Independent(td.Bernoulli(probs=p(z)["probs"], validate_args=False), 1)
        loss = (kl - px.log_prob(x)).mean()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _eager_step(fresh, x, z_dim):
    """The seed's hand-written loss (its batch sum divided by the batch, as the others average)."""
    q, p, _ = fresh()
    opt = torch.optim.Adam([*p.parameters(), *q.parameters()], lr=1e-3)
    batch = x.shape[0]

    def step():
        opt.zero_grad(set_to_none=True)
        out = q(x)
        mu, scale = out["loc"], out["scale"]
        z = mu + torch.randn_like(scale) * scale
        recon = p(z)["probs"]
        bce = F.binary_cross_entropy(recon, x, reduction="sum")
        logvar = 2 * torch.log(scale)
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = (bce + kld) / batch
        loss.backward()
        opt.step()
        return loss.detach()

    return step


_BUILDERS = {"dgm": _dgm_step, "fastgen": _fastgen_step, "torch.distributions": _td_step, "eager": _eager_step}


SIZES = ((784, 64, 512), (64, 64, 512), (64, 8, 32))


def measure(sizes=SIZES, batch: int = 128, cfg: TimerConfig | None = None, log=print) -> list[dict]:
    cfg = cfg or TimerConfig(warmup=5, min_reps=60, max_reps=400, min_time_s=6.0, target_sample_s=0.0)
    rows = []
    with torch_threads(1):
        for x_dim, z_dim, hidden in sizes:
            steps = make_steps(x_dim, z_dim, batch, hidden)
            label = f"{x_dim}-{hidden}-{hidden}-{z_dim}"
            stats = time_cpu_interleaved([(_null, steps[name]) for name in PROVIDERS], cfg)
            base = stats[PROVIDERS.index("fastgen")].median_ms
            for name, s in zip(PROVIDERS, stats):
                rows.append({"model": label, "provider": name, "median_ms": s.median_ms,
                             "p20_ms": s.p20_ms, "p80_ms": s.p80_ms, "reps": s.reps, "ratio": s.median_ms / base})
                log(f"{label} {name:>20}: {s.median_ms:.3f} ms ({s.median_ms / base:.3f}x)")
    return rows


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def table(rows: list[dict]) -> str:
    lines = ["| model (x-h-h-z), batch 128 | provider | median ms | p20 | p80 | t / t(fastgen) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['provider']} | {r['median_ms']:.3f} | {r['p20_ms']:.3f} | "
                     f"{r['p80_ms']:.3f} | {r['ratio']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few rounds (seconds): a smoke run, not a measurement")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    cfg = TimerConfig.quick() if args.quick else None
    rows = measure(cfg=cfg, log=(lambda *a: None) if args.quick else print)
    text = table(rows)
    versions = env.versions()
    header = (f"{env.cpu_model()}, torch {versions['torch']}, fastgen {versions['fastgen']}, {env.now_iso()}; "
              f"one thread, thread CPU time, providers interleaved, medians")
    print(header)
    print(text)
    if args.out:
        Path(args.out).write_text(header + "\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
