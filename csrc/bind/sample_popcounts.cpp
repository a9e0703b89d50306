#include "../bind.h"
#include "../ops.h"

NNP_BIND(sample_popcounts) {
  using namespace nnp::bind;
  m.def(
      "sample_popcounts",
      [](py::array packed, int64_t samples, py::array out, int threads, int strategy) {
        const auto* p = static_cast<const uint8_t*>(packed.data());
        const int64_t N = packed.shape(0), row_bytes = packed.shape(1);
        int64_t* o = ptr<int64_t>(out);
        py::gil_scoped_release nogil;
        return nnp::sample_popcounts_cpu(p, N, row_bytes, samples, o, threads, strategy);
      },
      py::arg("packed"), py::arg("samples"), py::arg("out"), py::arg("threads"),
      py::arg("strategy"));
}
