// Entry point of the Python extension module sam_fused._C. The module itself is empty:
// loading it runs the TORCH_LIBRARY registrations of the library's other files. Kept apart
// so the CMake build of the library for C++ users needs no Python. It also installs the GIL
// release that the backward op's double-backward path needs (autograd/composite.h).
#include <Python.h>

#include "autograd/composite.h"

// PyGILState_Check is exported by every CPython 3 but is not in the limited API's headers.
extern "C" int PyGILState_Check(void);

namespace {
// sam_fused::without_gil's release: f() with the GIL released if this thread holds it. An
// exception from f passes through with the GIL taken back.
void call_without_gil(c10::function_ref<void()> f) {
  if (!PyGILState_Check()) return f();
  PyThreadState* state = PyEval_SaveThread();
  try {
    f();
  } catch (...) {
    PyEval_RestoreThread(state);
    throw;
  }
  PyEval_RestoreThread(state);
}
}  // namespace

extern "C" PyObject* PyInit__C(void) {
  sam_fused::set_gil_releaser(&call_without_gil);
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "sam_fused kernels (ops under torch.ops.sam_fused)", -1,
                                   nullptr};
  return PyModule_Create(&def);
}
