#include "../bind.h"
#include "../cpu/count_and_pack.h"

NNP_BIND(count_and_pack) {
  using namespace nnp::bind;
  m.def(
      "count_and_pack",
      [](py::array acts, int kind, py::array labels, int64_t num_classes, py::array out, py::array packed,
         bool check_finite, int threads) {
        const void* a = acts.data();
        const int64_t S = acts.shape(0), N = acts.shape(1), rs = row_stride(acts), row_bytes = packed.shape(1);
        const auto* lab = static_cast<const int32_t*>(labels.data());
        void* o = ptr(out);
        const int out_bytes = static_cast<int>(out.itemsize());
        uint8_t* p = ptr<uint8_t>(packed);
        py::gil_scoped_release nogil;
        return nnp::count_and_pack_cpu(a, kind, S, N, rs, lab, num_classes, o, out_bytes, p, row_bytes,
                                       check_finite, threads);
      },
      py::arg("acts"), py::arg("kind"), py::arg("labels"), py::arg("num_classes"), py::arg("out"),
      py::arg("packed"), py::arg("check_finite"), py::arg("threads"));
}
