"""One training loop for every model family: progress, evaluation, plots, checkpoints, DDP.

``fit`` relies only on the model interface of :class:`fastgen.models.GenerativeModel`
(``step``, ``evaluate``, ``sample``, ``optimizers``, ``distribute``, ``set_autocast``), so
VAEs and GANs train the same way. Files written to ``out_dir`` (rank 0 only):

* ``metrics.csv``: one row per epoch: ``epoch``, ``step``, ``train_<metric>`` (mean over
  the epoch's steps and ranks), ``eval_<metric>`` (mean over the held-out set);
* ``samples.png`` (and ``samples/epoch_NNN.png``): a grid of samples from fixed noise;
* ``curves.png``: every metric against the epoch;
* ``checkpoint.pt``: model, optimizers, epoch, metrics history and every RNG state
  (torch CPU and CUDA, Python, NumPy, the data-order generator), so ``resume=True``
  continues exactly as if training had never stopped; and what defines the run (model class
  and settings, a digest of the data, batch size, seed), so resuming another run is refused.

Checkpoints hold only tensors and primitive containers and are read with
``torch.load(weights_only=True)``: loading one cannot execute code. Before loading, every
member's CRC-32 in the zip archive is checked (``torch.load`` does not), so a damaged file is
refused instead of resuming from altered weights.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import pickle
import random
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from fastgen.data import describe_dataset

__all__ = ["fit", "load_checkpoint", "save_checkpoint", "CheckpointError", "OutputError", "TrainingDivergedError",
           "save_image_grid", "save_curves", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"
SAMPLES_NAME = "samples.png"
CURVES_NAME = "curves.png"
_CHECKPOINT_FORMAT = "fastgen.checkpoint"
# Version 2 added "run" (what defines the run, checked on resume) and CRC-checked loading.
_CHECKPOINT_VERSION = 2
_REQUIRED_KEYS = ("format", "version", "run", "model", "optimizers", "epoch", "global_step", "history", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupted, truncated, or does not fit the model."""


class OutputError(OSError):
    """The output folder, or a file in it, cannot be written (a full disk, a read-only folder, a
    file where the folder should be). The message names the path and what to do."""


class TrainingDivergedError(FloatingPointError):
    """A loss became NaN or infinite; training stopped before updating from it."""


# --------------------------------------------------------------------------------------
# files


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, then ``os.replace``: readers see the old
    file or the complete new one, never a partial write (a crash leaves the old one intact)."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:  # a full disk, a read-only folder...
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(OSError):  # what cannot be removed now goes as a stale temporary later
            temporary.unlink(missing_ok=True)


def _prepare_output_folder(folder: Path, emit: Callable[[str], None]) -> None:
    """Create ``folder``, prove that files can be created in it (before any training: a read-only
    folder would otherwise fail only when the first epoch is saved) and remove stale temporaries."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output folder {folder} is an existing file; name a folder (it is created if needed)")
    probe = folder / f".write-probe.tmp-{os.getpid()}"  # named like a temporary: removed as stale if we are killed
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"fastgen")
        probe.unlink()
    except OSError as error:
        raise OutputError(f"output folder {folder} is not writable ({error.strerror or error}); choose another "
                          f"folder or make this one writable") from error
    for temporary in _remove_stale_temporaries(folder):
        emit(f"removed {temporary}, left by a write that was interrupted")


def _remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries of writes killed before they finished (``.NAME.tmp-PID`` from
    :func:`_atomic_write`, in ``folder`` and its ``samples/``) and return their paths.

    The temporary of a live process, another run writing into the folder right now, stays.
    """
    removed = []
    for temporary in (*folder.glob(".*.tmp-*"), *folder.glob("samples/.*.tmp-*")):
        pid = temporary.name.rpartition(".tmp-")[2]
        if pid.isdigit() and not _writer_alive(int(pid)):
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        # This process writes nothing yet, so an earlier process had our pid (a restarted container).
        return False
    if os.name != "posix":
        return True  # no safe liveness test (os.kill would terminate the process): keep the file
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class _KeepWriteError:
    """The file object ``torch.save`` writes through, keeping the ``OSError`` of a failed write:
    torch reports one (a full disk, say) only as "[enforce fail at inline_container.cc] unexpected
    pos", which does not say what happened."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Atomically ``torch.save`` a checkpoint dictionary; a failed write raises :class:`OutputError`."""
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            writer = _KeepWriteError(handle)
            try:
                torch.save(dict(payload), writer)
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None

    _atomic_write(Path(path), write)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` with ``weights_only=True``, after checking its integrity.

    Raises :class:`CheckpointError` naming the file if it is missing, corrupted (a member whose
    bytes no longer match the CRC-32 the zip archive stores for it), truncated, holding objects
    other than tensors and primitive containers, or not a fastgen checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # The bytes are as written (the CRCs matched), so the pickle itself asks for code. Never
        # repeat torch's advice to retry with weights_only=False: that would run the payload.
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise CheckpointError(f"checkpoint {path} holds objects that are not plain tensors or containers"
                              f"{f' ({found.group(1)})' if found else ''}; it will not be loaded, because "
                              f"unpickling such objects can run arbitrary code. Resume only from checkpoints "
                              f"that fastgen wrote") from None
    except Exception as error:  # zip and storage errors all mean "unusable file"
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated and cannot be loaded "
                              f"({type(error).__name__}: {_first_line(error)}); {_DAMAGED_ADVICE}") from error
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a fastgen checkpoint")
    missing = [key for key in _REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    if payload["version"] != _CHECKPOINT_VERSION:
        written_by = "an older" if payload["version"] < _CHECKPOINT_VERSION else "a newer"
        raise CheckpointError(f"checkpoint {path} has format version {payload['version']}, this fastgen reads version "
                              f"{_CHECKPOINT_VERSION}: it was written by {written_by} fastgen; resume it with that "
                              f"version, or start a new run in another output folder")
    return payload


_DAMAGED_ADVICE = "restore it from a copy, or start the run again without resuming"


def _check_archive(path: Path) -> None:
    """Refuse a checkpoint whose zip archive is damaged: reading every member through ``zipfile``
    compares its bytes with the CRC-32 stored for it, which ``torch.load`` never does."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except Exception as error:  # BadZipFile, EOFError, OSError...: a truncated or overwritten file
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated and cannot be loaded "
                              f"({type(error).__name__}: {_first_line(error)}); {_DAMAGED_ADVICE}") from None
    if damaged is not None:
        raise CheckpointError(f"checkpoint {path} is corrupted: {damaged} fails its CRC-32 check (its bytes changed "
                              f"after it was written); {_DAMAGED_ADVICE}")


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""


def _write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            # repr keeps every float bit-exact, so resumed and uninterrupted runs compare equal
            writer.writerows({key: repr(value) if isinstance(value, float) else value for key, value in row.items()}
                             for row in history)

    _atomic_write(path, write)


def _image_batch(samples: torch.Tensor) -> np.ndarray | None:
    """``(N, C, H, W)`` / ``(N, H, W)`` samples -> ``(N, H, W[, 3])`` floats in [0, 1], else None."""
    images = samples.detach().float().cpu()
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    elif images.dim() == 4 and images.shape[1] == 3:
        images = images.permute(0, 2, 3, 1)
    elif images.dim() != 3:
        return None
    return images.clamp(0, 1).numpy()


def save_image_grid(path: str | os.PathLike, samples: torch.Tensor, *, columns: int = 8, title: str | None = None) -> bool:
    """Tile samples into one PNG (grey or RGB, 1-pixel gaps, small images upscaled).

    Returns False (and writes nothing) when the samples are not images.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = _image_batch(samples)
    if images is None or len(images) == 0:
        return False
    count, height, width = images.shape[:3]
    # Upscale by whole pixels so 8x8 digits are visible; nearest neighbour keeps them crisp.
    scale = max(1, 64 // max(height, width))
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    height, width = height * scale, width * scale
    rows = math.ceil(count / columns)
    grid = np.ones((rows * (height + 1) + 1, columns * (width + 1) + 1, *images.shape[3:]), dtype=np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = 1 + row * (height + 1), 1 + column * (width + 1)
        grid[top:top + height, left:left + width] = image
    # Figure + Agg canvas directly: no pyplot, so no global backend switch in the user's process.
    dpi = 100
    figure = Figure(figsize=(grid.shape[1] / dpi, grid.shape[0] / dpi + (0.3 if title else 0)), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, grid.shape[0] / (grid.shape[0] + (30 if title else 0))))
    axes.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    axes.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=9, y=0.995)
    _atomic_write(Path(path), lambda temporary: figure.savefig(temporary, format="png", dpi=dpi))
    return True


def save_curves(path: str | os.PathLike, history: list[dict[str, float]], *, title: str | None = None) -> None:
    """One panel per metric (train and eval lines) against the epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics: list[str] = []
    for row in history:
        for key in row:
            for prefix in ("train_", "eval_"):
                if key.startswith(prefix) and key[len(prefix):] not in metrics:
                    metrics.append(key[len(prefix):])
    columns = min(3, max(1, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / columns))
    figure = Figure(figsize=(4 * columns, 3 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(rows, columns, index + 1)
        for prefix, style in (("train_", "-"), ("eval_", "--")):
            points = [(row["epoch"], row[prefix + metric]) for row in history if prefix + metric in row]
            if points:
                epochs, values = zip(*points)
                axes.plot(epochs, values, style, marker="." if len(points) < 30 else None, label=prefix.rstrip("_"))
        axes.set_title(metric, fontsize=10)
        axes.set_xlabel("epoch")
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    _atomic_write(Path(path), lambda temporary: figure.savefig(temporary, format="png"))


# --------------------------------------------------------------------------------------
# what defines a run (compared on resume)

_PLAIN_TYPES = (bool, int, float, str, type(None))


def _model_settings(model: nn.Module) -> dict[str, Any]:
    """The model's hyper-parameters, read from its public attributes: numbers, strings, flags and
    tuples of them, and named objects (a GAN's adversarial loss) by their name. Networks and
    tensors are not listed: the state dict carries them and loading it checks their shapes."""
    settings: dict[str, Any] = {}
    for name, value in vars(model).items():
        if name.startswith("_") or name == "training":
            continue
        if isinstance(value, (tuple, list)) and all(isinstance(item, _PLAIN_TYPES) for item in value):
            settings[name] = tuple(value)
        elif isinstance(value, _PLAIN_TYPES):
            settings[name] = value
        elif isinstance(getattr(value, "name", None), str):
            settings[name] = value.name
    return settings


def _run_definition(model: nn.Module, train_data: Dataset, eval_data: Dataset | None, batch_size: int,
                    seed: int) -> dict[str, Any]:
    """What makes two training sessions one run: the model class and its settings, the data, the
    batch size and the seed. Resuming under another definition would continue a different
    objective in the same metrics.csv. The device, AMP, threads and plots may change between
    sessions."""
    definition: dict[str, Any] = {"model": type(model).__qualname__}
    definition.update({f"model.{name}": value for name, value in _model_settings(model).items()})
    definition["training data"] = describe_dataset(train_data)
    definition["evaluation data"] = describe_dataset(eval_data) if eval_data is not None else "none"
    definition.update({"batch_size": batch_size, "seed": seed})
    return definition


def _check_same_run(path: Path, recorded: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    def show(definition: Mapping[str, Any], key: str) -> str:
        value = definition.get(key, "not recorded")
        return value if isinstance(value, str) else repr(value)

    differences = [f"{key}: {show(recorded, key)} in the checkpoint, {show(current, key)} now"
                   for key in dict.fromkeys([*recorded, *current]) if recorded.get(key) != current.get(key)]
    if differences:
        raise CheckpointError(f"checkpoint {path} belongs to another run ({'; '.join(differences)}); resume with the "
                              f"settings it was written with, or choose another output folder to start a new run")


# --------------------------------------------------------------------------------------
# RNG state (every source of randomness that training draws from)


def _capture_rng(data_generator: torch.Generator) -> dict[str, Any]:
    numpy_key, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        # NumPy arrays are not allowed by weights_only loading: keep the keys as a tensor.
        "numpy": {"key": numpy_key, "keys": torch.from_numpy(numpy_keys.astype(np.int64)), "pos": int(numpy_pos),
                  "has_gauss": int(numpy_has_gauss), "cached_gaussian": float(numpy_gauss)},
        "data": data_generator.get_state(),
    }


def _restore_rng(state: Mapping[str, Any], data_generator: torch.Generator) -> None:
    # A checkpoint loaded onto a GPU (map_location) brings these tensors there too; every
    # generator takes its state as a CPU tensor (on an H200: "RNG state must be a torch.ByteTensor").
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in state["cuda"]])
    random.setstate(_as_tuple(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["key"], numpy_state["keys"].cpu().numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    data_generator.set_state(state["data"].cpu())


def _as_tuple(value):
    return tuple(_as_tuple(item) for item in value) if isinstance(value, (list, tuple)) else value


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds CUDA too
    random.seed(seed)
    np.random.seed(seed % 2**32)


# --------------------------------------------------------------------------------------
# distributed


class _Distributed:
    """Process-group state under ``torchrun`` (``WORLD_SIZE > 1``); a no-op otherwise."""

    def __init__(self, device: torch.device) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.enabled = self.world_size > 1
        self.rank = int(os.environ.get("RANK", "0")) if self.enabled else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0")) if self.enabled else 0
        self.created_group = False
        self.device = device
        if not self.enabled:
            return
        if device.type == "cuda":
            # One GPU per process: LOCAL_RANK picks it unless the caller named one.
            self.device = torch.device("cuda", self.local_rank if device.index is None else device.index)
            torch.cuda.set_device(self.device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            self.created_group = True
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if not any(p.requires_grad for p in module.parameters()):
            return module  # DDP refuses modules without trainable parameters; nothing to sync
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def mean_metrics(self, sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
        """Per-metric mean over all steps of all ranks."""
        if not self.enabled:
            return {key: sums[key] / counts[key] for key in sums}
        names = sorted(set(self.gather_object(sorted(sums))[0]))  # rank 0's names, same on all ranks
        packed = torch.tensor([[sums.get(name, 0.0), counts.get(name, 0)] for name in names], dtype=torch.float64)
        if self.device.type == "cuda":
            packed = packed.to(self.device)
        dist.all_reduce(packed)
        return {name: float(total / count) for name, (total, count) in zip(names, packed.tolist()) if count}

    def gather_object(self, value: Any) -> list[Any]:
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.created_group:
            dist.destroy_process_group()


# --------------------------------------------------------------------------------------
# the loop


# Steps between progress-bar updates, and between reads of a captured step's summed objectives
# (each read a host synchronization).
_CHECK_EVERY = 10


def _make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Switch an optimizer to its graph-safe step (``capturable``, step counts on the device)."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True
        for parameter in group["params"]:
            step = optimizer.state.get(parameter, {}).get("step")
            if isinstance(step, torch.Tensor) and step.device != parameter.device:
                optimizer.state[parameter]["step"] = step.to(parameter.device)


class _CapturedStep:
    """The model's step captured once in a CUDA graph and replayed for every batch (``cuda_graph=True``).

    A replay launches the whole step (forward, backward, optimizer) at once: at the sizes VAEs
    train at, the host's kernel launches, not the GPU, bound an eager step. Capture needs a
    warmed-up step (optimizer state, cuBLAS workspaces, autotuned kernels), so three steps on
    the first batch run first, on a side stream; then the parameters, buffers, optimizer state
    and CUDA generator are put back as they were, and training sees exactly its own batches.
    The objectives are summed on the device inside the graph, in float64, and read by ``totals``.
    """

    def __init__(self, model: nn.Module, optimizers: Mapping[str, torch.optim.Optimizer],
                 inputs: tuple[torch.Tensor | None, ...]) -> None:
        device = inputs[0].device
        for optimizer in optimizers.values():
            _make_capturable(optimizer)
        self.inputs = tuple(None if t is None else t.clone() for t in inputs)
        saved_model = {name: value.clone() for name, value in model.state_dict().items()}
        saved_state = [(state, {key: value.clone() for key, value in state.items() if isinstance(value, torch.Tensor)})
                       for state in self._optimizer_states(optimizers)]
        saved_rng = torch.cuda.get_rng_state(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                objectives = model._capturable_step(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        model.load_state_dict(saved_model)  # copies into the same tensors, which the graph will use
        for state, saved in saved_state:
            for key, value in state.items():
                if not isinstance(value, torch.Tensor):
                    continue
                if key in saved:
                    value.copy_(saved[key])
                else:  # created by the warm-up: zero, as a fresh optimizer's state is
                    value.zero_()
        torch.cuda.set_rng_state(saved_rng, device)

        self.names = list(objectives)
        self._sums = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                objectives = model._capturable_step(*self.inputs)
                self._sums += torch.stack([objectives[name].double() for name in self.names])
        except RuntimeError as error:
            raise RuntimeError(f"cuda_graph=True: {type(model).__name__}'s step could not be captured in a CUDA "
                               f"graph ({_first_line(error)}); train without cuda_graph") from error
        self.steps = 0

    @staticmethod
    def _optimizer_states(optimizers: Mapping[str, torch.optim.Optimizer]) -> list[dict]:
        return [optimizer.state[parameter] for optimizer in optimizers.values()
                for group in optimizer.param_groups for parameter in group["params"]]

    def replay(self, inputs: tuple[torch.Tensor | None, ...]) -> None:
        for static, new in zip(self.inputs, inputs):
            if static is None:
                continue
            if new.shape != static.shape:
                raise ValueError(f"cuda_graph=True replays a step captured for inputs of shape {tuple(static.shape)}, "
                                 f"got {tuple(new.shape)}: every batch must have the same size")
            static.copy_(new)
        self.graph.replay()
        self.steps += 1

    def reset(self) -> None:
        """Start the sums of a new epoch."""
        self._sums.zero_()
        self.steps = 0

    def totals(self) -> tuple[dict[str, float], dict[str, int]]:
        """The objectives summed over this epoch's steps, and the step counts; a host synchronization.

        Raises FloatingPointError when a sum is NaN or infinite.
        """
        sums = dict(zip(self.names, self._sums.tolist()))
        bad = [name for name, value in sums.items() if not math.isfinite(value)]
        if bad:
            raise FloatingPointError(
                f"non-finite {', '.join(bad)} in the sum of this epoch's {self.steps} steps (a step in a CUDA "
                f"graph is checked every {_CHECK_EVERY} steps, after its update)")
        return sums, {name: self.steps for name in self.names}


def _check_cuda_graph(cuda_graph: Any, model: nn.Module, device: torch.device) -> None:
    if not isinstance(cuda_graph, bool):
        raise TypeError(f"cuda_graph must be True or False, got {cuda_graph!r}")
    if not cuda_graph:
        return
    if not getattr(model, "capturable", False):
        raise ValueError(f"cuda_graph=True captures the step of the VAE family (VAE, BetaVAE, ConditionalVAE, "
                         f"IWAE); {type(model).__name__}'s step cannot be captured: train it without cuda_graph")
    if device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got device={str(device)!r}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        raise ValueError(f"cuda_graph=True trains on one process; under torchrun (WORLD_SIZE={world_size}) "
                         f"train without it")


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(item, device) for item in batch)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return resolved


def _sample_grid(model: nn.Module, count: int, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Samples for the grid: for conditional models column ``j`` of every row is class ``j``."""
    num_classes = getattr(model, "num_classes", 0)
    if num_classes:
        rows = max(1, count // num_classes)
        labels = torch.arange(num_classes).repeat(rows)
        return model.sample(len(labels), labels, generator=generator), num_classes
    return model.sample(count, generator=generator), 8


def _evaluate(model: nn.Module, loader: DataLoader, device: torch.device, generator: torch.Generator) -> dict[str, float]:
    totals: dict[str, float] = {}
    seen = 0
    for batch in loader:
        batch = _to_device(batch, device)
        size = len(batch[0] if isinstance(batch, (tuple, list)) else batch)
        for name, value in model.evaluate(batch, generator=generator).items():
            totals[name] = totals.get(name, 0.0) + value * size
        seen += size
    return {name: total / seen for name, total in totals.items()} if seen else {}


def fit(model: nn.Module, train_data: Dataset, *, epochs: int, batch_size: int, out_dir: str | os.PathLike,
        eval_data: Dataset | None = None, device: str | torch.device = "cpu", amp: bool = False,
        resume: bool = False, seed: int = 0, plot_every: int = 1, num_samples: int = 64,
        eval_batch_size: int = 256, progress: bool = True, log: Callable[[str], None] | None = None,
        title: str | None = None, cuda_graph: bool = False) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs`` epochs and return the metrics history (one dict per epoch).

    Args:
        model: a :class:`fastgen.models.GenerativeModel` (any VAE or GAN of fastgen).
        train_data, eval_data: datasets of ``x`` or ``(x, labels)``; ``eval_data`` is
            evaluated after every epoch.
        epochs: total epochs; with ``resume`` training continues from the checkpoint's epoch
            up to this number.
        batch_size: per process.
        out_dir: where ``metrics.csv``, ``samples.png``, ``curves.png`` and
            ``checkpoint.pt`` go (created if needed).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; under torchrun each process uses
            ``cuda:LOCAL_RANK``.
        amp: run forward passes under ``torch.autocast`` in bfloat16 (CPU and CUDA).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (start fresh if not). A
            checkpoint of another run is refused; one already at ``epochs`` trains nothing
            and says so.
        seed: seeds torch, Python and NumPy (plus the rank under DDP) and the data order.
        plot_every: write the sample grid and the curves every this many epochs (and after the
            last); metrics and checkpoint are written every epoch.
        num_samples: images in the sample grid.
        cuda_graph: capture the training step once in a CUDA graph and replay it for every
            batch (the VAE family on one CUDA device): one launch per step instead of one per
            kernel. The objectives are summed on the device and checked for NaN/inf every
            10 steps, after the update, instead of before each update.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is created (gloo on CPU, nccl
    on CUDA) unless it exists, the model's networks are wrapped in DistributedDataParallel,
    each rank reads its shard through a ``DistributedSampler``, and only rank 0 evaluates
    and writes files.

    Raises:
        TrainingDivergedError: a loss became NaN or inf; names the epoch and step. The
            checkpoint from the last completed epoch is left intact.
        OutputError: the output folder is a file or not writable (checked before training), or
            a write failed (a full disk); names the path and the last good checkpoint.
        CheckpointError: ``resume`` found a corrupted checkpoint, or one of another run (another
            model class or model settings, other data, batch size or seed); the message names
            what differs.
    """
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    plot_every = _positive_int(plot_every, "plot_every")
    eval_batch_size = _positive_int(eval_batch_size, "eval_batch_size")
    if not hasattr(model, "step") or not hasattr(model, "optimizers"):
        raise TypeError(f"model must be a fastgen model with step() and optimizers(), got {type(model).__name__}")
    if len(train_data) == 0:  # type: ignore[arg-type]
        raise ValueError("train_data is empty")
    requested_device = _resolve_device(device)
    _check_cuda_graph(cuda_graph, model, requested_device)
    distributed = _Distributed(requested_device)
    device = distributed.device
    emit = log or _tqdm_write
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    try:
        if distributed.is_main:
            _prepare_output_folder(out_dir, emit)
        _seed_everything(seed + distributed.rank)
        model.to(device)
        model.set_autocast(device.type if amp else None, torch.bfloat16)
        optimizers = model.optimizers()
        data_generator = torch.Generator().manual_seed(seed)
        run = _run_definition(model, train_data, eval_data, batch_size, seed)

        start_epoch, global_step, history = 0, 0, []
        if resume and checkpoint_path.is_file():
            payload = load_checkpoint(checkpoint_path, map_location=device)
            _check_same_run(checkpoint_path, payload["run"], run)
            start_epoch, global_step, history = _restore(payload, checkpoint_path, model, optimizers,
                                                         data_generator, distributed, emit)
            if distributed.is_main:
                # A kill between the checkpoint and its metrics row leaves metrics.csv a row
                # behind: the checkpoint's history is the record, so the file agrees with it again.
                _write_metrics_csv(out_dir / METRICS_NAME, history)
                if start_epoch >= epochs:
                    emit(f"nothing to train: {checkpoint_path} is at epoch {start_epoch} and epochs={epochs} counts "
                         f"all epochs of the run; ask for more than {start_epoch} to train on")
                else:
                    emit(f"resumed from {checkpoint_path} at epoch {start_epoch}")
        elif resume and distributed.is_main:
            emit(f"no checkpoint at {checkpoint_path}; starting from scratch")
        distributed.barrier()  # nobody trains (or overwrites the checkpoint) before all have read it
        if start_epoch >= epochs:
            return history
        saved_epoch = start_epoch  # the epoch that checkpoint_path holds for this run (0: none yet)
        captured: _CapturedStep | None = None  # cuda_graph: the step, captured at the first batch

        if distributed.enabled:
            model.distribute(distributed.wrap)
            sampler = DistributedSampler(train_data, num_replicas=distributed.world_size, rank=distributed.rank,
                                         shuffle=True, seed=seed, drop_last=True)
            shard = len(sampler)
        else:
            sampler, shard = None, len(train_data)  # type: ignore[arg-type]
        # Dropping a ragged last batch keeps batch-norm layers away from batches of one.
        loader = DataLoader(train_data, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                            generator=data_generator, drop_last=shard >= batch_size)
        eval_loader = (DataLoader(eval_data, batch_size=eval_batch_size, shuffle=False)
                       if eval_data is not None and distributed.is_main else None)

        for epoch in range(start_epoch + 1, epochs + 1):
            if sampler is not None:
                sampler.set_epoch(epoch)
            model.train()
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            if captured is not None:
                captured.reset()
            started = time.perf_counter()
            bar = _progress(loader, f"epoch {epoch}/{epochs}", enabled=progress and distributed.is_main)
            for batch_index, batch in enumerate(bar):
                global_step += 1
                try:
                    if cuda_graph:
                        inputs = model._step_inputs(_to_device(batch, device))
                        if captured is None:
                            captured = _CapturedStep(model, optimizers, inputs)
                        captured.replay(inputs)
                        if batch_index % _CHECK_EVERY == 0 or batch_index + 1 == len(loader):
                            sums, counts = captured.totals()
                        metrics = {}
                    else:
                        metrics = model.step(_to_device(batch, device))
                    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
                    if bad:
                        raise FloatingPointError(", ".join(f"non-finite {name}: {metrics[name]}" for name in bad))
                except FloatingPointError as error:
                    raise TrainingDivergedError(f"training diverged at epoch {epoch}, step {global_step} "
                                                f"(batch {batch_index + 1} of the epoch): {error}; "
                                                f"{_last_good_checkpoint(checkpoint_path, saved_epoch)}; full "
                                                f"precision (no AMP) or a smaller learning rate usually avoids "
                                                f"this") from error
                for name, value in metrics.items():
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0) + 1
                if hasattr(bar, "set_postfix") and batch_index % _CHECK_EVERY == 0:
                    bar.set_postfix({name: f"{sums[name] / counts[name]:.4g}" for name in sums}, refresh=False)
            train_means = distributed.mean_metrics(sums, counts)

            row: dict[str, float] = {"epoch": epoch, "step": global_step}
            row.update({f"train_{name}": value for name, value in train_means.items()})
            if eval_loader is not None:
                model.eval()
                # A fixed generator: eval noise is the same every epoch and never touches the
                # training RNG, so evaluating does not change what training draws next.
                eval_generator = torch.Generator(device).manual_seed(seed + 1)
                row.update({f"eval_{name}": value for name, value in
                            _evaluate(model, eval_loader, device, eval_generator).items()})
            history.append(row)

            rng_states = distributed.gather_object(_capture_rng(data_generator))
            if distributed.is_main:
                elapsed = time.perf_counter() - started
                emit(f"epoch {epoch}/{epochs} ({elapsed:.1f}s): "
                     + ", ".join(f"{key}={value:.4g}" for key, value in row.items() if key not in ("epoch", "step")))
                try:
                    # The checkpoint before the row: a kill between the two leaves metrics.csv a row
                    # behind the checkpoint (resuming rewrites it), never a row ahead.
                    save_checkpoint(checkpoint_path, {
                        "format": _CHECKPOINT_FORMAT, "version": _CHECKPOINT_VERSION, "run": run,
                        "model": model.state_dict(),
                        "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
                        "epoch": epoch, "global_step": global_step, "history": history,
                        "rng": rng_states, "seed": seed, "world_size": distributed.world_size,
                    })
                    saved_epoch = epoch
                    _write_metrics_csv(out_dir / METRICS_NAME, history)
                    if epoch % plot_every == 0 or epoch == epochs:
                        _write_samples(model, out_dir, epoch, num_samples, seed, device, title)
                        save_curves(out_dir / CURVES_NAME, history, title=title)
                except OSError as error:
                    raise OutputError(f"{error}; {_last_good_checkpoint(checkpoint_path, saved_epoch)}; free some "
                                      f"space or fix the output folder, then {'resume' if saved_epoch else 'start again'}"
                                      ) from error
            distributed.barrier()
        return history
    finally:
        model.set_autocast(None)
        distributed.close()


def _restore(payload: dict[str, Any], path: Path, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer],
             data_generator: torch.Generator, distributed: _Distributed, emit) -> tuple[int, int, list]:
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} does not match the model "
                              f"{type(model).__name__}: {_first_line(error)}") from error
    if set(payload["optimizers"]) != set(optimizers):
        raise CheckpointError(f"checkpoint {path} holds optimizers {sorted(payload['optimizers'])}, "
                              f"the model has {sorted(optimizers)}")
    try:
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(payload["optimizers"][name])
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path}: optimizer state does not fit the model ({error})") from error
    rng_states = payload["rng"]
    if len(rng_states) == distributed.world_size:
        _restore_rng(rng_states[distributed.rank], data_generator)
    else:
        # Another world size: the data shards differ anyway, so exact continuation is moot.
        if distributed.is_main:
            emit(f"checkpoint {path} was written by {len(rng_states)} process(es), this run has "
                 f"{distributed.world_size}: RNG state not restored, continuation is not bit-exact")
        _seed_everything(int(payload.get("seed", 0)) + 1000 * int(payload["epoch"]) + distributed.rank)
        data_generator.set_state(rng_states[0]["data"].cpu())
    return int(payload["epoch"]), int(payload["global_step"]), [dict(row) for row in payload["history"]]


def _last_good_checkpoint(path: Path, saved_epoch: int) -> str:
    if saved_epoch:
        return f"the last good checkpoint {path} (epoch {saved_epoch}) is left intact"
    return "no checkpoint had been written yet"


def _write_samples(model: nn.Module, out_dir: Path, epoch: int, count: int, seed: int, device: torch.device,
                   title: str | None) -> None:
    model.eval()
    samples, columns = _sample_grid(model, count, torch.Generator(device).manual_seed(seed + 2))
    label = f"{title + ': ' if title else ''}epoch {epoch}"
    if save_image_grid(out_dir / SAMPLES_NAME, samples, columns=columns, title=label):
        (out_dir / "samples").mkdir(exist_ok=True)
        save_image_grid(out_dir / "samples" / f"epoch_{epoch:03d}.png", samples, columns=columns, title=label)


def _tqdm_write(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message)


def _progress(iterable, description: str, *, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, leave=False, dynamic_ncols=True, mininterval=0.5)

