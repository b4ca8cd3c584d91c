// The two op namespaces of fastgen. Each op's schemas are defined once, in
// csrc/ops/<op>.cpp, and into both namespaces: "fastgen", whose kernel ops
// are the C++ CPU and CUDA kernels (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cpp),
// and "fastgen_triton", whose kernel ops are the Triton kernels of kernels/,
// registered from Python. Public ops (`gaussian_kl`) take the user's
// arguments; kernel ops (`_gaussian_kl`, `_gaussian_kl_backward`) take the
// operands as csrc/row_shape.h describes and are called only by the op layer.
#include <Python.h>
#include <torch/library.h>

// The extension is loaded as a Python module so that `import fastgen._C`
// registers the ops; it has no Python functions of its own.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(fastgen, m) {}
TORCH_LIBRARY(fastgen_triton, m) {}
