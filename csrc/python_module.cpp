// Entry point of the Python extension module sam_fused._C. The module itself is empty:
// loading it runs the TORCH_LIBRARY registrations of the library's other files. Kept apart
// so the CMake build of the library for C++ users needs no Python.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "sam_fused kernels (ops under torch.ops.sam_fused)", -1,
                                   nullptr};
  return PyModule_Create(&def);
}
