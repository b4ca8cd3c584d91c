"""Builds fastgen's extension with torch.utils.cpp_extension and ninja.

The CPU kernels (csrc/cpu) are always built. The CUDA kernels (csrc/cuda) are
added when torch has CUDA and nvcc is found; FASTGEN_CUDA=1 forces them in and
FASTGEN_CUDA=0 leaves them out. The CPU kernels use the SIMD instruction set
torch dispatches to on the build machine (AVX512 or AVX2 on x86);
FASTGEN_CPU_ISA=avx2|avx512|default overrides the choice. FASTGEN_BUILD_EXT=0
installs the Python package alone (the Makefile then builds the extension in
place, incrementally, with `setup.py build_ext --inplace`).

Install with `pip install --no-build-isolation .` so that the torch already
installed (a CUDA build, say) is the one compiled against.
"""

import glob
import os

from setuptools import setup

from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_isa_flags():
    """Compiler flags selecting at::vec's SIMD implementation for the CPU kernels.

    `auto` takes the level torch itself dispatches to on the build machine
    (which honours ATEN_CPU_CAPABILITY).
    """
    choice = os.environ.get("FASTGEN_CPU_ISA", "auto").lower()
    if choice == "auto":
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
        choice = {"AVX512": "avx512", "AVX2": "avx2"}.get(capability, "default")
    if choice == "avx2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    if choice == "avx512":
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
                "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if choice == "default":
        return []
    raise SystemExit(f"FASTGEN_CPU_ISA must be auto, avx2, avx512 or default, got {choice!r}")


def want_cuda():
    switch = os.environ.get("FASTGEN_CUDA", "auto").lower()
    if switch in ("0", "off", "false"):
        return False
    import torch

    found = torch.version.cuda is not None and CUDA_HOME is not None
    if switch in ("1", "on", "true"):
        if not found:
            raise SystemExit("FASTGEN_CUDA=1 but torch has no CUDA or nvcc was not found (CUDA_HOME)")
        return True
    return found


def extension():
    sources = ["csrc/fastgen.cpp"] + sorted(glob.glob("csrc/ops/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(HERE, "csrc"), os.path.join(HERE, "csrc", "include")]
    # -fopenmp: at::parallel_for is an inline OpenMP region; without it every
    # kernel would run on one thread. The GOMP symbols resolve to the OpenMP
    # runtime torch itself loads (no -lgomp), so there is one thread pool.
    # -g0 after Python's own -g: host debug info cost 2.7x the compile time and
    # tripled the extension's size; FASTGEN_DEBUG_INFO=1 keeps it.
    debug_info = [] if os.environ.get("FASTGEN_DEBUG_INFO", "0") == "1" else ["-g0"]
    cxx = ["-O3", "-fvisibility=hidden", "-fopenmp"] + debug_info + cpu_isa_flags()
    if want_cuda():
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension("fastgen._C", sources, include_dirs=include_dirs,
                             extra_compile_args={"cxx": cxx + ["-DFASTGEN_WITH_CUDA"], "nvcc": nvcc},
                             define_macros=[("FASTGEN_WITH_CUDA", None)])
    return CppExtension("fastgen._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx})


setup(
    packages=["fastgen", "fastgen.models", "fastgen.kernels"],
    package_dir={"fastgen": "fastgen", "fastgen.kernels": "kernels"},
    ext_modules=[] if os.environ.get("FASTGEN_BUILD_EXT", "1") == "0" else [extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
