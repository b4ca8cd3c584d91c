// The CPU kernels are built once per SIMD level, as Python modules
// fastgen._cpu_<isa> (setup.py names each by FASTGEN_CPU_MODULE); importing
// one registers its kernels (the TORCH_LIBRARY_IMPL blocks of csrc/cpu).
// fastgen imports exactly one, the highest level the CPU runs.
#include <Python.h>

#define FASTGEN_CONCAT_(a, b) a##b
#define FASTGEN_CONCAT(a, b) FASTGEN_CONCAT_(a, b)
#define FASTGEN_STRING_(a) #a
#define FASTGEN_STRING(a) FASTGEN_STRING_(a)

PyMODINIT_FUNC FASTGEN_CONCAT(PyInit_, FASTGEN_CPU_MODULE)(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, FASTGEN_STRING(FASTGEN_CPU_MODULE), nullptr, -1,
                                          nullptr};
  return PyModule_Create(&module_def);
}
