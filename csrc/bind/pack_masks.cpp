#include "../bind.h"
#include "../ops.h"

NNP_BIND(pack_masks) {
  using namespace nnp::bind;
  m.def(
      "pack_masks",
      [](py::array acts, int kind, py::array out, bool check_finite, int threads) {
        const void* a = acts.data();
        const int64_t S = acts.shape(0), N = acts.shape(1), rs = row_stride(acts), row_bytes = out.shape(1);
        uint8_t* o = ptr<uint8_t>(out);
        py::gil_scoped_release nogil;
        return nnp::pack_masks_cpu(a, kind, S, N, rs, o, row_bytes, check_finite, threads);
      },
      py::arg("acts"), py::arg("kind"), py::arg("out"), py::arg("check_finite"), py::arg("threads"));
}
