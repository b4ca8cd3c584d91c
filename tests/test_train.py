"""fastgen.train.fit: files, exact resume, checkpoint safety, divergence, AMP, DDP."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from fastgen.data import DynamicallyBinarized, digits
from fastgen.models import VAE, WGAN, BetaVAE
from fastgen import train
from fastgen.train import CheckpointError, OutputError, TrainingDivergedError, fit, load_checkpoint

SHAPE = (1, 8, 8)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def small_data():
    train, test = digits()
    return (TensorDataset(*(t[:256] for t in train.tensors)), TensorDataset(*(t[:64] for t in test.tensors)))


def _vae():
    torch.manual_seed(0)
    return VAE.mlp(SHAPE, latent_dim=4, hidden=32)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _fit(model, data, out_dir, **kwargs):
    kwargs.setdefault("epochs", 1)
    kwargs.setdefault("batch_size", 32)
    kwargs.setdefault("plot_every", 100)  # plots after the last epoch only: matplotlib is the slow part
    kwargs.setdefault("log", lambda message: None)
    return fit(model, data[0], eval_data=data[1], out_dir=out_dir, progress=False, **kwargs)


def test_fit_writes_every_file_it_promises(tmp_path, small_data):
    history = _fit(_vae(), small_data, tmp_path, epochs=2)
    for name in ("metrics.csv", "samples.png", "curves.png", "checkpoint.pt", "samples/epoch_002.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # atomic writes leave nothing behind
    rows = _rows(tmp_path / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"] and rows[-1]["step"] == "16"  # 256 / 32 * 2
    for column in ("train_loss", "train_elbo", "train_kl", "train_reconstruction", "eval_elbo", "eval_nll"):
        assert column in rows[0]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert history[-1]["epoch"] == 2 and history[-1]["eval_elbo"] == float(rows[-1]["eval_elbo"])
    # only tensors and primitive containers: loads with weights_only=True
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["epoch"] == 2 and set(payload["optimizers"]) == {"model"}
    assert set(payload["rng"][0]) == {"torch", "cuda", "python", "numpy", "data"}


@pytest.mark.parametrize("family", ["vae-binarized", "wgan"])
def test_resume_continues_exactly(tmp_path, small_data, family):
    if family == "wgan":
        def build():
            torch.manual_seed(0)
            return WGAN.mlp(SHAPE, latent_dim=4, hidden=32)
        data = small_data
        epochs = 3  # 8 critic steps per epoch with n_critic 5: epochs end mid-cycle
    else:
        build = _vae
        data = (DynamicallyBinarized(small_data[0]), small_data[1])  # draws from the RNG per item
        epochs = 2
    _fit(build(), data, tmp_path / "straight", epochs=epochs)
    _fit(build(), data, tmp_path / "resumed", epochs=epochs - 1)
    _fit(build(), data, tmp_path / "resumed", epochs=epochs, resume=True)
    straight = (tmp_path / "straight" / "metrics.csv").read_text()
    resumed = (tmp_path / "resumed" / "metrics.csv").read_text()
    assert straight.count("\n") == epochs + 1
    assert resumed == straight
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_resume_without_checkpoint_starts_fresh(tmp_path, small_data):
    history = _fit(_vae(), small_data, tmp_path, epochs=1, resume=True)
    assert len(history) == 1
    # and a finished run resumed with the same epoch count trains nothing more
    assert _fit(_vae(), small_data, tmp_path, epochs=1, resume=True) == history


def _killed_when(function, epoch_of):
    """``function`` that raises KeyboardInterrupt (a kill) instead of running for epoch 2."""
    def killed(*args):
        if epoch_of(*args) == 2:
            raise KeyboardInterrupt
        return function(*args)
    return killed


def test_metrics_never_run_ahead_of_the_checkpoint(tmp_path, small_data, monkeypatch):
    # killed while writing the checkpoint of epoch 2: metrics.csv must not hold epoch 2 either
    with monkeypatch.context() as patch:
        patch.setattr(train, "save_checkpoint", _killed_when(train.save_checkpoint, lambda path, payload: payload["epoch"]))
        with pytest.raises(KeyboardInterrupt):
            _fit(_vae(), small_data, tmp_path, epochs=3)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert [row["epoch"] for row in _rows(tmp_path / "metrics.csv")] == ["1"]
    # killed after the checkpoint of epoch 2, before its row: resuming writes the row first
    with monkeypatch.context() as patch:
        patch.setattr(train, "_write_metrics_csv", _killed_when(train._write_metrics_csv, lambda path, rows: len(rows)))
        with pytest.raises(KeyboardInterrupt):
            _fit(_vae(), small_data, tmp_path, epochs=3, resume=True)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    _fit(_vae(), small_data, tmp_path, epochs=2, resume=True)
    assert [row["epoch"] for row in _rows(tmp_path / "metrics.csv")] == ["1", "2"]


@pytest.mark.parametrize("epochs", [2, 1])
def test_resume_with_nothing_left_to_train_says_so(tmp_path, small_data, epochs):
    history = _fit(_vae(), small_data, tmp_path, epochs=2)
    messages = []
    assert fit(_vae(), small_data[0], eval_data=small_data[1], out_dir=tmp_path, epochs=epochs, batch_size=32,
               resume=True, progress=False, log=messages.append) == history
    assert any(message.startswith(f"nothing to train: {tmp_path / 'checkpoint.pt'} is at epoch 2 and epochs={epochs} "
                                  f"counts all epochs of the run; ask for more than 2 to train on")
               for message in messages), messages


_KILLED_WRITER = """
import os, signal, sys
# what a kill inside _atomic_write leaves: a partial .NAME.tmp-PID beside NAME
with open(f".{sys.argv[1]}.tmp-{os.getpid()}", "wb") as handle:
    handle.write(b"PK partial archive")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_stale_temporaries_of_killed_writes_are_removed(tmp_path, small_data):
    _fit(_vae(), small_data, tmp_path)
    for folder, name in ((tmp_path, "checkpoint.pt"), (tmp_path / "samples", "epoch_002.png")):
        killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, name], cwd=folder)
        assert killed.returncode == -signal.SIGKILL
    stale = sorted(tmp_path.glob("**/.*.tmp-*"))
    assert len(stale) == 2
    # the temporary of a live process (another writer, right now) is left alone
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        busy = tmp_path / f".metrics.csv.tmp-{live.pid}"
        busy.write_text("being written")
        messages = []
        try:
            _fit(_vae(), small_data, tmp_path, epochs=2, resume=True, log=messages.append)
        finally:
            live.kill()
    assert not any(path.exists() for path in stale)
    assert busy.read_text() == "being written"
    for path in stale:
        assert f"removed {path}, left by a write that was interrupted" in messages
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2


def test_corrupted_or_truncated_checkpoint_gives_a_clear_error(tmp_path, small_data):
    _fit(_vae(), small_data, tmp_path)
    path = tmp_path / "checkpoint.pt"
    good = path.read_bytes()
    for damaged in (good[: len(good) // 2], b"definitely not a checkpoint", b""):
        path.write_bytes(damaged)
        with pytest.raises(CheckpointError, match=f"checkpoint {path} is corrupted or truncated"):
            _fit(_vae(), small_data, tmp_path, epochs=2, resume=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def _flip_a_weight_byte(path: Path) -> None:
    """Flip one bit in the middle of a tensor's storage; the zip's structure stays intact."""
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if re.search(r"/data/\d+$", info.filename))
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[member.header_offset + 26:member.header_offset + 30])
    data_start = member.header_offset + 30 + name_length + extra_length
    raw[data_start + member.file_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_checkpoint_with_a_flipped_weight_byte_is_refused(tmp_path, small_data):
    _fit(_vae(), small_data, tmp_path)
    path = tmp_path / "checkpoint.pt"
    good = torch.load(path, weights_only=True)["model"]
    _flip_a_weight_byte(path)
    # torch.load itself does not notice: the damage would load silently
    damaged = torch.load(path, weights_only=True)["model"]
    assert any(not torch.equal(good[key], damaged[key]) for key in good)
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(path))} is corrupted: .*/data/\d+ fails "
                                              r"its CRC-32 check.*restore it from a copy"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="fails its CRC-32 check"):
        _fit(_vae(), small_data, tmp_path, epochs=2, resume=True)


class _Payload:
    """Stands for arbitrary pickled code: weights_only loading must refuse it."""


def test_checkpoint_with_code_is_refused_without_suggesting_to_run_it(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "fastgen.checkpoint", "object": _Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} holds objects that are not plain tensors")
    assert "_Payload" in message and "will not be loaded" in message
    # torch's hint (retry with weights_only=False) would run the payload; the file is not damaged either
    for misleading in ("weights_only", "can still be loaded", "corrupted", "truncated"):
        assert misleading not in message


def test_checkpoint_of_another_architecture_is_refused(tmp_path, small_data):
    _fit(_vae(), small_data, tmp_path)
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="does not match the model"):
        _fit(VAE.mlp(SHAPE, latent_dim=4, hidden=24), small_data, tmp_path, epochs=2, resume=True)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, small_data):
    _fit(_vae(), small_data, tmp_path)
    metrics = (tmp_path / "metrics.csv").read_text()
    torch.manual_seed(0)
    beta_vae = BetaVAE.mlp(SHAPE, latent_dim=4, hidden=32)  # same networks: its state dict loads into a VAE's
    with pytest.raises(CheckpointError, match=r"belongs to another run \(model: VAE in the checkpoint, BetaVAE now; "
                                              r"model\.beta: 1\.0 in the checkpoint, 4\.0 now\); resume with the "
                                              r"settings it was written with, or choose another output folder"):
        _fit(beta_vae, small_data, tmp_path, epochs=2, resume=True)
    with pytest.raises(CheckpointError, match=r"\(batch_size: 32 in the checkpoint, 16 now\)"):
        _fit(_vae(), small_data, tmp_path, epochs=2, resume=True, batch_size=16)
    with pytest.raises(CheckpointError, match=r"\(seed: 0 in the checkpoint, 5 now\)"):
        _fit(_vae(), small_data, tmp_path, epochs=2, resume=True, seed=5)
    # other images of the same count and shape (MNIST and Fashion-MNIST, say)
    other = (TensorDataset(1 - small_data[0].tensors[0], small_data[0].tensors[1]), small_data[1])
    with pytest.raises(CheckpointError, match=r"\(training data: TensorDataset of 256 items, digest \w+ in the "
                                              r"checkpoint, TensorDataset of 256 items, digest \w+ now\)"):
        _fit(_vae(), other, tmp_path, epochs=2, resume=True)
    binarized = (DynamicallyBinarized(small_data[0]), small_data[1])
    with pytest.raises(CheckpointError, match=r"training data: TensorDataset .* in the checkpoint, dynamically "
                                              r"binarized TensorDataset"):
        _fit(_vae(), binarized, tmp_path, epochs=2, resume=True)
    assert (tmp_path / "metrics.csv").read_text() == metrics  # nothing appended by any refused run
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


class _ExplodingVAE(VAE):
    """Turns a weight into NaN before step number `explode_at`."""

    explode_at = 12

    def step(self, batch):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.explode_at:
            with torch.no_grad():
                next(self.decoder.parameters()).fill_(float("nan"))
        return super().step(batch)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, small_data):
    torch.manual_seed(0)
    model = _ExplodingVAE.mlp(SHAPE, latent_dim=4, hidden=32)
    # 8 steps per epoch: step 12 is batch 4 of epoch 2
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 12 \(batch 4 of the epoch\).*non-finite loss") as info:
        _fit(model, small_data, tmp_path, epochs=3)
    assert str(tmp_path / "checkpoint.pt") in str(info.value) and "left intact" in str(info.value)
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert len(_rows(tmp_path / "metrics.csv")) == 1


def test_amp_trains_in_bfloat16(tmp_path, small_data):
    model = _vae()
    dtypes = set()
    model.decoder.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    history = _fit(model, small_data, tmp_path, amp=True)
    assert torch.bfloat16 in dtypes
    assert all(value == value for value in history[0].values())  # no NaN
    assert model._autocast_device is None  # fit switches autocast off again


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("epochs", 0, "epochs must be a positive int"),
    ("batch_size", -1, "batch_size must be a positive int"),
    ("device", "tpu", "device must be a torch device"),
    ("plot_every", 0, "plot_every must be a positive int"),
])
def test_bad_arguments_are_named(tmp_path, small_data, argument, value, message):
    with pytest.raises(ValueError, match=message):
        _fit(_vae(), small_data, tmp_path, **{argument: value})


@pytest.mark.parametrize(("model", "kwargs", "error", "message"), [
    (_vae, {"cuda_graph": "yes"}, TypeError, "cuda_graph must be True or False, got 'yes'"),
    (_vae, {"cuda_graph": True}, ValueError, "cuda_graph=True needs a CUDA device, got device='cpu'"),
    (lambda: WGAN.mlp(SHAPE, latent_dim=4, hidden=32), {"cuda_graph": True}, ValueError,
     "cuda_graph=True captures the step of the VAE family .*; WGAN's step cannot be captured"),
])
def test_cuda_graph_refusals_are_named(tmp_path, small_data, model, kwargs, error, message):
    with pytest.raises(error, match=message):
        _fit(model(), small_data, tmp_path, **kwargs)


def test_cuda_graph_refuses_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"cuda_graph=True trains on one process; under torchrun \(WORLD_SIZE=2\)"):
        train._check_cuda_graph(True, _vae(), torch.device("cuda"))


def _can_create_files_in(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder in which this user cannot create files: mode 0555, and for root (whom
    permissions do not stop) also the immutable attribute."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = (_can_create_files_in(folder) and shutil.which("chattr") is not None
                 and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0)
    try:
        if _can_create_files_in(folder):
            pytest.skip("cannot make a folder unwritable here: running as root and chattr +i is not supported")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_unwritable_output_folder_fails_before_training(unwritable_folder, small_data):
    model = _vae()
    steps = []
    train_step = model.step
    model.step = lambda batch: steps.append(batch) or train_step(batch)
    with pytest.raises(OutputError, match=rf"output folder {unwritable_folder} is not writable \(.+\); "
                                          r"choose another folder or make this one writable"):
        _fit(model, small_data, unwritable_folder)
    assert steps == []  # refused before the first step, not after an epoch of work


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, small_data):
    with pytest.raises(ValueError, match="CUDA is not available"):
        _fit(_vae(), small_data, tmp_path, device="cuda")


_DDP_SCRIPT = textwrap.dedent("""
    import os, sys
    import torch
    import torch.distributed as dist
    from torch.utils.data import TensorDataset
    from fastgen.data import digits
    from fastgen.models import VAE, WGANGP
    from fastgen.train import fit

    torch.set_num_threads(1)
    out = sys.argv[1]
    dist.init_process_group("gloo")  # fit reuses an existing group (and leaves it to us)
    rank = dist.get_rank()
    train, test = digits()
    data = TensorDataset(*(t[:128] for t in train.tensors))
    builders = {
        # Gaussian likelihood: its learned noise parameter lies outside the DDP-wrapped networks
        "vae": lambda: VAE.mlp((1, 8, 8), latent_dim=4, hidden=16, likelihood="gaussian"),
        # gradient penalty: double backward through the DDP-wrapped critic
        "wgangp": lambda: WGANGP.mlp((1, 8, 8), latent_dim=4, hidden=16, n_critic=2),
    }
    for name, build in builders.items():
        torch.manual_seed(100 + rank)  # different init per rank: fit must start all from rank 0's
        model = build()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        fit(model, data, eval_data=TensorDataset(*(t[:32] for t in test.tensors)), epochs=1, batch_size=16,
            out_dir=os.path.join(out, name), progress=False, log=lambda message: None)
        torch.save({"initial": initial, "final": model.state_dict()}, os.path.join(out, f"{name}-rank{rank}.pt"))
    dist.destroy_process_group()
""")


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(_DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
         str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("vae", "wgangp"):
        ranks = [torch.load(tmp_path / "out" / f"{name}-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
        assert any(not torch.equal(ranks[0]["initial"][k], ranks[1]["initial"][k]) for k in ranks[0]["initial"])
        final0, final1 = ranks[0]["final"], ranks[1]["final"]
        for key in final0:
            assert torch.equal(final0[key], final1[key]), f"{name}: {key} differs between ranks"
        assert any(not torch.equal(final0[k], ranks[0]["initial"][k]) for k in final0)  # it trained
        rows = _rows(tmp_path / "out" / name / "metrics.csv")
        # each rank reads half of the 128 samples: 4 steps of 16 per epoch
        assert len(rows) == 1 and rows[0]["step"] == "4"
        assert load_checkpoint(tmp_path / "out" / name / "checkpoint.pt")["world_size"] == 2
