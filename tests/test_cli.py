"""fastgen.cli: every model through `fastgen train`, argument errors, demo, forwarded commands."""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgen import cli
from fastgen.train import CheckpointError

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


def _error_line(capsys) -> str:
    """The one line an expected failure prints to stderr (and nothing else there)."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fastgen: error: ")
    return lines[0]


def test_corrupted_checkpoint_is_one_line_without_a_traceback(tmp_path, capsys):
    status, out = _train(tmp_path, "vae")
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    capsys.readouterr()
    assert _train(tmp_path, "vae", "--epochs", "2", "--resume")[0] == 1
    assert _error_line(capsys).startswith(f"fastgen: error: checkpoint {checkpoint} is corrupted or truncated")
    with pytest.raises(CheckpointError):  # --debug shows the exception and its traceback
        _train(tmp_path, "vae", "--epochs", "2", "--resume", "--debug")


def test_out_naming_an_existing_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    status = cli.main(["train", "vae", "--epochs", "1", "--out", str(target), "--no-progress"])
    assert status == 1
    assert _error_line(capsys) == (f"fastgen: error: output folder {target} is an existing file; name a folder "
                                   f"(it is created if needed)")
    assert target.read_text() == "mine"


def test_resuming_another_models_run_is_refused(tmp_path, capsys):
    status, out = _train(tmp_path, "vae")
    metrics = (out / "metrics.csv").read_text()
    capsys.readouterr()
    status = cli.main(["train", "beta-vae", "--epochs", "2", "--batch-size", "128", "--out", str(out), "--resume",
                       "--no-progress"])
    assert status == 1
    line = _error_line(capsys)
    assert "belongs to another run (model: VAE in the checkpoint, BetaVAE now; model.beta: 1.0 in the checkpoint, " \
           "4.0 now); resume with the settings it was written with, or choose another output folder" in line
    assert (out / "metrics.csv").read_text() == metrics


def test_resume_with_nothing_to_train_says_so(tmp_path, capsys):
    status, out = _train(tmp_path, "vae", "--epochs", "2")
    capsys.readouterr()
    assert _train(tmp_path, "vae", "--epochs", "1", "--resume")[0] == 0
    assert (f"nothing to train: {out / 'checkpoint.pt'} is at epoch 2 and epochs=1 counts all epochs of the run"
            in capsys.readouterr().out)


def _fit_raising(error):
    def fit(*args, **kwargs):
        raise error
    return fit


def test_interrupt_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    import fastgen.train

    monkeypatch.setattr(fastgen.train, "fit", _fit_raising(KeyboardInterrupt()))
    assert _train(tmp_path, "vae")[0] == 130
    assert _error_line(capsys) == (f"fastgen: error: interrupted; rerun with --resume to continue from the last "
                                   f"checkpoint in {tmp_path / 'vae'}")
    monkeypatch.setattr(fastgen.train, "fit", _fit_raising(TypeError("a bug")))
    with pytest.raises(TypeError, match="a bug"):
        _train(tmp_path, "vae")


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    from fastgen.cli import main
    # Files may not grow past 64 KiB: the checkpoint's write fails as on a full disk (EFBIG, not ENOSPC).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    sys.exit(main(sys.argv[1:]))
""")


def test_a_failing_checkpoint_write_is_one_line(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, "train", "vae", "--epochs", "1", "--batch-size", "256",
                             "--out", str(out), "--no-progress", "--threads", "1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "inline_container" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"fastgen: error: cannot write {out / 'checkpoint.pt'}: File too large; no checkpoint had been written yet; "
        f"free some space or fix the output folder, then start again")
    assert sorted(path.name for path in out.iterdir()) == []  # the partial temporary is gone


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
    (["train", "vae", "--epochs", "1", "--out", "x", "--cuda-graph"],
     "argument --cuda-graph: cuda_graph=True needs a CUDA device, got device='cpu'"),
    (["train", "wgan", "--epochs", "1", "--out", "x", "--cuda-graph"],
     "argument --cuda-graph: cuda_graph=True captures the step of the VAE family"),
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
