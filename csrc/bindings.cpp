// The only PYBIND11_MODULE and the only CUDA #ifdef: it runs the binders every
// file under bind/ registered (see bind.h), in name order so the module is the
// same whatever order the linker ran the files' initialisers in.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bind.h"
#include "ops.h"

namespace nnp::bind {

namespace {
std::vector<std::pair<std::string, Binder>>& registry() {
  static std::vector<std::pair<std::string, Binder>> r;  // built on first use: initialisers run in any order
  return r;
}
}  // namespace

int add(const char* name, Binder binder) {
  registry().emplace_back(name, binder);
  return static_cast<int>(registry().size());
}

int64_t row_stride(const py::array& a) {
  const int64_t item = a.itemsize();
  if (a.ndim() != 2) throw std::invalid_argument("acts must be 2-D");
  if (a.shape(0) == 0 || a.shape(1) == 0) return 0;  // nothing is read (NumPy gives empty arrays 0 strides)
  if ((a.shape(1) > 1 && a.strides(1) != item) || (a.shape(0) > 1 && a.strides(0) % item != 0) ||
      reinterpret_cast<uintptr_t>(a.data()) % item != 0)
    throw std::invalid_argument("acts must have adjacent, aligned nodes and whole-element row strides");
  return a.strides(0) / item;
}

void check(const char* err) {
  if (err && *err) throw std::runtime_error(std::string("CUDA error: ") + err);
}

}  // namespace nnp::bind

PYBIND11_MODULE(_C, m) {
  m.doc() = "nnphases native kernels (CPU, and CUDA when built with nvcc).";
  auto binders = nnp::bind::registry();
  std::sort(binders.begin(), binders.end());
  for (const auto& [name, binder] : binders) binder(m);
  m.attr("direct_table_bytes") = nnp::kDirectTableBytes;
#ifdef NNPHASES_WITH_CUDA
  m.attr("has_cuda") = true;
  m.def("cuda_device_report", []() { return std::string(nnp::cuda_device_report()); });
#else
  m.attr("has_cuda") = false;
#endif
}
