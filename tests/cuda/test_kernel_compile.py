"""The CUDA kernel sources compile without torch, for sm_80 and sm_90.

Every csrc/cuda/*.cu includes only CUDA headers and csrc/include/fastgen, so
nvcc alone builds it; this runs on any machine with nvcc, GPU or not, and
catches a broken kernel before a CUDA build of the extension is attempted.
The files compile in parallel, one nvcc call per file for both architectures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
KERNEL_SOURCES = sorted(CUDA_DIR.glob("*.cu"))
# Everything the kernels include of ours: torch-free as well.
TORCH_FREE = KERNEL_SOURCES + sorted(CUDA_DIR.glob("*.cuh")) + [CUDA_DIR / "launch.h",
                                                                ROOT / "csrc" / "include" / "fastgen" / "philox_cuda.h"]
ARCHS = ("80", "90")


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


NVCC = _nvcc()


def _compile(source: Path, out_dir: Path) -> subprocess.CompletedProcess:
    # torch's CUDAExtension compiles with these: no implicit half conversions.
    no_implicit_half = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]
    command = [NVCC, "-std=c++17", "-O3", "--expt-relaxed-constexpr", *no_implicit_half,
               "-I", str(ROOT / "csrc" / "include"), "-I", str(ROOT / "csrc" / "cuda")]
    for arch in ARCHS:
        command += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    command += ["-c", str(source), "-o", str(out_dir / f"{source.stem}.o")]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """nvcc's result for every kernel source, compiled concurrently."""
    if NVCC is None:
        pytest.skip("needs nvcc (the CUDA toolkit)")
    out_dir = tmp_path_factory.mktemp("cuda-objects")
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda source: _compile(source, out_dir), KERNEL_SOURCES)
        return {source.name: result for source, result in zip(KERNEL_SOURCES, results)}


def test_every_op_has_kernels():
    """Every op of the registry has its CUDA kernels and glue, named after it (clamp_ as clamp)."""
    import fastgen

    names = {source.name for source in KERNEL_SOURCES}
    for name in fastgen.ops.REGISTRY:
        op = name.rstrip("_")
        assert f"{op}_kernels.cu" in names
        assert (CUDA_DIR / f"{op}.cpp").is_file()


@pytest.mark.parametrize("source", [source.name for source in KERNEL_SOURCES])
def test_kernel_source_compiles_without_torch(compiled, source):
    result = compiled[source]
    assert result.returncode == 0, f"nvcc failed on csrc/cuda/{source}:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("path", TORCH_FREE, ids=lambda path: path.name)
def test_kernel_side_includes_no_torch(path):
    text = path.read_text()
    for header in ("torch/", "ATen/", "c10/"):
        assert f"#include <{header}" not in text
