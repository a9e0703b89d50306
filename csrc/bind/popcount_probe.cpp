#include "../bind.h"
#include "../ops.h"

NNP_BIND(popcount_probe) {
  using namespace nnp::bind;
  m.def(
      "popcount_probe",
      [](py::array data, int64_t repeats, int threads) {
        const auto* d = static_cast<const uint64_t*>(data.data());
        const int64_t words = data.nbytes() / 8;
        py::gil_scoped_release nogil;
        return nnp::popcount_probe_cpu(d, words, repeats, threads);
      },
      py::arg("data"), py::arg("repeats"), py::arg("threads"));
}
