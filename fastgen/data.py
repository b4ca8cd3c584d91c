"""Datasets: the embedded 8x8 digits, local MNIST IDX files, dynamic binarization.

Every loader returns ``(train, test)`` :class:`torch.utils.data.TensorDataset` pairs of
``(images, labels)``: images float32 ``(N, 1, H, W)`` scaled to ``[0, 1]``, labels int64.
Any user ``TensorDataset`` of that form (or of images alone) works with the models and
the trainer.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

__all__ = ["digits", "mnist", "read_idx", "IDXFormatError", "DynamicallyBinarized", "load_dataset",
           "first_item_shape", "num_classes_of", "describe_dataset"]

#: fraction of the 1797 digits held out for evaluation (stratified, fixed seed)
DIGITS_TEST_FRACTION = 0.2


def digits(*, binarize: bool = False) -> tuple[Dataset, Dataset]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

    Pixel values 0..16 are scaled to ``[0, 1]``. The split is fixed: a stratified 20 % test
    set chosen with seed 0, so every run and every process sees the same held-out images
    (1437 train, 360 test). ``binarize=True`` wraps both in :class:`DynamicallyBinarized`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_index, test_index = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION,
                                               random_state=0, stratify=bunch.target)
    train = TensorDataset(images[train_index], labels[train_index])
    test = TensorDataset(images[test_index], labels[test_index])
    return _maybe_binarized(train, test, binarize)


class IDXFormatError(ValueError):
    """An IDX file whose header or size does not match the format."""


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed, chosen by the ``.gz`` suffix).

    Header: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions ``n``,
    then ``n`` big-endian uint32 sizes; the data follows. Raises :class:`IDXFormatError`
    naming the file when the magic, the type or the data size is wrong.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as error:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise IDXFormatError(f"{path}: cannot read IDX file ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXFormatError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise IDXFormatError(f"{path}: unknown IDX data type code 0x{type_code:02x}")
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise IDXFormatError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise IDXFormatError(f"{path}: header promises shape {shape} ({expected} data bytes) "
                             f"but the file holds {len(raw) - header_size}")
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)


_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(root: Path, stem: str) -> Path:
    # The files circulate as "train-images-idx3-ubyte" and "train-images.idx3-ubyte", plain or .gz.
    dotted = stem.replace("-idx", ".idx")
    candidates = [root / f"{name}{suffix}" for name in (stem, dotted) for suffix in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"MNIST file {stem} (or {stem}.gz) not found in {root}")


def mnist(root: str | os.PathLike, *, binarize: bool = False) -> tuple[Dataset, Dataset]:
    """MNIST from the four standard IDX files in the folder ``root`` (no download).

    Expects ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each may end in ``.gz``).
    Images are scaled from 0..255 to ``[0, 1]``. Missing files raise ``FileNotFoundError``
    and malformed ones (or a split without images) :class:`IDXFormatError`, both naming the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST folder {root} does not exist")
    arrays = {}
    for key, stem in _MNIST_FILES.items():
        path = _find_idx(root, stem)
        array = read_idx(path)
        if key.endswith("images") and (array.ndim != 3 or array.dtype != np.uint8):
            raise IDXFormatError(f"{path}: expected uint8 images of shape (N, H, W), got {array.dtype} {array.shape}")
        if key.endswith("labels") and (array.ndim != 1 or array.dtype != np.uint8):
            raise IDXFormatError(f"{path}: expected uint8 labels of shape (N,), got {array.dtype} {array.shape}")
        arrays[key] = (path, array)
    splits = []
    for split in ("train", "test"):
        (image_path, images), (label_path, labels) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise IDXFormatError(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels")
        if len(images) == 0:
            raise IDXFormatError(f"{image_path} holds no images: MNIST's {split} split cannot be empty "
                                 f"(is the file complete?)")
        splits.append(TensorDataset(torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1),
                                    torch.from_numpy(labels.astype(np.int64))))
    return _maybe_binarized(splits[0], splits[1], binarize)


class DynamicallyBinarized(Dataset):
    r"""Resample binary images on every access: :math:`x \sim \mathrm{Bernoulli}(p)` with :math:`p` the grey level.

    The standard treatment of MNIST for Bernoulli likelihoods (Salakhutdinov & Murray,
    2008); a fresh draw each epoch also acts as data augmentation. Draws come from the
    default torch generator, so seeding (and the trainer's checkpointed RNG state) makes
    them reproducible.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index):
        item = self.dataset[index]
        if isinstance(item, tuple):
            return (torch.bernoulli(item[0]), *item[1:])
        return torch.bernoulli(item)


def _maybe_binarized(train: Dataset, test: Dataset, binarize: bool) -> tuple[Dataset, Dataset]:
    if binarize:
        return DynamicallyBinarized(train), DynamicallyBinarized(test)
    return train, test


def load_dataset(spec: str, *, binarize: bool = False) -> tuple[Dataset, Dataset]:
    """``"digits"`` or ``"mnist:PATH"`` -> ``(train, test)`` (the CLI's ``--data`` values)."""
    if spec == "digits":
        return digits(binarize=binarize)
    if spec.startswith("mnist:"):
        path = spec[len("mnist:"):]
        if not path:
            raise ValueError("mnist data needs a folder: mnist:PATH")
        return mnist(path, binarize=binarize)
    raise ValueError(f"unknown dataset {spec!r}; expected 'digits' or 'mnist:PATH'")


def first_item_shape(dataset: Dataset) -> tuple[int, ...]:
    """Shape of one sample (without batch dimension)."""
    item = dataset[0]
    x = item[0] if isinstance(item, (tuple, list)) else item
    return tuple(Tensor.size(x))


def num_classes_of(dataset: Dataset) -> int:
    """``max(label) + 1`` over a labelled dataset, 0 when it has no labels."""
    base = dataset.dataset if isinstance(dataset, DynamicallyBinarized) else dataset
    if isinstance(base, TensorDataset) and len(base.tensors) >= 2:
        return int(base.tensors[1].max()) + 1
    item = base[0]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        return 0
    return int(max(int(base[i][1]) for i in range(len(base)))) + 1  # type: ignore[arg-type]


def describe_dataset(dataset: Dataset) -> str:
    """One line that identifies a dataset: its type, its size and, for a ``TensorDataset``, a
    digest of every tensor's dtype, shape and bytes.

    Checkpoints record it so that a run is not resumed on other data: MNIST and Fashion-MNIST
    folders hold the same number of images of the same shape, so only the contents tell them
    apart. Other dataset types are described by type and size only (reading every item could
    be slow, or draw random numbers).
    """
    if isinstance(dataset, DynamicallyBinarized):
        return f"dynamically binarized {describe_dataset(dataset.dataset)}"
    description = f"{type(dataset).__name__} of {len(dataset)} items"  # type: ignore[arg-type]
    if not isinstance(dataset, TensorDataset):
        return description
    digest = hashlib.blake2b(digest_size=8)
    for tensor in dataset.tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype} {tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, any dtype
    return f"{description}, digest {digest.hexdigest()}"
