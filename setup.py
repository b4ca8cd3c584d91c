"""Builds fastgen's extensions with torch.utils.cpp_extension and ninja.

* `fastgen._C`: the op layer (csrc/fastgen.cpp, csrc/ops) and, when torch has
  CUDA and nvcc is found, the CUDA kernels (csrc/cuda). FASTGEN_CUDA=1 forces
  them in, FASTGEN_CUDA=0 leaves them out.
* `fastgen._cpu_<isa>`: the CPU kernels (csrc/cpu), compiled once per SIMD
  level of at::vec: `default` everywhere, and `avx2` and `avx512` on x86-64.
  At import fastgen loads the highest level the CPU runs (as ATen chooses its
  own kernels), so one build runs on any machine; FASTGEN_CPU_ISA=avx2 (say)
  forces a level at import time.

Host code is built without debug info (-g0: Python's default -g cost 2.7x
the compile time and tripled the size); FASTGEN_DEBUG_INFO=1 keeps it.
FASTGEN_CPU_ISAS=avx512 (say; a comma list) builds only those SIMD levels of
the CPU kernels (tools/gpu_check.sh builds the one its machine runs).
FASTGEN_BUILD_EXT=0 installs the Python package alone (the Makefile then
builds the extensions in place, incrementally, with
`setup.py build_ext --inplace`).

Install with `pip install --no-build-isolation .` so that the torch already
installed (a CUDA build, say) is the one compiled against.
"""

import glob
import os
import platform
import shutil

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """The CUDA toolkit's folder, for torch to compile and link against.

    torch guesses CUDA_HOME from the nvcc on the PATH, two folders up; an nvcc
    that is a wrapper script (/usr/local/bin/nvcc running
    /usr/local/cuda-13.0/bin/nvcc) makes that /usr/local, which has no
    cuda_runtime.h. Prefer CUDA_HOME or CUDA_PATH when set, then that guess
    if it holds the headers, then /usr/local/cuda and /usr/local/cuda-*.
    """
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(name):
            return os.environ[name]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for home in candidates:
        if os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")) and os.path.isfile(
            os.path.join(home, "bin", "nvcc")
        ):
            return home
    return None


if find_cuda_home():
    os.environ.setdefault("CUDA_HOME", find_cuda_home())

# After CUDA_HOME is settled: torch reads it when this module is imported.
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

INCLUDE_DIRS = [os.path.join(HERE, "csrc"), os.path.join(HERE, "csrc", "include")]
DEBUG_INFO = [] if os.environ.get("FASTGEN_DEBUG_INFO", "0") == "1" else ["-g0"]
# -fopenmp: at::parallel_for is an inline OpenMP region; without it every
# kernel would run on one thread. The GOMP symbols resolve to the OpenMP
# runtime torch itself loads (no -lgomp), so there is one thread pool.
CXX = ["-O3", "-fvisibility=hidden", "-fopenmp"] + DEBUG_INFO

# at::vec's SIMD levels: compiler flags and the macros that select at::vec's
# implementation (ATen's own CPU_CAPABILITY builds use the same).
CPU_ISAS = {"default": []}
if platform.machine().lower() in ("x86_64", "amd64"):
    CPU_ISAS["avx2"] = ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    CPU_ISAS["avx512"] = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
                          "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]


if os.environ.get("FASTGEN_CPU_ISAS"):
    _wanted = [isa.strip() for isa in os.environ["FASTGEN_CPU_ISAS"].split(",") if isa.strip()]
    _unknown = [isa for isa in _wanted if isa not in CPU_ISAS]
    if _unknown:
        raise SystemExit(f"FASTGEN_CPU_ISAS: unknown SIMD level(s) {', '.join(_unknown)}; "
                         f"this machine builds {', '.join(CPU_ISAS)}")
    CPU_ISAS = {isa: flags for isa, flags in CPU_ISAS.items() if isa in _wanted}


def want_cuda():
    switch = os.environ.get("FASTGEN_CUDA", "auto").lower()
    if switch in ("0", "off", "false"):
        return False
    import torch

    found = torch.version.cuda is not None and CUDA_HOME is not None
    if switch in ("1", "on", "true"):
        if not found:
            raise SystemExit(
                "FASTGEN_CUDA=1 but "
                + ("torch has no CUDA" if torch.version.cuda is None else "no CUDA toolkit was found: set CUDA_HOME")
            )
        return True
    return found


def op_layer():
    sources = ["csrc/fastgen.cpp"] + sorted(glob.glob("csrc/ops/*.cpp"))
    if want_cuda():
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension("fastgen._C", sources, include_dirs=INCLUDE_DIRS,
                             extra_compile_args={"cxx": CXX + ["-DFASTGEN_WITH_CUDA"], "nvcc": nvcc})
    return CppExtension("fastgen._C", sources, include_dirs=INCLUDE_DIRS, extra_compile_args={"cxx": CXX})


def cpu_kernels(isa, flags):
    sources = sorted(glob.glob("csrc/cpu/*.cpp"))
    return CppExtension(f"fastgen._cpu_{isa}", sources, include_dirs=INCLUDE_DIRS,
                        extra_compile_args={"cxx": CXX + flags + [f"-DFASTGEN_CPU_MODULE=_cpu_{isa}"]})


class Build(BuildExtension.with_options(use_ninja=True)):
    """One object folder per extension: the same CPU sources, compiled for each
    SIMD level, must not overwrite each other (and stay incremental)."""

    def build_extension(self, ext):
        base = self.build_temp
        self.build_temp = os.path.join(base, ext.name)
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base


setup(
    packages=["fastgen", "fastgen.models", "fastgen.kernels"],
    package_dir={"fastgen": "fastgen", "fastgen.kernels": "kernels"},
    ext_modules=[]
    if os.environ.get("FASTGEN_BUILD_EXT", "1") == "0"
    else [op_layer()] + [cpu_kernels(isa, flags) for isa, flags in CPU_ISAS.items()],
    cmdclass={"build_ext": Build},
)
