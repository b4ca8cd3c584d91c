"""clamp_ and clip_weights_: in-place clamping of a whole model in one call."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from fastgen import reference

from . import _common

OP = "clamp_"
_ROUTE = _common.route(OP)


def clamp_(tensors: Any, min: float, max: float) -> None:
    """Clamps every tensor (or every parameter of an nn.Module) to [min, max] in place.

    One call for the whole list: the tensors are checked (all of them before
    any is changed), grouped by device and dtype, and each group is clamped by
    one kernel (one launch on CUDA); a non-contiguous tensor is clamped through
    a contiguous copy. As torch's in-place ops do, it bumps every tensor's
    version counter and refuses, under grad mode, a tensor that requires grad.
    """
    low, high = _bound(OP, "min", min), _bound(OP, "max", max)
    if low > high:
        raise ValueError(f"fastgen.{OP}: min ({low}) must not exceed max ({high})")
    _clamp(OP, tensors, low, high)


def clip_weights_(params: Any, clip_value: float) -> None:
    """WGAN weight clipping: clamps every parameter to [-clip_value, clip_value] in place.

    Runs under no_grad (parameters are leaves that require grad); their
    version counters are bumped, so a graph that saved them before the
    clipping refuses to backpropagate instead of using the clipped values.
    """
    value = _bound("clip_weights_", "clip_value", clip_value)
    if value < 0:
        raise ValueError(f"fastgen.clip_weights_: clip_value must be >= 0, got {value}")
    with torch.no_grad():
        _clamp("clip_weights_", params, -value, value)


def _bound(op: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"fastgen.{op}: {name} must be a real number, got {value!r}")
    return float(value)


def _as_list(op: str, tensors: Any) -> list:
    if isinstance(tensors, nn.Module):
        return list(tensors.parameters())
    if isinstance(tensors, Tensor):
        return [tensors]
    if isinstance(tensors, list):
        return tensors
    if isinstance(tensors, Iterable):
        return list(tensors)
    raise TypeError(f"fastgen.{op}: expected an nn.Module or an iterable of tensors, got {type(tensors).__name__}")


def _check_tensors(op: str, tensors: list) -> None:
    for i, t in enumerate(tensors):
        _common.check_tensors(op, **{f"tensors[{i}]": t})


def _clamp(op: str, tensors: Any, low: float, high: float) -> None:
    """clamp_ for the public function `op` (named in the errors)."""
    tensors = _as_list(op, tensors)
    if not tensors:
        return
    first = tensors[0]
    kernel = _ROUTE[1 if first.is_cuda else 0] if isinstance(first, Tensor) else _ROUTE[0]
    if kernel is None:
        _check_tensors(op, tensors)
        for i, t in enumerate(tensors):
            _common.check_reference_inputs(op, **{f"tensors[{i}]": t})
        reference.clamp_(tensors, low, high)
        return
    try:
        kernel(tensors, low, high)
    except (TypeError, ValueError, RuntimeError) as error:
        # The C++ op names clamp_; a list item that is no tensor fails in the dispatcher.
        _check_tensors(op, tensors)
        if op == OP:
            raise
        raise type(error)(str(error).replace(f"fastgen.{OP}:", f"fastgen.{op}:", 1)) from None


def _fake(tensors, min, max):
    return None


_common.register_fake(OP, _fake)
_common.register_fake(f"_{OP}", _fake)
_common.register(_common.OpInfo(OP, clamp_, reference.clamp_, "inplace", ("tensors",)))
