"""fastgen.data: the bundled digits, MNIST IDX files (plain, .gz, malformed), binarization."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from fastgen.data import (DynamicallyBinarized, IDXFormatError, describe_dataset, digits, load_dataset, mnist,
                          num_classes_of, read_idx)


def test_digits_split_shapes_and_range():
    train, test = digits()
    (train_x, train_y), (test_x, test_y) = train.tensors, test.tensors
    assert train_x.shape == (1437, 1, 8, 8) and test_x.shape == (360, 1, 8, 8)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert train_x.min() == 0 and train_x.max() == 1 and test_x.max() <= 1
    assert set(train_y.tolist()) == set(test_y.tolist()) == set(range(10))  # stratified
    # the split is fixed: a second call gives the same tensors
    again_train, again_test = digits()
    assert torch.equal(again_train.tensors[0], train_x) and torch.equal(again_test.tensors[1], test_y)
    # and disjoint: no test image appears in the training split
    train_rows = {tuple(row) for row in (train_x.flatten(1) * 16).round().int().tolist()}
    overlap = sum(tuple(row) in train_rows for row in (test_x.flatten(1) * 16).round().int().tolist())
    assert overlap <= 3  # the raw data holds a handful of exact duplicates
    assert num_classes_of(train) == 10


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1" if type_code == 0x08 else ">i4").tobytes()


def _write_mnist(folder, *, n_train=6, n_test=4, compress=False, dotted=False):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        name = name.replace("-idx", ".idx") if dotted else name
        data = _idx_bytes(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dotted", [False, True])
def test_mnist_reads_idx_files(tmp_path, compress, dotted):
    arrays = _write_mnist(tmp_path, compress=compress, dotted=dotted)
    train, test = mnist(tmp_path)
    images, labels = train.tensors
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.float32
    torch.testing.assert_close(images[:, 0] * 255, torch.from_numpy(arrays["train-images-idx3-ubyte"]).float())
    assert labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert test.tensors[0].shape == (4, 1, 28, 28)
    assert len(load_dataset(f"mnist:{tmp_path}")[0]) == 6


def test_mnist_missing_file_is_named(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist(tmp_path / "nowhere")


def test_mnist_malformed_files_are_named(tmp_path):
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(good[:-10])  # truncated data
    with pytest.raises(IDXFormatError, match=r"train-images-idx3-ubyte.*promises shape \(6, 28, 28\)"):
        mnist(tmp_path)
    path.write_bytes(b"\x01\x02" + good[2:])  # bad magic
    with pytest.raises(IDXFormatError, match="train-images-idx3-ubyte: not an IDX file"):
        mnist(tmp_path)
    path.write_bytes(good)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(IDXFormatError, match="6 images but .*train-labels-idx1-ubyte holds 5 labels"):
        mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros((6, 2), dtype=np.int32), 0x0C))
    with pytest.raises(IDXFormatError, match="expected uint8 labels"):
        mnist(tmp_path)


@pytest.mark.parametrize(("split", "file"), [("train", "train-images-idx3-ubyte"), ("test", "t10k-images-idx3-ubyte")])
def test_mnist_split_without_images_is_refused(tmp_path, split, file):
    _write_mnist(tmp_path, **{f"n_{split}": 0})
    with pytest.raises(IDXFormatError, match=rf"{file} holds no images: MNIST's {split} split cannot be empty"):
        mnist(tmp_path)


def test_corrupt_gzip_is_named(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(IDXFormatError, match="x-idx1-ubyte.gz: cannot read"):
        read_idx(path)


def test_read_idx_other_types(tmp_path):
    path = tmp_path / "ints"
    values = np.arange(6, dtype=np.int32).reshape(2, 3) - 2
    path.write_bytes(_idx_bytes(values, 0x0C))
    assert read_idx(path).tolist() == values.tolist()


def test_dynamic_binarization_redraws_on_every_access():
    train, _ = digits(binarize=True)
    assert isinstance(train, DynamicallyBinarized) and len(train) == 1437
    torch.manual_seed(0)
    draws = torch.stack([train[5][0] for _ in range(400)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    grey = digits()[0].tensors[0][5]
    torch.testing.assert_close(draws.mean(0), grey, atol=0.1, rtol=0)  # E[x] = grey level
    assert not torch.equal(draws[0], draws[1])
    assert train[5][1] == digits()[0].tensors[1][5]
    assert num_classes_of(train) == 10


def test_load_dataset_rejects_unknown_specs():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="mnist:PATH"):
        load_dataset("mnist:")


def test_describe_dataset_tells_contents_apart():
    train, test = digits()
    images, labels = train.tensors
    description = describe_dataset(train)
    assert description.startswith("TensorDataset of 1437 items, digest ")
    assert describe_dataset(digits()[0]) == description  # deterministic across loads
    assert describe_dataset(TensorDataset(images.clone(), labels.clone())) == description
    changed = images.clone()
    changed[700, 0, 3, 3] += 1 / 16
    assert describe_dataset(TensorDataset(changed, labels)) != description  # one pixel
    assert describe_dataset(TensorDataset(images, labels.roll(1))) != description  # labels
    assert describe_dataset(TensorDataset(images.double(), labels)) != description  # dtype
    assert describe_dataset(DynamicallyBinarized(train)) == "dynamically binarized " + description
    assert describe_dataset(test) != description
    assert describe_dataset(Subset(train, range(10))) == "Subset of 10 items"
