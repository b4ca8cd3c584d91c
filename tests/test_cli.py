"""fastgen.cli: every model through `fastgen train`, argument errors, demo, forwarded commands."""

from __future__ import annotations

import csv
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgen import cli

REPO = Path(__file__).resolve().parents[1]
PROMISED_FILES = ("metrics.csv", "samples.png", "curves.png", "checkpoint.pt")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


def _train(tmp_path, model, *extra):
    out = tmp_path / model
    status = cli.main(["train", model, "--data", "digits", "--epochs", "1", "--batch-size", "128", "--out", str(out),
                       "--no-progress", *extra])
    return status, out


@pytest.mark.parametrize("model", list(cli.MODEL_BUILDERS))
def test_train_writes_every_promised_file(tmp_path, model):
    status, out = _train(tmp_path, model)
    assert status == 0
    for name in PROMISED_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, f"{model}: {name}"
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert any(key.startswith("eval_") for key in rows[0])


def test_train_resume_and_options(tmp_path):
    status, out = _train(tmp_path, "vae", "--seed", "3", "--amp", "--latent-dim", "4", "--threads", "1")
    assert status == 0
    status = cli.main(["train", "vae", "--epochs", "2", "--batch-size", "128", "--out", str(out), "--seed", "3",
                       "--latent-dim", "4", "--resume", "--no-progress"])
    assert status == 0
    with open(out / "metrics.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_data_from_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, count in (("train", 12), ("t10k", 4)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)
    out = tmp_path / "run"
    assert cli.main(["train", "dcgan", "--data", f"mnist:{folder}", "--epochs", "1", "--batch-size", "4",
                     "--out", str(out), "--latent-dim", "8", "--binarize", "--no-progress"]) == 0
    assert all((out / name).is_file() for name in PROMISED_FILES)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["global_step"] == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "vae", "--epochs", "0", "--out", "x"], "argument --epochs: expected a positive integer, got 0"),
    (["train", "vae", "--epochs", "1", "--batch-size", "many", "--out", "x"], "argument --batch-size"),
    (["train", "vae", "--epochs", "1", "--data", "cifar", "--out", "x"], "argument --data: expected 'digits' or"),
    (["train", "vae", "--epochs", "1", "--data", "mnist:/no/such/folder", "--out", "x"],
     "argument --data: MNIST folder /no/such/folder does not exist"),
    (["train", "vqvae", "--epochs", "1", "--out", "x"], "argument model: invalid choice: 'vqvae'"),
    (["train", "vae", "--out", "x"], "the following arguments are required: --epochs"),
    (["train", "vae", "--epochs", "1", "--out", "x", "--device", "warp"], "argument --device"),
    (["train", "vae", "--epochs", "1", "--out", "x", "--seed", "-4"], "argument --seed"),
    (["train", "dcgan", "--epochs", "1", "--out", "x", "--arch", "mlp"], "argument --arch: dcgan is convolutional"),
])
def test_bad_arguments_name_the_argument(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_mnist_file_is_reported_against_data(tmp_path, capsys):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(SystemExit):
        cli.main(["train", "vae", "--epochs", "1", "--out", str(tmp_path / "o"), "--data", f"mnist:{tmp_path}"])
    err = capsys.readouterr().err
    assert "argument --data:" in err and "train-images-idx3-ubyte" in err


def test_mnist_folder_without_training_images_is_reported_against_data(tmp_path, capsys):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, count in (("train", 0), ("t10k", 4)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", np.zeros((count, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.zeros(count))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "vae", "--epochs", "1", "--out", str(tmp_path / "o"), "--data", f"mnist:{folder}"])
    assert exit_info.value.code == 2
    assert "argument --data: " in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "o").exists()  # refused before the output folder was even made


def test_demo_writes_images_and_curves(tmp_path, monkeypatch, capsys):
    # The real demo trains for about a minute; the same code path with a few epochs here.
    monkeypatch.setattr(cli, "DEMO_RUNS", (("vae", "vae", 2, 128, 1), ("wgan", "wgan", 2, 128, 1)))
    assert cli.main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    for folder in ("vae", "wgan"):
        for name in PROMISED_FILES:
            assert (tmp_path / folder / name).is_file(), f"{folder}/{name}"
    assert "demo finished" in capsys.readouterr().out


def test_forwarded_subcommand_gets_its_arguments(monkeypatch):
    received = []
    module = types.ModuleType("fake_bench_main")
    module.main = lambda argv: received.append(argv) or 3
    monkeypatch.setitem(sys.modules, "fake_bench_main", module)
    monkeypatch.setitem(cli.FORWARDED_COMMANDS, "bench", ("fake_bench_main", "main", "benchmarks"))
    assert cli.main(["bench", "--ops", "kl", "--help"]) == 3
    assert received == [["--ops", "kl", "--help"]]


def test_forwarded_subcommand_that_cannot_be_imported(monkeypatch, capsys):
    monkeypatch.setitem(cli.FORWARDED_COMMANDS, "bench", ("no_such_module_here", "main", "benchmarks"))
    assert cli.main(["bench"]) == 2
    assert "cannot import no_such_module_here" in capsys.readouterr().err


def test_python_dash_m_fastgen_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "fastgen", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    for command in ("train", "demo", "bench"):
        assert command in result.stdout
