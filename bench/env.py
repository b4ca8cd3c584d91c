"""The environment a benchmark row was measured in: device name and slug, library versions."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re

import torch


def cpu_model() -> str:
    """The CPU model name as the kernel reports it (``/proc/cpuinfo``), else ``platform``'s."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def device_name(device: torch.device) -> str:
    """A human-readable name of the device the benchmark runs on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def slugify(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def device_slug(device: torch.device) -> str:
    """File-name slug of the device: ``cpu-amd-epyc``, ``nvidia-h100-80gb-hbm3``."""
    name = slugify(device_name(device))
    if device.type == "cpu":
        name = name if name.startswith("cpu") else "cpu-" + name
    return name


def versions() -> dict:
    """torch / triton / CUDA / fastgen versions ("" where a component is absent)."""
    try:
        import triton

        triton_v = triton.__version__
    except Exception:  # triton is optional
        triton_v = ""
    try:
        import fastgen

        fastgen_v = getattr(fastgen, "__version__", "")
    except Exception:
        fastgen_v = ""
    return {
        "torch": torch.__version__,
        "triton": triton_v,
        "cuda": torch.version.cuda or "",
        "fastgen": fastgen_v,
    }


def now_iso() -> str:
    """Local time of the run start, to the second; identical for every row of one run."""
    return _dt.datetime.now().astimezone().replace(microsecond=0).isoformat()


def load_note() -> str:
    """1-minute load average against the core count: measurements on a busy host are noisy."""
    try:
        l1, _, _ = os.getloadavg()
    except OSError:
        return "load n/a"
    return f"load {l1:.2f} on {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
