"""fastgen's public fused ops.

This module owns what sits between a user's call and a kernel: argument
checks with clear errors, dtype promotion and broadcasting, the choice of
backend, reductions, autocast behaviour, and the `torch.library` registration
of the C++/CUDA ops (fake kernels for `torch.compile`, autograd). The kernels
themselves live in `csrc/` (CPU and CUDA) and `kernels/` (Triton); the
textbook formulas in `fastgen.reference`.

Backends (`set_backend` / environment `FASTGEN_BACKEND`): ``"auto"`` (default)
picks per device and op the fastest implementation that is built; ``"cpu"``
and ``"cuda"`` are the C++ extension, ``"triton"`` the Triton kernels,
``"reference"`` the pure-PyTorch formulas. Without a built extension `auto`
falls back to the reference, with one warning.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from . import reference

BACKENDS = ("auto", "cpu", "cuda", "triton", "reference")
REDUCTIONS = ("none", "sum", "mean")
FLOATING_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)

try:
    from . import _C  # noqa: F401  (loading it registers torch.ops.fastgen)

    EXTENSION_ERROR: Exception | None = None
except ImportError as error:  # the extension was not built
    _C = None
    EXTENSION_ERROR = error

# ----------------------------------------------------------------------------- backends

# Each backend is an op namespace holding the forward ops of csrc/fastgen.cpp's
# schemas, autograd attached, and the device types it runs on.
_NAMESPACES: dict[str, Any] = {}
_DEVICE_TYPES: dict[str, tuple[str, ...]] = {}
# auto's choice on CUDA, per op, between "cuda" (C++) and "triton", from the
# benchmark suite's table; an op missing here takes the first one built.
AUTO_CUDA_CHOICE: dict[str, str] = {}
_backend = "auto"
_triton_loaded = False


def register_backend(name: str, namespace: Any, device_types: tuple[str, ...]) -> None:
    """Makes `namespace` (an op namespace with the registry's forward ops) backend `name`."""
    if name not in BACKENDS or name in ("auto", "reference"):
        raise ValueError(f"fastgen.register_backend: name must be one of cpu, cuda, triton, got {name!r}")
    _NAMESPACES[name] = namespace
    _DEVICE_TYPES[name] = tuple(device_types)


if _C is not None:
    register_backend("cpu", torch.ops.fastgen, ("cpu",))
    if torch._C._dispatch_has_kernel_for_dispatch_key("fastgen::gaussian_kl", "CUDA"):
        register_backend("cuda", torch.ops.fastgen, ("cuda",))
else:
    warnings.warn(
        f"fastgen: the compiled extension is not available ({EXTENSION_ERROR}); every op runs the "
        "pure-PyTorch reference. Build it with `pip install --no-build-isolation .`.",
        RuntimeWarning,
        stacklevel=2,
    )


def _load_triton() -> None:
    """Imports fastgen.kernels once, which registers the Triton backend when Triton and CUDA are there."""
    global _triton_loaded
    if _triton_loaded:
        return
    _triton_loaded = True
    with contextlib.suppress(ImportError):
        from . import kernels  # noqa: F401


def available_backends() -> list[str]:
    """Names of the backends built and usable here (always including "reference")."""
    _load_triton()
    return [name for name in BACKENDS if name in _NAMESPACES] + ["reference"]


def set_backend(name: str) -> str:
    """Routes every op through backend `name` (one of BACKENDS); returns the previous name."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"fastgen.set_backend: name must be one of {', '.join(BACKENDS)}, got {name!r}")
    previous, _backend = _backend, name
    return previous


def get_backend() -> str:
    """The backend name set by set_backend or FASTGEN_BACKEND."""
    return _backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: set_backend(name) inside the block, the previous backend after."""
    previous = set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


set_backend(os.environ.get("FASTGEN_BACKEND", "auto"))


def _namespace(op: str, device: torch.device) -> Any | None:
    """The op namespace that runs `op` on `device`, or None for the reference."""
    name = _backend
    if name == "reference":
        return None
    if name == "triton" or (name == "auto" and device.type == "cuda"):
        _load_triton()
    if name == "auto":
        preferred = [AUTO_CUDA_CHOICE[op]] if op in AUTO_CUDA_CHOICE else []
        # Triton on CPU tensors is its interpreter, a test vehicle: never auto's pick.
        for candidate in preferred + ["cpu", "cuda", "triton"]:
            if candidate == "triton" and device.type == "cpu":
                continue
            if candidate in _NAMESPACES and device.type in _DEVICE_TYPES[candidate]:
                return _NAMESPACES[candidate]
        return None
    if name not in _NAMESPACES:
        raise RuntimeError(
            f"fastgen: backend {name!r} is not built here (available: {', '.join(available_backends())})"
        )
    if device.type not in _DEVICE_TYPES[name]:
        raise ValueError(
            f"fastgen.{op}: backend {name!r} runs on {' or '.join(_DEVICE_TYPES[name])} tensors, "
            f"got tensors on {device}"
        )
    return _NAMESPACES[name]


# ----------------------------------------------------------------------------- checks


def _check_tensor(op: str, name: str, t: Any) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fastgen.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOATING_DTYPES:
        raise TypeError(
            f"fastgen.{op}: {name} must be a floating tensor (float32, float64, float16 or bfloat16), "
            f"got {t.dtype}"
        )
    if t.layout != torch.strided:
        raise TypeError(f"fastgen.{op}: {name} must be a dense (strided) tensor, got layout {t.layout}")


def _check_inputs(op: str, **tensors: torch.Tensor | None) -> tuple[torch.Size, torch.dtype, torch.device]:
    """Checks the named tensors; returns their broadcast shape, common dtype and device."""
    given = {name: t for name, t in tensors.items() if t is not None}
    for name, t in given.items():
        _check_tensor(op, name, t)
    devices = {t.device for t in given.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{name} on {t.device}" for name, t in given.items())
        raise ValueError(f"fastgen.{op}: all tensors must be on one device, got {listing}")
    shapes = [t.shape for t in given.values()]
    try:
        # Equal shapes are the common case; torch.broadcast_shapes costs tens of microseconds.
        shape = shapes[0] if all(s == shapes[0] for s in shapes) else torch.broadcast_shapes(*shapes)
    except RuntimeError:
        listing = ", ".join(f"{name} {tuple(t.shape)}" for name, t in given.items())
        raise ValueError(f"fastgen.{op}: shapes do not broadcast: {listing}") from None
    dtype = next(iter(given.values())).dtype
    for t in given.values():
        dtype = torch.promote_types(dtype, t.dtype)
    return shape, dtype, devices.pop()


def _check_event_dims(op: str, event_dims: Any, ndim: int) -> None:
    if not isinstance(event_dims, int) or isinstance(event_dims, bool):
        raise TypeError(f"fastgen.{op}: event_dims must be an int, got {type(event_dims).__name__}")
    if not 0 <= event_dims <= ndim:
        raise ValueError(
            f"fastgen.{op}: event_dims must be in [0, {ndim}] (the number of trailing dims summed over, "
            f"at most the inputs' {ndim} dims), got {event_dims}"
        )


def _check_reduction(op: str, reduction: Any) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"fastgen.{op}: reduction must be one of 'none', 'sum', 'mean', got {reduction!r}")


def _check_sampling(op: str, num_samples: Any, generator: Any, device: torch.device) -> None:
    if num_samples is not None:
        if not isinstance(num_samples, int) or isinstance(num_samples, bool):
            raise TypeError(f"fastgen.{op}: num_samples must be an int or None, got {type(num_samples).__name__}")
        if num_samples < 1:
            raise ValueError(f"fastgen.{op}: num_samples must be >= 1, got {num_samples}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"fastgen.{op}: generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != device.type:
            raise ValueError(
                f"fastgen.{op}: generator is on {generator.device} but the tensors are on {device}"
            )


# ----------------------------------------------------------------------------- shaping


def _row_operand(t: torch.Tensor, shape: torch.Size, event_dims: int, dtype: torch.dtype) -> torch.Tensor:
    """t as a contiguous tensor whose flattened data repeat to fill `shape`.

    A tensor that broadcasts only over leading (batch) dims keeps its own data
    (a learned prior of shape (D,) stays D elements); anything else is
    expanded to the trailing dims it needs, the event dims at least.
    """
    t = t.to(dtype)
    if t.shape == shape:
        return t.contiguous()
    dims = list(t.shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    keep = max(len(dims), event_dims)
    return t.reshape(dims).expand(shape[len(shape) - keep :]).contiguous()


def _fold(grad: torch.Tensor, operand: torch.Tensor) -> torch.Tensor:
    """Sums a full-size 1-D gradient down to a repeating operand's shape."""
    if grad.numel() == operand.numel():
        return grad.reshape(operand.shape)
    return grad.reshape(-1, operand.numel()).sum(0).reshape(operand.shape)


def _autocast_on(device: torch.device) -> bool:
    return torch.is_autocast_enabled(device.type)


def _finish_rows(
    per_row: torch.Tensor, batch_shape: torch.Size, reduction: str, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Shapes per-row sums, reduces them, and gives them the result dtype.

    Sums are float32 for half inputs; they stay float32 under autocast (as
    torch's own losses do) and return to the input dtype otherwise.
    """
    result = per_row.reshape(batch_shape)
    if reduction == "sum":
        result = result.sum()
    elif reduction == "mean":
        result = result.mean()
    if dtype in HALF_DTYPES and not _autocast_on(device):
        result = result.to(dtype)
    return result


# ----------------------------------------------------------------------------- public ops


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reparameterized sample z = mu + exp(logvar / 2) * eps, eps ~ N(0, I).

    eps is drawn inside the kernel from design.md's Philox stream, seeded from
    the device's generator (or `generator`), and regenerated in backward; no
    tensor of it is kept. With `num_samples=K` the result has shape
    (K, *shape), each sample with its own noise. Gradients:
    grad_mu = sum_k g_k, grad_logvar = sum_k g_k * exp(logvar / 2) * eps_k / 2.
    """
    op = "reparameterize"
    shape, dtype, device = _check_inputs(op, mu=mu, logvar=logvar)
    _check_sampling(op, num_samples, generator, device)
    namespace = _namespace(op, device)
    if namespace is None:
        return reference.reparameterize(mu, logvar, num_samples=num_samples, generator=generator)
    z, _ = namespace.reparameterize(
        mu.to(dtype).expand(shape).contiguous(), logvar.to(dtype).expand(shape).contiguous(), num_samples, generator
    )
    return z


def reparameterize_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    event_dims: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over (mu, logvar): the sample of `reparameterize` and the KL to N(0, I).

    Returns (z, kl): z exactly as `reparameterize` draws it for the same
    generator state, and kl = sum over the last `event_dims` dims of
    (e^logvar + mu^2 - 1 - logvar) / 2, shaped like the batch dims of mu.
    """
    op = "reparameterize_kl"
    shape, dtype, device = _check_inputs(op, mu=mu, logvar=logvar)
    _check_sampling(op, num_samples, generator, device)
    _check_event_dims(op, event_dims, len(shape))
    namespace = _namespace(op, device)
    batch_shape = shape[: len(shape) - event_dims]
    if namespace is None or math.prod(shape) == 0:
        z, kl = reference.reparameterize_kl(
            mu, logvar, num_samples=num_samples, generator=generator, event_dims=event_dims
        )
        return z, _finish_rows(kl, batch_shape, "none", dtype, device)
    z, kl, _ = namespace.reparameterize_kl(
        mu.to(dtype).expand(shape).contiguous(),
        logvar.to(dtype).expand(shape).contiguous(),
        num_samples,
        event_dims,
        generator,
    )
    return z, _finish_rows(kl, batch_shape, "none", dtype, device)


def gaussian_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    prior_mu: torch.Tensor | None = None,
    prior_logvar: torch.Tensor | None = None,
    *,
    event_dims: int = 1,
    reduction: str = "none",
) -> torch.Tensor:
    """Analytic KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)), summed over the event dims.

    Per element (plv - lv + (e^lv + (mu - pm)^2) e^-plv - 1) / 2; a missing
    prior is N(0, I). Prior tensors broadcast against mu (a learned prior of
    shape (D,) is read once per row, never expanded in memory).
    """
    op = "gaussian_kl"
    shape, dtype, device = _check_inputs(op, mu=mu, logvar=logvar, prior_mu=prior_mu, prior_logvar=prior_logvar)
    _check_event_dims(op, event_dims, len(shape))
    _check_reduction(op, reduction)
    batch_shape = shape[: len(shape) - event_dims]
    namespace = _namespace(op, device)
    if namespace is None or math.prod(shape) == 0:
        per_row = reference.gaussian_kl(mu, logvar, prior_mu, prior_logvar, event_dims=event_dims)
        return _finish_rows(per_row.expand(batch_shape), batch_shape, reduction, dtype, device)
    operands = [None if t is None else _row_operand(t, shape, event_dims, dtype) for t in (mu, logvar, prior_mu, prior_logvar)]
    per_row = namespace.gaussian_kl(*operands, event_dims)
    return _finish_rows(per_row, batch_shape, reduction, dtype, device)


def bernoulli_log_likelihood(
    logits: torch.Tensor, target: torch.Tensor, *, event_dims: int = 1, reduction: str = "none"
) -> torch.Tensor:
    """log Bernoulli(target; sigmoid(logits)) = sum(target * logits - softplus(logits)) over the event dims.

    Stable for any finite logits; targets in [0, 1] may be soft. Gradients
    flow to logits (target - sigmoid(logits)) and to target (logits) if it
    needs one. target may broadcast (e.g. (B, D) data against (K, B, D) logits).
    """
    op = "bernoulli_log_likelihood"
    shape, dtype, device = _check_inputs(op, logits=logits, target=target)
    _check_event_dims(op, event_dims, len(shape))
    _check_reduction(op, reduction)
    batch_shape = shape[: len(shape) - event_dims]
    namespace = _namespace(op, device)
    if namespace is None or math.prod(shape) == 0:
        per_row = reference.bernoulli_log_likelihood(logits, target, event_dims=event_dims)
        return _finish_rows(per_row.expand(batch_shape), batch_shape, reduction, dtype, device)
    per_row = namespace.bernoulli_log_likelihood(
        _row_operand(logits, shape, event_dims, dtype), _row_operand(target, shape, event_dims, dtype), event_dims
    )
    return _finish_rows(per_row, batch_shape, reduction, dtype, device)


def gaussian_log_likelihood(
    x: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor | None = None,
    *,
    event_dims: int = 1,
    reduction: str = "none",
) -> torch.Tensor:
    """Diagonal Gaussian log-density log N(x; mean, e^logvar), summed over the event dims.

    Per element -(log 2 pi + logvar + (x - mean)^2 e^-logvar) / 2; logvar=None
    means unit variance. Every argument may broadcast.
    """
    op = "gaussian_log_likelihood"
    shape, dtype, device = _check_inputs(op, x=x, mean=mean, logvar=logvar)
    _check_event_dims(op, event_dims, len(shape))
    _check_reduction(op, reduction)
    batch_shape = shape[: len(shape) - event_dims]
    namespace = _namespace(op, device)
    if namespace is None or math.prod(shape) == 0:
        per_row = reference.gaussian_log_likelihood(x, mean, logvar, event_dims=event_dims)
        return _finish_rows(per_row.expand(batch_shape), batch_shape, reduction, dtype, device)
    operands = [None if t is None else _row_operand(t, shape, event_dims, dtype) for t in (x, mean, logvar)]
    per_row = namespace.gaussian_log_likelihood(*operands, event_dims)
    return _finish_rows(per_row, batch_shape, reduction, dtype, device)


def _check_bound(op: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"fastgen.{op}: {name} must be a real number, got {value!r}")
    return float(value)


@torch.no_grad()
def clamp_(tensors: Any, min: float, max: float) -> None:
    """Clamps every tensor (or every parameter of an nn.Module) to [min, max] in place.

    Tensors are grouped by device and dtype; each group is clamped by one
    kernel (one launch per group on CUDA). Non-contiguous tensors are clamped
    through a contiguous copy written back in place.
    """
    _clamp("clamp_", tensors, min, max)


def _clamp(op: str, tensors: Any, min: float, max: float) -> None:
    """clamp_ for the public op `op` (its name goes into the error messages).

    One pass over the tensors checks them and groups them by device and dtype:
    clipping runs after every critic step, so its Python cost counts.
    """
    low, high = _check_bound(op, "min", min), _check_bound(op, "max", max)
    if low > high:
        raise ValueError(f"fastgen.{op}: min ({low}) must not exceed max ({high})")
    if isinstance(tensors, nn.Module):
        tensors = tensors.parameters()
    elif isinstance(tensors, torch.Tensor):
        tensors = (tensors,)
    elif not isinstance(tensors, Iterable):
        raise TypeError(f"fastgen.{op}: expected an nn.Module or an iterable of tensors, got {type(tensors).__name__}")
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    strided: list[torch.Tensor] = []
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor) or t.dtype not in FLOATING_DTYPES or t.layout != torch.strided:
            _check_tensor(op, f"tensors[{i}]", t)
        if t.is_contiguous():
            key = (t.device, t.dtype)
            group = groups.get(key)
            if group is None:
                groups[key] = [t]
            else:
                group.append(t)
        else:
            strided.append(t)
    for t in strided:
        t.copy_(t.contiguous().clamp_(low, high))
    for (device, _), group in groups.items():
        namespace = _namespace("clamp_", device)
        if namespace is None:
            reference.clamp_(group, low, high)
        else:
            namespace.clamp_(group, low, high)


def clip_weights_(params: Any, clip_value: float) -> None:
    """WGAN weight clipping: clamps every parameter to [-clip_value, clip_value] in place."""
    value = _check_bound("clip_weights_", "clip_value", clip_value)
    if value < 0:
        raise ValueError(f"fastgen.clip_weights_: clip_value must be >= 0, got {value}")
    with torch.no_grad():
        _clamp("clip_weights_", params, -value, value)


# ----------------------------------------------------------------------------- registration

if _C is not None:

    def _rows_like(first: torch.Tensor, others: tuple, event_dims: int) -> torch.Tensor:
        """Fake per-row output: see csrc/row_shape.h."""
        cols = math.prod(first.shape[first.dim() - event_dims :])
        total = first.numel()
        for t in others:
            if t is not None:
                total = torch.sym_max(total, t.numel())
        rows = total // cols if cols != 0 else math.prod(first.shape[: first.dim() - event_dims])
        row_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
        return first.new_empty(rows, dtype=row_dtype)

    def _samples_like(mu: torch.Tensor, num_samples: int | None) -> torch.Tensor:
        return mu.new_empty(mu.shape if num_samples is None else (num_samples, *mu.shape))

    @torch.library.register_fake("fastgen::reparameterize")
    def _(mu, logvar, num_samples, generator):
        return _samples_like(mu, num_samples), mu.new_empty(2, dtype=torch.int64)

    @torch.library.register_fake("fastgen::reparameterize_backward")
    def _(grad_z, logvar, rng_state, num_samples):
        return torch.empty_like(logvar)

    @torch.library.register_fake("fastgen::reparameterize_kl")
    def _(mu, logvar, num_samples, event_dims, generator):
        return (
            _samples_like(mu, num_samples),
            _rows_like(mu, (logvar,), event_dims),
            mu.new_empty(2, dtype=torch.int64),
        )

    @torch.library.register_fake("fastgen::reparameterize_kl_backward")
    def _(grad_z, grad_kl, mu, logvar, rng_state, num_samples, event_dims):
        return torch.empty_like(mu), torch.empty_like(logvar)

    @torch.library.register_fake("fastgen::philox_normal_")
    def _(out, seed, offset):
        return out

    @torch.library.register_fake("fastgen::gaussian_kl")
    def _(mu, logvar, prior_mu, prior_logvar, event_dims):
        return _rows_like(mu, (logvar, prior_mu, prior_logvar), event_dims)

    def _full_like(first: torch.Tensor, others: tuple, event_dims: int, present: bool = True) -> torch.Tensor:
        rows = _rows_like(first, others, event_dims).shape[0]
        cols = math.prod(first.shape[first.dim() - event_dims :])
        return first.new_empty(rows * cols if present else 0)

    @torch.library.register_fake("fastgen::gaussian_kl_backward")
    def _(grad, mu, logvar, prior_mu, prior_logvar, event_dims, prior_logvar_grad):
        others = (logvar, prior_mu, prior_logvar)
        return (
            _full_like(mu, others, event_dims),
            _full_like(mu, others, event_dims),
            _full_like(mu, others, event_dims, prior_logvar_grad),
        )

    @torch.library.register_fake("fastgen::bernoulli_log_likelihood")
    def _(logits, target, event_dims):
        return _rows_like(logits, (target,), event_dims)

    @torch.library.register_fake("fastgen::bernoulli_log_likelihood_backward")
    def _(grad, logits, target, event_dims, target_grad):
        return _full_like(logits, (target,), event_dims), _full_like(logits, (target,), event_dims, target_grad)

    @torch.library.register_fake("fastgen::gaussian_log_likelihood")
    def _(x, mean, logvar, event_dims):
        return _rows_like(x, (mean, logvar), event_dims)

    @torch.library.register_fake("fastgen::gaussian_log_likelihood_backward")
    def _(grad, x, mean, logvar, event_dims):
        others = (mean, logvar)
        return _full_like(x, others, event_dims), _full_like(x, others, event_dims, logvar is not None)

    # -- autograd: each backward regenerates or recomputes from the inputs; no
    # intermediate of the forward (eps above all) is saved.

    def _reparameterize_setup(ctx, inputs, output):
        _, logvar, num_samples, _ = inputs
        ctx.save_for_backward(logvar, output[1])
        ctx.num_samples = num_samples

    def _reparameterize_backward(ctx, grad_z, _grad_rng_state):
        logvar, rng_state = ctx.saved_tensors
        grad_mu = grad_logvar = None
        if ctx.needs_input_grad[0]:
            grad_mu = grad_z if ctx.num_samples is None else grad_z.sum(0)
        if ctx.needs_input_grad[1]:
            grad_logvar = torch.ops.fastgen.reparameterize_backward(grad_z, logvar, rng_state, ctx.num_samples)
        return grad_mu, grad_logvar, None, None

    torch.library.register_autograd(
        "fastgen::reparameterize", _reparameterize_backward, setup_context=_reparameterize_setup
    )

    def _reparameterize_kl_setup(ctx, inputs, output):
        mu, logvar, num_samples, event_dims, _ = inputs
        ctx.save_for_backward(mu, logvar, output[2])
        ctx.num_samples = num_samples
        ctx.event_dims = event_dims

    def _reparameterize_kl_backward(ctx, grad_z, grad_kl, _grad_rng_state):
        mu, logvar, rng_state = ctx.saved_tensors
        grad_mu, grad_logvar = torch.ops.fastgen.reparameterize_kl_backward(
            grad_z, grad_kl, mu, logvar, rng_state, ctx.num_samples, ctx.event_dims
        )
        return grad_mu, grad_logvar, None, None, None

    torch.library.register_autograd(
        "fastgen::reparameterize_kl", _reparameterize_kl_backward, setup_context=_reparameterize_kl_setup
    )

    def _gaussian_kl_setup(ctx, inputs, output):
        mu, logvar, prior_mu, prior_logvar, event_dims = inputs
        ctx.save_for_backward(mu, logvar, prior_mu, prior_logvar)
        ctx.event_dims = event_dims

    def _gaussian_kl_backward(ctx, grad):
        mu, logvar, prior_mu, prior_logvar = ctx.saved_tensors
        needs = ctx.needs_input_grad
        want_prior_logvar = prior_logvar is not None and needs[3]
        grad_mu, grad_logvar, grad_prior_logvar = torch.ops.fastgen.gaussian_kl_backward(
            grad, mu, logvar, prior_mu, prior_logvar, ctx.event_dims, want_prior_logvar
        )
        return (
            _fold(grad_mu, mu) if needs[0] else None,
            _fold(grad_logvar, logvar) if needs[1] else None,
            _fold(-grad_mu, prior_mu) if prior_mu is not None and needs[2] else None,
            _fold(grad_prior_logvar, prior_logvar) if want_prior_logvar else None,
            None,
        )

    torch.library.register_autograd("fastgen::gaussian_kl", _gaussian_kl_backward, setup_context=_gaussian_kl_setup)

    def _bernoulli_setup(ctx, inputs, output):
        logits, target, event_dims = inputs
        ctx.save_for_backward(logits, target)
        ctx.event_dims = event_dims

    def _bernoulli_backward(ctx, grad):
        logits, target = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_logits, grad_target = torch.ops.fastgen.bernoulli_log_likelihood_backward(
            grad, logits, target, ctx.event_dims, needs[1]
        )
        return (
            _fold(grad_logits, logits) if needs[0] else None,
            _fold(grad_target, target) if needs[1] else None,
            None,
        )

    torch.library.register_autograd(
        "fastgen::bernoulli_log_likelihood", _bernoulli_backward, setup_context=_bernoulli_setup
    )

    def _gaussian_ll_setup(ctx, inputs, output):
        x, mean, logvar, event_dims = inputs
        ctx.save_for_backward(x, mean, logvar)
        ctx.event_dims = event_dims

    def _gaussian_ll_backward(ctx, grad):
        x, mean, logvar = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x, grad_logvar = torch.ops.fastgen.gaussian_log_likelihood_backward(grad, x, mean, logvar, ctx.event_dims)
        return (
            _fold(grad_x, x) if needs[0] else None,
            _fold(-grad_x, mean) if needs[1] else None,
            _fold(grad_logvar, logvar) if logvar is not None and needs[2] else None,
            None,
        )

    torch.library.register_autograd(
        "fastgen::gaussian_log_likelihood", _gaussian_ll_backward, setup_context=_gaussian_ll_setup
    )
