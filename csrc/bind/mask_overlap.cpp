#include "../bind.h"
#include "../ops.h"

NNP_BIND(mask_overlap) {
  using namespace nnp::bind;
  m.def(
      "mask_overlap",
      [](py::array a, py::array b, py::array class_offsets, py::array seg_word, py::array seg_mask, py::array inter,
         py::array uni, int threads) {
        const auto* pa = static_cast<const uint8_t*>(a.data());
        const auto* pb = static_cast<const uint8_t*>(b.data());
        const int64_t N = a.shape(0), row_bytes = a.shape(1), C = class_offsets.shape(0) - 1;
        const auto* off = static_cast<const int64_t*>(class_offsets.data());
        const auto* word = static_cast<const int64_t*>(seg_word.data());
        const auto* mask = static_cast<const uint64_t*>(seg_mask.data());
        int64_t* i = ptr<int64_t>(inter);
        int64_t* u = ptr<int64_t>(uni);
        py::gil_scoped_release nogil;
        nnp::mask_overlap_cpu(pa, pb, N, row_bytes, off, C, word, mask, i, u, threads);
      },
      py::arg("a"), py::arg("b"), py::arg("class_offsets"), py::arg("seg_word"), py::arg("seg_mask"),
      py::arg("inter"), py::arg("uni"), py::arg("threads"));
}
