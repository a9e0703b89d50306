#include "../bind.h"
#include "../ops.h"

NNP_BIND(mask_overlap) {
  using namespace nnp::bind;
  m.def(
      "mask_overlap",
      [](py::array a, py::array b, py::array class_offsets, py::object seg_word, py::object seg_mask,
         uint64_t last_mask, py::array inter, py::array uni, int threads) {
        const auto* pa = static_cast<const uint8_t*>(a.data());
        const auto* pb = static_cast<const uint8_t*>(b.data());
        const int64_t N = a.shape(0), row_bytes = a.shape(1), C = class_offsets.shape(0) - 1;
        const auto* off = static_cast<const int64_t*>(class_offsets.data());
        // None for both: whole rows (one class of every sample).
        const auto* word = seg_word.is_none() ? nullptr : static_cast<const int64_t*>(seg_word.cast<py::array>().data());
        const auto* mask =
            seg_mask.is_none() ? nullptr : static_cast<const uint64_t*>(seg_mask.cast<py::array>().data());
        int64_t* i = ptr<int64_t>(inter);
        int64_t* u = ptr<int64_t>(uni);
        py::gil_scoped_release nogil;
        nnp::mask_overlap_cpu(pa, pb, N, row_bytes, off, C, word, mask, last_mask, i, u, threads);
      },
      py::arg("a"), py::arg("b"), py::arg("class_offsets"), py::arg("seg_word"), py::arg("seg_mask"),
      py::arg("last_mask"), py::arg("inter"), py::arg("uni"), py::arg("threads"));
}
