"""What every public op shares: the backends and their choice per call, the
argument checks Python must make, the fake-kernel shapes, and the op registry.

The work of an op is done in C++ (csrc/ops/<op>.cpp): its checks, its
broadcasting, its reduction and its autograd, for every backend. A public
function here only checks what the dispatcher cannot name (a non-tensor
argument, a non-int ``event_dims``, an unknown ``reduction``), picks the
op of the chosen backend, calls it, and gives half-precision sums back in
the input dtype outside autocast. Each of these is a few hundred nanoseconds:
at the sizes VAEs train at, host time is the cost.

Backends (`set_backend` / environment ``FASTGEN_BACKEND``): ``"auto"``
(default: the built kernels of the tensor's device), ``"cpu"`` and
``"cuda"`` (the C++ kernels, op namespace ``fastgen``), ``"triton"`` (the
Triton kernels of ``fastgen.kernels``, op namespace ``fastgen_triton``) and
``"reference"`` (the pure-PyTorch formulas of `fastgen.reference`, also the
fallback, with one warning, when the extension is not built).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

BACKENDS = ("auto", "cpu", "cuda", "triton", "reference")
REDUCTIONS = ("none", "sum", "mean")
FLOATING_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)

try:
    from fastgen import _C  # noqa: F401  (loading it defines torch.ops.fastgen and torch.ops.fastgen_triton)

    EXTENSION_ERROR: Exception | None = None
except ImportError as error:  # the extension was not built
    _C = None
    EXTENSION_ERROR = error
    warnings.warn(
        f"fastgen: the compiled extension is not available ({error}); every op runs the pure-PyTorch "
        "reference. Build it with `pip install --no-build-isolation .`.",
        RuntimeWarning,
        stacklevel=2,
    )

# The CPU kernels are built once per SIMD level (setup.py); the highest level
# this CPU runs is loaded, as ATen chooses its own kernels, or the level named
# by FASTGEN_CPU_ISA.
CPU_ISAS = ("avx512", "avx2", "default")


def cpu_isas_supported() -> tuple[str, ...]:
    """The SIMD levels this CPU runs (torch's own reading, which honours ATEN_CPU_CAPABILITY)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        return CPU_ISAS
    if capability == "AVX2":
        return CPU_ISAS[1:]
    return CPU_ISAS[2:]


def _load_cpu_kernels() -> str | None:
    forced = os.environ.get("FASTGEN_CPU_ISA", "auto").lower()
    if forced == "auto":
        candidates = cpu_isas_supported()
    elif forced not in CPU_ISAS:
        raise ValueError(f"fastgen: FASTGEN_CPU_ISA must be auto, {', '.join(CPU_ISAS)}, got {forced!r}")
    elif forced not in cpu_isas_supported():
        raise RuntimeError(
            f"fastgen: FASTGEN_CPU_ISA={forced}, but this CPU runs only {', '.join(cpu_isas_supported())}"
        )
    else:
        candidates = (forced,)
    errors = []
    for isa in candidates:
        try:
            importlib.import_module(f"fastgen._cpu_{isa}")
            return isa
        except ImportError as error:
            errors.append(f"{isa}: {error}")
    warnings.warn(
        f"fastgen: no CPU kernels could be loaded ({'; '.join(errors)}); ops on CPU tensors run the "
        "pure-PyTorch reference.",
        RuntimeWarning,
        stacklevel=2,
    )
    return None


# The SIMD level of the loaded CPU kernels (None: none loaded).
CPU_ISA: str | None = _load_cpu_kernels() if _C is not None else None

# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class OpInfo:
    """One public op, as tests and benchmarks enumerate them.

    `function` is the public Python function, `reference` the textbook
    formula of `fastgen.reference`; `kind` is "sample" (draws noise),
    "rows" (per-sample sums over event dims) or "inplace".
    """

    name: str
    function: Callable
    reference: Callable
    kind: str
    tensor_args: tuple[str, ...]


REGISTRY: dict[str, OpInfo] = {}


def register(info: OpInfo) -> None:
    REGISTRY[info.name] = info


# ----------------------------------------------------------------------------- backends

_backend = "auto"
# Whether the Triton kernels are registered, and for which device types.
_triton_device_types: tuple[str, ...] = ()
_triton_loaded = False
# Per op name, the op to call for a CPU tensor and for a CUDA tensor
# (route[1 if tensor.is_cuda else 0]: torch 2.11's Dynamo refuses a bool as a
# list index), None for the reference. Refilled by set_backend.
ROUTES: dict[str, list[Any]] = {}


def _cuda_built() -> bool:
    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key("fastgen::_gaussian_kl", "CUDA")


def _load_triton() -> None:
    """Registers the Triton kernels as the kernel ops of namespace fastgen_triton, once."""
    global _triton_loaded, _triton_device_types
    if _triton_loaded or _C is None:
        return
    _triton_loaded = True
    try:
        from fastgen import kernels
    except ImportError:
        return
    if kernels.TRITON_ERROR is not None:
        return
    library = torch.library.Library("fastgen_triton", "IMPL")  # noqa: TOR901
    for device_type in kernels.DEVICE_TYPES:
        for name, implementation in kernels.KERNELS.items():
            library.impl(name, implementation, device_type.upper())
    _triton_device_types = kernels.DEVICE_TYPES
    _LIBRARIES.append(library)


# torch.library.Library objects unregister their kernels when collected.
_LIBRARIES: list[torch.library.Library] = []


def _refuse(error: Exception) -> Callable:
    """A route that raises `error`: the chosen backend cannot run the call."""

    def refuse(*args: Any) -> None:
        raise error

    return refuse


def _choose(op: str, device_type: str) -> Any:
    """What runs `op` for tensors of `device_type` under the current backend: an OpOverload, None for the reference."""
    name = _backend
    if name == "reference" or _C is None:
        return None
    if name == "auto":
        if device_type == "cpu":
            return getattr(torch.ops.fastgen, op).default if CPU_ISA is not None else None
        # Measured on an H200 (bench/results/gpu/README.md): the CUDA C++ kernels win every
        # op's training call (forward + backward), by 1.5-5x in wall time at 128x20, where
        # Triton's Python launcher dominates, and by 1.5-4.4x at 32M elements; Triton's
        # forward alone wins only reparameterize and reparameterize_log_weights at 32M (by
        # 11-25%) and two element-wise forwards (by 3-5%).
        # One choice per op and device keeps the route a list lookup: no per-call size test.
        if _cuda_built():
            return getattr(torch.ops.fastgen, op).default
        if torch.cuda.is_available():
            _load_triton()
            if "cuda" in _triton_device_types:
                return getattr(torch.ops.fastgen_triton, op).default
        return None
    if name not in available_backends():
        return _refuse(
            RuntimeError(f"fastgen: backend {name!r} is not built here (available: {', '.join(available_backends())})")
        )
    if device_type not in backend_device_types(name):
        return _refuse(
            ValueError(
                f"fastgen.{op}: backend {name!r} runs on {' or '.join(backend_device_types(name))} tensors, "
                f"got tensors on {device_type}"
            )
        )
    namespace = torch.ops.fastgen_triton if name == "triton" else torch.ops.fastgen
    return getattr(namespace, op).default


def _refresh_routes() -> None:
    for op, route in ROUTES.items():
        route[:] = [_choose(op, "cpu"), _choose(op, "cuda")]


def route(op: str) -> list[Any]:
    """The mutable [cpu, cuda] route of `op`, kept current by set_backend."""
    entry = ROUTES.setdefault(op, [None, None])
    entry[:] = [_choose(op, "cpu"), _choose(op, "cuda")]
    return entry


def available_backends() -> list[str]:
    """Names of the backends built and usable here (always including "reference")."""
    names = []
    if _C is not None:
        if CPU_ISA is not None:
            names.append("cpu")
        if _cuda_built():
            names.append("cuda")
        _load_triton()
        if _triton_device_types:
            names.append("triton")
    return names + ["reference"]


def backend_device_types(name: str) -> tuple[str, ...]:
    """The device types whose tensors backend `name` runs on."""
    if name == "triton":
        _load_triton()
        return _triton_device_types
    return {"cpu": ("cpu",), "cuda": ("cuda",)}.get(name, ("cpu", "cuda"))


def set_backend(name: str) -> str:
    """Routes every op through backend `name` (one of BACKENDS); returns the previous name."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"fastgen.set_backend: name must be one of {', '.join(BACKENDS)}, got {name!r}")
    previous, _backend = _backend, name
    _refresh_routes()
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


# ----------------------------------------------------------------------------- checks
# The checks only Python can make, raised from the slow path of a public
# function (its fast path is one `type(...) is` test per argument).


def check_tensors(op: str, optional: tuple[str, ...] = (), **tensors: Any) -> None:
    """Each named argument is a tensor, or None where its name is in `optional`."""
    for name, value in tensors.items():
        if not isinstance(value, Tensor) and not (value is None and name in optional):
            raise TypeError(f"fastgen.{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def check_event_dims(op: str, event_dims: Any) -> None:
    if type(event_dims) is not int:
        raise TypeError(f"fastgen.{op}: event_dims must be an int, got {type(event_dims).__name__}")


def check_reduction(op: str, reduction: Any) -> None:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"fastgen.{op}: reduction must be one of 'none', 'sum', 'mean', got {reduction!r}")


def check_sampling(op: str, num_samples: Any, generator: Any) -> None:
    if num_samples is not None and type(num_samples) is not int:
        raise TypeError(f"fastgen.{op}: num_samples must be an int or None, got {type(num_samples).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"fastgen.{op}: generator must be a torch.Generator, got {type(generator).__name__}")


def check_reference_inputs(op: str, **tensors: Tensor | None) -> tuple[torch.Size, torch.dtype, torch.device]:
    """The C++ op layer's checks, for the reference backend: dtype, layout, device, broadcasting."""
    given = {name: t for name, t in tensors.items() if t is not None}
    for name, t in given.items():
        if t.layout != torch.strided:
            raise TypeError(f"fastgen.{op}: {name} must be a dense (strided) tensor, got layout {t.layout}")
        if t.dtype not in FLOATING_DTYPES:
            raise TypeError(
                f"fastgen.{op}: {name} must be a floating tensor (float32, float64, float16 or bfloat16), "
                f"got {t.dtype}"
            )
    if len({t.device for t in given.values()}) > 1:
        listing = ", ".join(f"{name} on {t.device}" for name, t in given.items())
        raise ValueError(f"fastgen.{op}: all tensors must be on one device, got {listing}")
    try:
        shape = torch.broadcast_shapes(*(t.shape for t in given.values()))
    except RuntimeError:
        listing = ", ".join(f"{name} {tuple(t.shape)}" for name, t in given.items())
        raise ValueError(f"fastgen.{op}: shapes do not broadcast: {listing}") from None
    first = next(iter(given.values()))
    dtype = first.dtype
    for t in given.values():
        dtype = torch.promote_types(dtype, t.dtype)
    return shape, dtype, first.device


def check_reference_event_dims(op: str, event_dims: int, ndim: int) -> None:
    if not 0 <= event_dims <= ndim:
        raise ValueError(
            f"fastgen.{op}: event_dims must be in [0, {ndim}] (the number of trailing dims summed over, "
            f"at most the inputs' {ndim} dims), got {event_dims}"
        )


def check_reference_sampling(op: str, num_samples: int | None, generator: Any, device: torch.device) -> None:
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"fastgen.{op}: num_samples must be >= 1, got {num_samples}")
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"fastgen.{op}: generator is on {generator.device} but the tensors are on {device}")


# ----------------------------------------------------------------------------- results


def result_dtype(out: Tensor, *tensors: Tensor | None) -> Tensor:
    """A float32 sum of half inputs, back in their dtype unless autocast is on (as torch's losses)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    if dtype in HALF_DTYPES and not torch.is_autocast_enabled(out.device.type):
        return out.to(dtype)
    return out


# ----------------------------------------------------------------------------- fake kernels


def sum_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of per-row sums: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def promoted(*tensors: Tensor | None) -> tuple[torch.Size, torch.dtype]:
    given = [t for t in tensors if t is not None]
    dtype = given[0].dtype
    for t in given[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.broadcast_shapes(*(t.shape for t in given)), dtype


def fake_rows_result(tensors: tuple[Tensor | None, ...], event_dims: int, reduction: str) -> Tensor:
    """The public row ops' result: per-sample sums over the batch dims, or their sum/mean."""
    shape, dtype = promoted(*tensors)
    first = tensors[0]
    batch_shape = () if reduction != "none" else shape[: len(shape) - event_dims]
    return first.new_empty(batch_shape, dtype=sum_dtype(dtype))


def fake_rows(first: Tensor, others: tuple[Tensor | None, ...], event_dims: int) -> Tensor:
    """A kernel op's per-row sums: see csrc/row_shape.h."""
    cols = math.prod(first.shape[first.dim() - event_dims :])
    total = first.numel()
    for t in others:
        if t is not None:
            total = torch.sym_max(total, t.numel())
    rows = total // cols if cols != 0 else math.prod(first.shape[: first.dim() - event_dims])
    return first.new_empty(rows, dtype=sum_dtype(first.dtype))


def fake_full(first: Tensor, others: tuple[Tensor | None, ...], event_dims: int, present: bool = True) -> Tensor:
    """A kernel op's full-size 1-D gradient (empty when not `present`)."""
    rows = fake_rows(first, others, event_dims).shape[0]
    cols = math.prod(first.shape[first.dim() - event_dims :])
    return first.new_empty(rows * cols if present else 0)


def register_fake(name: str, fake: Callable) -> None:
    """`fake` as the fake kernel of op `name` in both op namespaces."""
    if _C is None:
        return
    for namespace in ("fastgen", "fastgen_triton"):
        torch.library.register_fake(f"{namespace}::{name}")(fake)


set_backend(os.environ.get("FASTGEN_BACKEND", "auto"))
