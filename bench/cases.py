"""The one case table shared by ``python -m bench``, ``pytest bench/``, ``bench/cpu_speed.py``
and ``bench/small_sizes.py``.

The op list derives from fastgen's op registry (``fastgen.ops.REGISTRY``): every case below
names the registry op it measures, ``OPS`` holds the cases of the ops the registry has, in
the registry's order, and ``missing_cases()`` names a registry op without a case (a test
fails on it). Adding an op to fastgen therefore needs one bench case here and no other list
edit. An op of kind "rows" (a sum over event dims) has a case for ``event_dims=1`` (per-sample
sums) and one for ``event_dims=0`` (element-wise, as ``torch.distributions``' ``log_prob``
computes).

Each case has
* an *eager* formula written the way a seed training script writes it (several aten
  kernels, ``torch.randn_like`` noise that autograd keeps for backward); for
  ``event_dims=0`` the same formula without the sum,
* the *fused* call through fastgen's public API (with ``event_dims=0`` where the case says so),
* a model of the bytes the ideal fused kernel moves (inputs read once + outputs written
  once; a reduction's (B,) output -- (B, D) with ``event_dims=0`` -- and a learned prior's
  (D,) tensors included), which turns a time into GB/s and a percentage of a copy of the
  same bytes.

Providers: ``eager`` (the formula), ``compile`` (``torch.compile`` of the formula, static
shapes, compiled and warmed up before timing), and ``fastgen-<backend>`` for every fastgen
backend built for the device (selected with ``fastgen.set_backend``). For parameter clipping
the baselines are ``eager`` (the seeds' per-parameter ``p.data.clamp_(-c, c)`` loop) and
``foreach`` (the ``torch._foreach_clamp_min_`` / ``torch._foreach_clamp_max_`` pair).

Modes (``mode_callable``): ``fwd`` = forward under ``torch.no_grad()`` (evaluation,
sampling); ``fwd-grad`` = forward with inputs requiring grad, as in training (autograd records
the graph and keeps what backward needs); ``bwd`` = backward of one recorded forward;
``full`` = forward + backward.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

MODES = ("fwd", "fwd-grad", "bwd", "full")
GRAD_MODES = ("fwd-grad", "bwd", "full")  # modes that need inputs requiring grad
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# (batch, features): the sizes users train at (VAE latents of 2, 20 and 64 dimensions, a
# 28x28 image), then large tensors: 4M elements on CPU, 32M on GPU.
USER_SIZES = [(128, 2), (128, 20), (128, 64), (128, 784)]
SIZES = {
    "cpu": USER_SIZES + [(1024, 1024), (4096, 1024)],
    "cuda": USER_SIZES + [(4096, 1024), (16384, 1024), (32768, 1024)],
    "quick": [(128, 2), (128, 20)],
}

CLIP_VALUE = 0.01  # WGAN's weight-clipping constant
LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- eager formulas
# Written as the seed scripts write them; do not "optimize" these. The *_elementwise
# variants are the same formulas without the sum over the last dimension (event_dims=0).

def eager_reparameterize(mu, logvar):
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    return mu + eps * std


def eager_gaussian_kl(mu, logvar):
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def eager_gaussian_kl_elementwise(mu, logvar):
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def eager_reparameterize_kl(mu, logvar):
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    z = mu + eps * std
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)
    return z, kl


def eager_reparameterize_kl_elementwise(mu, logvar):
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    z = mu + eps * std
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    return z, kl


def eager_gaussian_kl_learned_prior(mu, logvar, prior_mu, prior_logvar):
    return 0.5 * torch.sum(
        prior_logvar - logvar + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1,
        dim=-1,
    )


def eager_bernoulli_log_likelihood(logits, target):
    return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


def eager_bernoulli_log_likelihood_elementwise(logits, target):
    return -F.binary_cross_entropy_with_logits(logits, target, reduction="none")


def eager_gaussian_log_likelihood(x, mean, logvar):
    return -0.5 * torch.sum(LOG_2PI + logvar + (x - mean).pow(2) / logvar.exp(), dim=-1)


def eager_gaussian_log_likelihood_elementwise(x, mean, logvar):
    return -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) / logvar.exp())


def eager_reparameterize_log_weights(mu, logvar):
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    z = mu + eps * std
    log_q = -0.5 * torch.sum(LOG_2PI + logvar + eps.pow(2), dim=-1)
    log_p = -0.5 * torch.sum(LOG_2PI + z.pow(2), dim=-1)
    return z, log_p - log_q


def eager_grad_norm_penalty(grad):
    return (grad.view(grad.shape[0], -1).norm(2, dim=1) - 1) ** 2


def eager_grad_norm_penalty_elementwise(grad):
    return (grad.abs() - 1) ** 2


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


def fused_reparameterize_kl_elementwise(mu, logvar):
    return _fg().reparameterize_kl(mu, logvar, event_dims=0)


def fused_gaussian_kl(mu, logvar):
    return _fg().gaussian_kl(mu, logvar)


def fused_gaussian_kl_elementwise(mu, logvar):
    return _fg().gaussian_kl(mu, logvar, event_dims=0)


def fused_gaussian_kl_learned_prior(mu, logvar, prior_mu, prior_logvar):
    return _fg().gaussian_kl(mu, logvar, prior_mu, prior_logvar)


def fused_bernoulli_log_likelihood(logits, target):
    return _fg().bernoulli_log_likelihood(logits, target)


def fused_bernoulli_log_likelihood_elementwise(logits, target):
    return _fg().bernoulli_log_likelihood(logits, target, event_dims=0)


def fused_gaussian_log_likelihood(x, mean, logvar):
    return _fg().gaussian_log_likelihood(x, mean, logvar)


def fused_gaussian_log_likelihood_elementwise(x, mean, logvar):
    return _fg().gaussian_log_likelihood(x, mean, logvar, event_dims=0)


def fused_reparameterize_log_weights(mu, logvar):
    return _fg().reparameterize_log_weights(mu, logvar)


def fused_grad_norm_penalty(grad):
    return _fg().grad_norm_penalty(grad)


def fused_grad_norm_penalty_elementwise(grad):
    return _fg().grad_norm_penalty(grad, event_dims=0)


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
    """One bench case: a registry op called one way (arguments, ``event_dims``).

    ``name`` is the CSV's ``op`` column and the report's section (cases of one op called
    differently, like ``gaussian_kl_learned_prior``, get their own name); ``key`` is unique
    among cases (``name`` plus ``[event_dims=0]`` for the element-wise case).
    """

    name: str
    op: str  # the fastgen.ops.REGISTRY entry this case measures
    eager: Callable
    fused: Callable
    make: Callable[[int, int, torch.dtype, torch.device], OpInputs]
    # elements(mode, N, R, D) moved by the ideal fused kernel(s) of that mode, with N = B*D
    # elements per big tensor and R elements per reduction output (B, or N with event_dims=0)
    elements: Callable[[str, int, int, int], int]
    event_dims: Optional[int] = None  # None: the op takes no event_dims
    modes: Tuple[str, ...] = MODES
    random: bool = False  # draws noise: outputs are compared by shape/finiteness only
    note: str = ""

    @property
    def key(self) -> str:
        return self.name if self.event_dims in (None, 1) else f"{self.name}[event_dims={self.event_dims}]"

    @property
    def differentiable(self) -> bool:
        return "full" in self.modes

    def nbytes(self, mode: str, B: int, D: int, itemsize: int) -> int:
        """Bytes the ideal fused kernel(s) of ``mode`` move for a ``(B, D)`` case."""
        N = B * D
        R = N if self.event_dims == 0 else B
        return itemsize * self.elements(mode, N, R, D)


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


def _make_grad(B, D, dtype, device):
    grad = _t((B, D), dtype, device, scale=1.0 / math.sqrt(D), grad=True)  # norms near 1, as WGAN-GP's
    return OpInputs((grad,), (grad,))


def _make_clamp(B, D, dtype, device):
    return OpInputs((_t((B, D), dtype, device, scale=2 * CLIP_VALUE),), ())


def _by_mode(mode: str, fwd: int, bwd: int) -> int:
    return {"fwd": fwd, "fwd-grad": fwd, "bwd": bwd, "full": fwd + bwd}[mode]


# Element models. N = B*D elements of the big tensors, R = elements of a reduction output
# (B with event_dims=1, N with event_dims=0).
#   reparameterize      fwd: read mu, logvar, write z                  = 3N
#                       bwd: read g, logvar (eps regenerated), write gmu, glogvar = 4N
#   reparameterize_kl   fwd: 3N + R (kl)   bwd: read gz, gkl, mu, logvar, write 2N = 5N + R
#   gaussian_kl         fwd: 2N + R        bwd: read gkl, mu, logvar, write 2N   = 4N + R
#   ... learned prior   + (D,) prior_mu, prior_logvar read (2D) and their grads written (2D)
#   bernoulli_ll        fwd: 2N + R        bwd: read g, logits, target, write glogits = 3N + R
#   gaussian_ll         fwd: 3N + R        bwd: read g, x, mean, logvar, write 2N   = 5N + R
#   reparameterize_log_weights  as reparameterize_kl: fwd 3N + R, bwd 5N + R
#   grad_norm_penalty   fwd: read N, write R   bwd: read g, norm (R each), grad, write N = 2N + 2R
#   clamp (in place)    read N, write N = 2N
# fwd and fwd-grad move the same bytes (the ideal kernel saves nothing beyond its inputs).
def _el_reparameterize(mode, N, R, D):
    return _by_mode(mode, 3 * N, 4 * N)


def _el_reparameterize_kl(mode, N, R, D):
    return _by_mode(mode, 3 * N + R, 5 * N + R)


def _el_gaussian_kl(mode, N, R, D):
    return _by_mode(mode, 2 * N + R, 4 * N + R)


def _el_gaussian_kl_prior(mode, N, R, D):
    return _by_mode(mode, 2 * N + 2 * D + R, 4 * N + 4 * D + R)


def _el_bernoulli(mode, N, R, D):
    return _by_mode(mode, 2 * N + R, 3 * N + R)


def _el_gaussian_ll(mode, N, R, D):
    return _by_mode(mode, 3 * N + R, 5 * N + R)


def _el_grad_norm_penalty(mode, N, R, D):
    return _by_mode(mode, N + R, 2 * N + 2 * R)


def _el_clamp(mode, N, R, D):
    return 2 * N


_ELEMENTWISE = "event_dims=0: element-wise, no sum (as torch.distributions' log_prob)"

# Every bench case, each naming the registry op it measures. A new op of the registry needs
# its case(s) here; nothing else lists ops.
CASES: List[OpSpec] = [
    OpSpec("reparameterize", "reparameterize", eager_reparameterize, fused_reparameterize,
           _make_mu_logvar, _el_reparameterize, random=True),
    OpSpec("reparameterize_kl", "reparameterize_kl", eager_reparameterize_kl, fused_reparameterize_kl,
           _make_mu_logvar, _el_reparameterize_kl, event_dims=1, random=True),
    OpSpec("reparameterize_kl", "reparameterize_kl", eager_reparameterize_kl_elementwise,
           fused_reparameterize_kl_elementwise, _make_mu_logvar, _el_reparameterize_kl, event_dims=0,
           random=True, note=_ELEMENTWISE),
    OpSpec("gaussian_kl", "gaussian_kl", eager_gaussian_kl, fused_gaussian_kl,
           _make_mu_logvar, _el_gaussian_kl, event_dims=1, note="N(0, I) prior"),
    OpSpec("gaussian_kl", "gaussian_kl", eager_gaussian_kl_elementwise, fused_gaussian_kl_elementwise,
           _make_mu_logvar, _el_gaussian_kl, event_dims=0, note="N(0, I) prior; " + _ELEMENTWISE),
    OpSpec("gaussian_kl_learned_prior", "gaussian_kl", eager_gaussian_kl_learned_prior,
           fused_gaussian_kl_learned_prior, _make_prior, _el_gaussian_kl_prior, event_dims=1,
           note="learned (D,) prior, gradients to the prior too"),
    OpSpec("bernoulli_log_likelihood", "bernoulli_log_likelihood", eager_bernoulli_log_likelihood,
           fused_bernoulli_log_likelihood, _make_bernoulli, _el_bernoulli, event_dims=1,
           note="soft targets, gradient to logits"),
    OpSpec("bernoulli_log_likelihood", "bernoulli_log_likelihood",
           eager_bernoulli_log_likelihood_elementwise, fused_bernoulli_log_likelihood_elementwise,
           _make_bernoulli, _el_bernoulli, event_dims=0,
           note="soft targets, gradient to logits; " + _ELEMENTWISE),
    OpSpec("gaussian_log_likelihood", "gaussian_log_likelihood", eager_gaussian_log_likelihood,
           fused_gaussian_log_likelihood, _make_gaussian_ll, _el_gaussian_ll, event_dims=1,
           note="per-element logvar, gradients to mean and logvar"),
    OpSpec("gaussian_log_likelihood", "gaussian_log_likelihood",
           eager_gaussian_log_likelihood_elementwise, fused_gaussian_log_likelihood_elementwise,
           _make_gaussian_ll, _el_gaussian_ll, event_dims=0,
           note="per-element logvar, gradients to mean and logvar; " + _ELEMENTWISE),
    OpSpec("reparameterize_log_weights", "reparameterize_log_weights", eager_reparameterize_log_weights,
           fused_reparameterize_log_weights, _make_mu_logvar, _el_reparameterize_kl, event_dims=1, random=True,
           note="one sample: z and log p(z) - log q(z|x), N(0, I) prior"),
    OpSpec("grad_norm_penalty", "grad_norm_penalty", eager_grad_norm_penalty, fused_grad_norm_penalty,
           _make_grad, _el_grad_norm_penalty, event_dims=1,
           note="per-sample (||g|| - 1)^2; eager: view, norm(2, dim=1), - 1, ** 2"),
    OpSpec("grad_norm_penalty", "grad_norm_penalty", eager_grad_norm_penalty_elementwise,
           fused_grad_norm_penalty_elementwise, _make_grad, _el_grad_norm_penalty, event_dims=0,
           note="(|g| - 1)^2; " + _ELEMENTWISE),
    OpSpec("clamp", "clamp_", eager_clamp, fused_clamp, _make_clamp, _el_clamp, modes=("fwd",),
           note="one tensor clamped in place to [-0.01, 0.01] (no autograd: fwd only)"),
]


def registry() -> Dict[str, object]:
    """``fastgen.ops.REGISTRY``: public op name -> ``OpInfo``."""
    from fastgen.ops import REGISTRY

    return REGISTRY


def _cases_by_registry() -> Dict[str, OpSpec]:
    by_op: Dict[str, List[OpSpec]] = {}
    for spec in CASES:
        by_op.setdefault(spec.op, []).append(spec)
    return {spec.key: spec for name in registry() for spec in by_op.get(name, [])}


def missing_cases() -> List[str]:
    """Registry ops without a bench case (each needs one in ``CASES``)."""
    covered = {spec.op for spec in CASES}
    return [name for name in registry() if name not in covered]


def orphan_cases() -> List[str]:
    """Cases naming an op the registry does not have (left out of ``OPS``)."""
    return [spec.key for spec in CASES if spec.op not in registry()]


# case key -> case, for every op of the registry, in the registry's order
OPS: Dict[str, OpSpec] = _cases_by_registry()


def select(names: Optional[Sequence[str]] = None,
           event_dims: Optional[Sequence[int]] = None) -> List[OpSpec]:
    """Cases by case name (all its event_dims), case key or registry op name; then filtered
    to the given ``event_dims`` (cases of ops without event_dims always stay)."""
    specs = list(OPS.values())
    if names:
        wanted = set(names)
        known = {s.name for s in specs} | {s.key for s in specs} | {s.op for s in specs}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(f"unknown op(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(dict.fromkeys(s.name for s in specs))}")
        # a case name or key selects those cases; a registry op name that is no case name
        # (``clamp_``) selects every case of that op
        specs = [s for s in specs if wanted & {s.name, s.key}
                 or (s.op in wanted and s.op not in {t.name for t in specs})]
    if event_dims is not None:
        specs = [s for s in specs if s.event_dims is None or s.event_dims in event_dims]
    return specs


def as_tuple(out) -> Tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def mode_callable(fn: Callable, inputs: OpInputs, mode: str) -> Callable[[], object]:
    """The zero-argument callable that one timing sample runs.

    * ``fwd``: the forward under ``torch.no_grad()`` (evaluation, sampling; nothing recorded).
    * ``fwd-grad``: the forward as it runs in training (inputs require grad, so autograd
      records its graph and keeps what backward needs).
    * ``bwd``: backward only, of one recorded forward (``torch.autograd.grad`` with
      ``retain_graph=True``; gradients are returned, not accumulated into ``.grad``).
    * ``full``: forward + backward.
    Ops without gradients (clamp) only have ``fwd``.
    """
    args, wrt = inputs.args, inputs.grad_inputs
    if mode == "fwd":
        def call():
            with torch.no_grad():
                return fn(*args)

        return call
    if mode not in GRAD_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if not wrt:
        raise ValueError(f"mode {mode!r} needs an op with gradients")
    if mode == "fwd-grad":
        return lambda: fn(*args)
    outs = as_tuple(fn(*args))
    gen = torch.Generator(device="cpu").manual_seed(0)
    grads_out = tuple(torch.randn(o.shape, generator=gen).to(o) for o in outs)
    if mode == "bwd":
        return lambda: torch.autograd.grad(outs, wrt, grads_out, retain_graph=True)
    return lambda: torch.autograd.grad(as_tuple(fn(*args)), wrt, grads_out)


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


def compiled_backward_retained() -> contextlib.AbstractContextManager:
    """Compile with Inductor's donated buffers off: they let the compiled backward reuse the
    memory of what the forward saved, so that backward may run only once, and ``bwd`` mode
    runs one recorded forward's backward many times (``retain_graph=True``)."""
    import torch._functorch.config as functorch_config

    return functorch_config.patch(donated_buffer=False)


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
            providers.append(Provider("compile", lambda spec: compile_formula(spec.eager),
                                      context=compiled_backward_retained))
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
