"""What every model offers the trainer, whichever family it belongs to.

The trainer (``fastgen.train.fit``) only relies on this interface:

* ``step(batch) -> dict[str, float]``: one update with the family's rule and optimizers;
* ``evaluate(batch, generator=None) -> dict[str, float]``: held-out metrics, no update;
* ``sample(n[, y], generator=None) -> Tensor``: ``n`` samples in data space;
* ``optimizers() -> dict[str, Optimizer]``: what a checkpoint must save;
* ``distribute(wrap)``: route training forwards through DDP-wrapped networks;
* ``set_autocast(device_type, dtype)``: mixed precision for the forward passes;
* ``capturable``, ``_step_inputs(batch)`` and ``_capturable_step(*inputs)``: the step split into
  its checked inputs and its device work, for ``fit(..., cuda_graph=True)`` (the VAE family).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

__all__ = ["GenerativeModel", "OptimizerFactory", "one_hot_labels"]


def one_hot_labels(labels: Tensor | int | Iterable[int], num_classes: int, *, count: int | None = None,
                   device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Integer class labels -> one-hot rows ``(N, num_classes)``.

    ``labels`` may be a single int (repeated ``count`` times), a sequence or a tensor of
    ints. Out-of-range labels raise an error naming the offending value.
    """
    if isinstance(labels, int):
        if count is None:
            raise ValueError("count is required when labels is a single int")
        labels = torch.full((count,), labels, dtype=torch.long, device=device)
    labels = torch.as_tensor(labels, device=device)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.long().reshape(-1)
    if count is not None and labels.numel() != count:
        raise ValueError(f"labels must hold {count} entries (one per sample), got {labels.numel()}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise ValueError(f"labels must lie in [0, {num_classes}), got {bad}")
    return nn.functional.one_hot(labels, num_classes).to(dtype)


class GenerativeModel(nn.Module):
    """Base class: optimizers, distributed wrapping, autocast and batch unpacking."""

    #: names of the sub-networks that DDP wraps (each is called through ``network(name)``)
    network_names: tuple[str, ...] = ()
    #: number of classes for conditional models, ``0`` otherwise
    num_classes: int = 0
    #: whether the step can be captured in a CUDA graph: ``_step_inputs`` and ``_capturable_step``
    capturable: bool = False

    def __init__(self) -> None:
        super().__init__()
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None
        self._distributed_networks: dict[str, nn.Module] = {}
        self._loose_parameters: list[nn.Parameter] = []
        self._autocast_device: str | None = None
        self._autocast_dtype: torch.dtype | None = None

    # -- optimizers -----------------------------------------------------------------------
    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers ``step`` uses, built on first use (after the model is complete)."""
        if self._optimizers is None:
            self._optimizers = self._build_optimizers()
        return self._optimizers

    @staticmethod
    def _make_optimizer(spec: OptimizerFactory | torch.optim.Optimizer | None, parameters: list[nn.Parameter],
                        default: OptimizerFactory, argument: str) -> torch.optim.Optimizer:
        if spec is None:
            return default(parameters)
        if isinstance(spec, torch.optim.Optimizer):
            return spec
        if callable(spec):
            optimizer = spec(parameters)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(f"{argument} must return a torch.optim.Optimizer, got {type(optimizer).__name__}")
            return optimizer
        raise TypeError(f"{argument} must be a torch.optim.Optimizer or a callable params -> Optimizer, "
                        f"got {type(spec).__name__}")

    # -- distributed ----------------------------------------------------------------------
    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap each sub-network in ``network_names`` (with DDP, typically).

        The wrapped modules live in a plain dict, not as registered children, so the model's
        ``state_dict`` keeps its usual keys and checkpoints load with or without DDP.
        Parameters that belong to no wrapped network (a learned observation noise, say) are
        broadcast from rank 0 now and their gradients averaged in :meth:`_average_loose_gradients`.
        """
        self._distributed_networks = {name: wrap(getattr(self, name)) for name in self.network_names}
        covered = {id(p) for name in self.network_names for p in getattr(self, name).parameters()}
        self._loose_parameters = [p for p in self.parameters() if id(p) not in covered and p.requires_grad]
        if self._loose_parameters and dist.is_available() and dist.is_initialized():
            for parameter in self._loose_parameters:
                dist.broadcast(parameter.data, src=0)

    def network(self, name: str) -> nn.Module:
        """Sub-network ``name`` as training must call it.

        While a model is distributed, forwards that build a graph go through the DDP wrapper
        (whose backward hooks all-reduce the gradients). Forwards without grad (sampling,
        evaluation) use the bare network: DDP's forward would start collectives that the
        other ranks, which do not sample, never join.
        """
        wrapped = self._distributed_networks.get(name)
        if wrapped is not None and torch.is_grad_enabled():
            return wrapped
        return getattr(self, name)

    def _average_loose_gradients(self) -> None:
        if not self._loose_parameters or not (dist.is_available() and dist.is_initialized()):
            return
        world_size = dist.get_world_size()
        for parameter in self._loose_parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)
            parameter.grad.div_(world_size)

    # -- precision ------------------------------------------------------------------------
    def set_autocast(self, device_type: str | None, dtype: torch.dtype | None = torch.bfloat16) -> None:
        """Run the forward passes of ``step``/``evaluate`` under ``torch.autocast(device_type, dtype)``.

        ``device_type=None`` switches mixed precision off.
        """
        self._autocast_device = device_type
        self._autocast_dtype = dtype

    def _autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        if self._autocast_device is None:
            return contextlib.nullcontext()
        return torch.autocast(self._autocast_device, dtype=self._autocast_dtype, cache_enabled=cache)

    # -- helpers --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for tensor in self._tensors():
            return tensor.device
        return torch.device("cpu")

    def _tensors(self) -> Iterator[Tensor]:
        yield from self.parameters()
        yield from self.buffers()

    def _unpack(self, batch: Tensor | tuple | list | Mapping) -> tuple[Tensor, Tensor | None]:
        """``batch`` -> ``(x, labels or None)``; accepts a tensor, ``(x,)``, ``(x, y)`` or a dict."""
        if isinstance(batch, Tensor):
            x, labels = batch, None
        elif isinstance(batch, Mapping):
            x, labels = batch["x"], batch.get("y")
        elif isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 2:
            x, labels = batch[0], (batch[1] if len(batch) == 2 else None)
        else:
            raise TypeError("batch must be a tensor x, a tuple (x,) or (x, labels), or a dict with 'x' and 'y'")
        if self.num_classes and labels is None:
            raise ValueError(f"{type(self).__name__} is conditional: its batches need labels, got only x")
        return x, labels

    @staticmethod
    def _require_finite(name: str, value: Tensor) -> None:
        # Checked before optimizer.step so a non-finite loss never reaches the parameters.
        if not bool(torch.isfinite(value).all()):
            raise FloatingPointError(f"non-finite {name}: {value.item() if value.numel() == 1 else value}")

    def step(self, batch) -> dict[str, float]:
        raise NotImplementedError

    def _step_inputs(self, batch) -> tuple[Tensor | None, ...]:
        """``batch`` -> the tensors ``_capturable_step`` takes, checked (this may synchronize)."""
        raise NotImplementedError(f"{type(self).__name__}'s step cannot be captured in a CUDA graph")

    def _capturable_step(self, *inputs: Tensor | None) -> dict[str, Tensor]:
        """``step``'s device work on ``_step_inputs``'s tensors, with no host synchronization (so
        no finiteness check): the update, and the batch's objectives as 0-d tensors."""
        raise NotImplementedError(f"{type(self).__name__}'s step cannot be captured in a CUDA graph")

    def evaluate(self, batch, generator: torch.Generator | None = None) -> dict[str, float]:
        raise NotImplementedError
