// What the binding files share. Each file under bind/ (bind/cuda/ when the CUDA
// part is built) defines the Python functions of one kernel with NNP_BIND and
// registers them itself, so adding a kernel adds files and edits no list.
// Arrays arrive as NumPy buffers already validated by nnphases.kernels; every
// pointer and size is read before the GIL is released (py::array accessors may
// touch reference counts, which pybind11 checks), and the GIL is released around
// every kernel so callers' threads keep running.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

namespace nnp::bind {

namespace py = pybind11;
using Binder = void (*)(py::module_&);

// Registers a file's binder under its name; bindings.cpp runs them in name order.
int add(const char* name, Binder binder);

template <typename T = void>
T* ptr(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}

// Row stride in elements of a [samples, nodes] array whose nodes are adjacent (the
// stride of an axis of extent 1 is never used). The boundary copies every other
// layout (nnphases/kernels/_arrays.py); this refuses rather than misread one that
// slipped past it.
int64_t row_stride(const py::array& a);

// Raises a CUDA launcher's error string (empty or null on success) as RuntimeError.
void check(const char* err);

}  // namespace nnp::bind

#define NNP_BIND(name)                                                         \
  static void nnp_bind_##name(pybind11::module_& m);                           \
  [[maybe_unused]] static const int nnp_bind_registered_##name =               \
      nnp::bind::add(#name, nnp_bind_##name);                                  \
  static void nnp_bind_##name(pybind11::module_& m)
