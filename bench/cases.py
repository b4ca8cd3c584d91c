"""The one case table shared by ``python -m bench``, ``pytest bench/`` and ``bench/cpu_speed.py``.

Each op has
* an *eager* formula written the way a seed training script writes it (several aten
  kernels, ``torch.randn_like`` noise that autograd keeps for backward),
* the *fused* call through fastgen's public API,
* a model of the bytes the ideal fused kernel moves (inputs read once + outputs written
  once; a reduction's (B,) output and a learned prior's (D,) tensors included), which turns
  a time into GB/s and a percentage of a copy of the same bytes.

Providers: ``eager`` (the formula), ``compile`` (``torch.compile`` of the formula, static
shapes, compiled and warmed up before timing), and ``fastgen-<backend>`` for every fastgen
backend built for the device (selected with ``fastgen.set_backend``). For parameter clipping
the baselines are ``eager`` (the seeds' per-parameter ``p.data.clamp_(-c, c)`` loop) and
``foreach`` (the ``torch._foreach_clamp_min_`` / ``torch._foreach_clamp_max_`` pair).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

MODES = ("fwd", "bwd", "full")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# (batch, features). VAE latents (128x20) up to 4M elements on CPU, 32M on GPU.
SIZES = {
    "cpu": [(128, 20), (512, 256), (1024, 1024), (4096, 1024)],
    "cuda": [(128, 20), (1024, 256), (4096, 1024), (16384, 1024), (32768, 1024)],
    "quick": [(16, 8), (128, 20)],
}

CLIP_VALUE = 0.01  # WGAN's weight-clipping constant
LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- eager formulas
# Written as the seed scripts write them; do not "optimize" these.

def eager_reparameterize(mu, logvar):
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    return mu + eps * std


def eager_gaussian_kl(mu, logvar):
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def eager_reparameterize_kl(mu, logvar):
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    z = mu + eps * std
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)
    return z, kl


def eager_gaussian_kl_learned_prior(mu, logvar, prior_mu, prior_logvar):
    return 0.5 * torch.sum(
        prior_logvar - logvar + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1,
        dim=-1,
    )


def eager_bernoulli_log_likelihood(logits, target):
    return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


def eager_gaussian_log_likelihood(x, mean, logvar):
    return -0.5 * torch.sum(LOG_2PI + logvar + (x - mean).pow(2) / logvar.exp(), dim=-1)


def eager_clamp(x):
    return x.clamp_(-CLIP_VALUE, CLIP_VALUE)


# --------------------------------------------------------------------------- fused calls

def _fg():
    import fastgen

    return fastgen


def fused_reparameterize(mu, logvar):
    return _fg().reparameterize(mu, logvar)


def fused_reparameterize_kl(mu, logvar):
    return _fg().reparameterize_kl(mu, logvar)


def fused_gaussian_kl(mu, logvar):
    return _fg().gaussian_kl(mu, logvar)


def fused_gaussian_kl_learned_prior(mu, logvar, prior_mu, prior_logvar):
    return _fg().gaussian_kl(mu, logvar, prior_mu, prior_logvar)


def fused_bernoulli_log_likelihood(logits, target):
    return _fg().bernoulli_log_likelihood(logits, target)


def fused_gaussian_log_likelihood(x, mean, logvar):
    return _fg().gaussian_log_likelihood(x, mean, logvar)


def fused_clamp(x):
    _fg().clamp_([x], -CLIP_VALUE, CLIP_VALUE)
    return x


# --------------------------------------------------------------------------- op table

@dataclass
class OpInputs:
    args: Tuple[torch.Tensor, ...]
    grad_inputs: Tuple[torch.Tensor, ...]  # the args that require grad (empty: no backward)


@dataclass(frozen=True)
class OpSpec:
    name: str
    eager: Callable
    fused: Callable
    make: Callable[[int, int, torch.dtype, torch.device], OpInputs]
    # bytes(mode, B, D, itemsize) moved by the ideal fused kernel(s) of that mode
    nbytes: Callable[[str, int, int, int], int]
    modes: Tuple[str, ...] = MODES
    random: bool = False  # draws noise: outputs are compared by shape/finiteness only
    note: str = ""


def _t(shape, dtype, device, *, scale=1.0, shift=0.0, uniform=False, grad=False):
    x = torch.rand(shape) if uniform else torch.randn(shape)
    x = (x * scale + shift).to(dtype=dtype, device=device)
    return x.requires_grad_(grad)


def _make_mu_logvar(B, D, dtype, device):
    mu = _t((B, D), dtype, device, grad=True)
    lv = _t((B, D), dtype, device, scale=0.5, grad=True)
    return OpInputs((mu, lv), (mu, lv))


def _make_prior(B, D, dtype, device):
    mu = _t((B, D), dtype, device, grad=True)
    lv = _t((B, D), dtype, device, scale=0.5, grad=True)
    pm = _t((D,), dtype, device, scale=0.1, grad=True)
    plv = _t((D,), dtype, device, scale=0.1, grad=True)
    return OpInputs((mu, lv, pm, plv), (mu, lv, pm, plv))


def _make_bernoulli(B, D, dtype, device):
    logits = _t((B, D), dtype, device, scale=2.0, grad=True)
    target = _t((B, D), dtype, device, uniform=True)  # soft (non-binarized) pixels
    return OpInputs((logits, target), (logits,))


def _make_gaussian_ll(B, D, dtype, device):
    x = _t((B, D), dtype, device, uniform=True)
    mean = _t((B, D), dtype, device, scale=0.5, shift=0.5, grad=True)
    lv = _t((B, D), dtype, device, scale=0.3, shift=-1.0, grad=True)
    return OpInputs((x, mean, lv), (mean, lv))


def _make_clamp(B, D, dtype, device):
    return OpInputs((_t((B, D), dtype, device, scale=2 * CLIP_VALUE),), ())


def _by_mode(fwd: int, bwd: int) -> Callable[[str], int]:
    return lambda mode: {"fwd": fwd, "bwd": bwd, "full": fwd + bwd}[mode]


# Byte models. N = B*D elements of the big tensors, e = bytes per element.
#   reparameterize      fwd: read mu, logvar, write z                  = 3N
#                       bwd: read g, logvar (eps regenerated), write gmu, glogvar = 4N
#   reparameterize_kl   fwd: 3N + B (kl)   bwd: read gz, gkl, mu, logvar, write 2N = 5N + B
#   gaussian_kl         fwd: 2N + B        bwd: read gkl, mu, logvar, write 2N   = 4N + B
#   ... learned prior   + (D,) prior_mu, prior_logvar read (2D) and their grads written (2D)
#   bernoulli_ll        fwd: 2N + B        bwd: read g, logits, target, write glogits = 3N + B
#   gaussian_ll         fwd: 3N + B        bwd: read g, x, mean, logvar, write 2N   = 5N + B
#   clamp (in place)    read N, write N = 2N
def _bytes_reparameterize(mode, B, D, e):
    N = B * D
    return e * _by_mode(3 * N, 4 * N)(mode)


def _bytes_reparameterize_kl(mode, B, D, e):
    N = B * D
    return e * _by_mode(3 * N + B, 5 * N + B)(mode)


def _bytes_gaussian_kl(mode, B, D, e):
    N = B * D
    return e * _by_mode(2 * N + B, 4 * N + B)(mode)


def _bytes_gaussian_kl_prior(mode, B, D, e):
    N = B * D
    return e * _by_mode(2 * N + 2 * D + B, 4 * N + 4 * D + B)(mode)


def _bytes_bernoulli(mode, B, D, e):
    N = B * D
    return e * _by_mode(2 * N + B, 3 * N + B)(mode)


def _bytes_gaussian_ll(mode, B, D, e):
    N = B * D
    return e * _by_mode(3 * N + B, 5 * N + B)(mode)


def _bytes_clamp(mode, B, D, e):
    return e * 2 * B * D


OPS: Dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        OpSpec("reparameterize", eager_reparameterize, fused_reparameterize,
               _make_mu_logvar, _bytes_reparameterize, random=True),
        OpSpec("reparameterize_kl", eager_reparameterize_kl, fused_reparameterize_kl,
               _make_mu_logvar, _bytes_reparameterize_kl, random=True),
        OpSpec("gaussian_kl", eager_gaussian_kl, fused_gaussian_kl,
               _make_mu_logvar, _bytes_gaussian_kl, note="N(0, I) prior"),
        OpSpec("gaussian_kl_learned_prior", eager_gaussian_kl_learned_prior,
               fused_gaussian_kl_learned_prior, _make_prior, _bytes_gaussian_kl_prior,
               note="learned (D,) prior, gradients to the prior too"),
        OpSpec("bernoulli_log_likelihood", eager_bernoulli_log_likelihood,
               fused_bernoulli_log_likelihood, _make_bernoulli, _bytes_bernoulli,
               note="soft targets, gradient to logits"),
        OpSpec("gaussian_log_likelihood", eager_gaussian_log_likelihood,
               fused_gaussian_log_likelihood, _make_gaussian_ll, _bytes_gaussian_ll,
               note="per-element logvar, gradients to mean and logvar"),
        OpSpec("clamp", eager_clamp, fused_clamp, _make_clamp, _bytes_clamp, modes=("fwd",),
               note="one tensor clamped in place to [-0.01, 0.01]"),
    ]
}


def as_tuple(out) -> Tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def mode_callable(fn: Callable, inputs: OpInputs, mode: str) -> Callable[[], object]:
    """The zero-argument callable that one timing sample runs.

    * ``fwd``: the forward as it runs in training (inputs require grad, so autograd records
      its graph and keeps what backward needs).
    * ``bwd``: backward only, of one recorded forward (``torch.autograd.grad`` with
      ``retain_graph=True``; gradients are returned, not accumulated into ``.grad``).
    * ``full``: forward + backward.
    Ops without gradients (clamp) only have ``fwd``, run without autograd.
    """
    args, wrt = inputs.args, inputs.grad_inputs
    if not wrt:
        if mode != "fwd":
            raise ValueError(f"mode {mode!r} needs an op with gradients")

        def call():
            with torch.no_grad():
                return fn(*args)

        return call
    if mode == "fwd":
        return lambda: fn(*args)
    outs = as_tuple(fn(*args))
    gen = torch.Generator(device="cpu").manual_seed(0)
    grads_out = tuple(torch.randn(o.shape, generator=gen).to(o) for o in outs)
    if mode == "bwd":
        return lambda: torch.autograd.grad(outs, wrt, grads_out, retain_graph=True)
    if mode == "full":
        return lambda: torch.autograd.grad(as_tuple(fn(*args)), wrt, grads_out)
    raise ValueError(f"unknown mode {mode!r}")


# --------------------------------------------------------------------------- providers

@dataclass
class Provider:
    """A way of running an op: ``bind(spec)`` returns the callable, or None if unsupported."""

    name: str
    bind: Callable[[OpSpec], Optional[Callable]]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@contextlib.contextmanager
def fastgen_backend(name: str):
    """Select a fastgen backend for the duration of the block, then restore the previous one."""
    fg = _fg()
    previous = fg.set_backend(name)
    try:
        yield
    finally:
        fg.set_backend(previous)


def compile_formula(fn: Callable) -> Callable:
    """``torch.compile`` of a seed formula, static shapes, after clearing Dynamo's caches.

    A fresh Dynamo state per case keeps every case compiled for its exact shape and dtype
    (no automatic-dynamic recompiles, no recompile limit); Inductor's on-disk cache makes
    repeated runs cheap.
    """
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def fastgen_backends(device: torch.device) -> List[str]:
    """fastgen backends built and usable for this device type, in a fixed order."""
    try:
        fg = _fg()
        built = list(fg.available_backends())
    except Exception:
        return []
    wanted = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    return [b for b in wanted if b in built]


def make_providers(device: torch.device, names: Optional[Sequence[str]] = None) -> List[Provider]:
    """Providers for the op sweep. Default: eager, compile and every built fastgen backend.

    ``names`` may also ask for ``fastgen-reference`` / ``fastgen-auto`` explicitly.
    """
    if names is None:
        names = ["eager", "compile"] + [f"fastgen-{b}" for b in fastgen_backends(device)]
    providers = []
    for name in names:
        if name == "eager":
            providers.append(Provider("eager", lambda spec: spec.eager))
        elif name == "compile":
            providers.append(Provider("compile", lambda spec: compile_formula(spec.eager)))
        elif name.startswith("fastgen-"):
            backend = name[len("fastgen-"):]
            providers.append(Provider(name, lambda spec: spec.fused,
                                      context=lambda b=backend: fastgen_backend(b)))
        else:
            raise ValueError(f"unknown provider {name!r}")
    return providers


# --------------------------------------------------------------------------- parameter clipping

def clip_loop(params: Sequence[torch.Tensor], c: float = CLIP_VALUE) -> None:
    """The seeds' WGAN weight clipping: one ``clamp_`` per parameter tensor."""
    for p in params:
        p.data.clamp_(-c, c)


def clip_foreach(params: Sequence[torch.Tensor], c: float = CLIP_VALUE) -> None:
    """The multi-tensor pair available in torch: ``_foreach_clamp_min_`` + ``_foreach_clamp_max_``."""
    with torch.no_grad():
        torch._foreach_clamp_min_(params, -c)
        torch._foreach_clamp_max_(params, c)


def clip_fastgen(params: Sequence[torch.Tensor], c: float = CLIP_VALUE) -> None:
    _fg().clip_weights_(params, c)


CLIP_PROVIDERS = {"eager": clip_loop, "foreach": clip_foreach}

# Shapes of a realistic mix (conv weights, BN weight/bias pairs) cycled to reach a count.
_SYNTH_CYCLE = [(64, 32, 3, 3), (64,), (64,), (128, 64, 1, 1), (128,), (128,)]
CLIP_COUNTS = {"cpu": [32, 100, 300, 1000], "cuda": [32, 100, 300, 1000], "quick": [32]}


@dataclass
class ParamSet:
    label: str
    params: List[torch.Tensor] = field(repr=False)

    @property
    def count(self) -> int:
        return len(self.params)

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


def synthetic_params(count: int, dtype: torch.dtype, device: torch.device) -> ParamSet:
    params = []
    for i in range(count):
        shape = _SYNTH_CYCLE[i % len(_SYNTH_CYCLE)]
        params.append(torch.nn.Parameter(
            (torch.randn(shape) * 2 * CLIP_VALUE).to(dtype=dtype, device=device)))
    return ParamSet(f"{count} tensors (synthetic)", params)


def clip_param_sets(kind: str, dtype: torch.dtype, device: torch.device) -> List[ParamSet]:
    """The DCGAN critics' own parameters, then synthetic lists up to 1,000 tensors."""
    from bench.models import DCGANCritic28, DCGANCritic64

    sets = []
    for cls in (DCGANCritic28, DCGANCritic64) if kind != "quick" else (DCGANCritic28,):
        module = cls().to(dtype=dtype, device=device)
        sets.append(ParamSet(f"{len(list(module.parameters()))} tensors ({cls.label})",
                             list(module.parameters())))
    for n in CLIP_COUNTS[kind]:
        sets.append(synthetic_params(n, dtype, device))
    return sets
