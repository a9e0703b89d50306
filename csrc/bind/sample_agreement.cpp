#include "../bind.h"
#include "../ops.h"

NNP_BIND(sample_agreement) {
  using namespace nnp::bind;
  m.def(
      "sample_agreement",
      [](py::array packed, py::array idx, py::array out, int threads) {
        const auto* p = static_cast<const uint8_t*>(packed.data());
        const int64_t N = packed.shape(0), row_bytes = packed.shape(1), count = idx.shape(0);
        const auto* i = static_cast<const int64_t*>(idx.data());
        int64_t* o = ptr<int64_t>(out);
        py::gil_scoped_release nogil;
        nnp::sample_agreement_cpu(p, N, row_bytes, i, count, o, threads);
      },
      py::arg("packed"), py::arg("idx"), py::arg("out"), py::arg("threads"));
}
