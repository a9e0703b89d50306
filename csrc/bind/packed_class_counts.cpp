#include "../bind.h"
#include "../ops.h"

NNP_BIND(packed_class_counts) {
  using namespace nnp::bind;
  m.def(
      "packed_class_counts",
      [](py::array packed, py::array class_offsets, py::array seg_word, py::array seg_mask, py::array out,
         int threads) {
        const auto* p = static_cast<const uint8_t*>(packed.data());
        const int64_t N = packed.shape(0), row_bytes = packed.shape(1), C = class_offsets.shape(0) - 1;
        const auto* off = static_cast<const int64_t*>(class_offsets.data());
        const auto* word = static_cast<const int64_t*>(seg_word.data());
        const auto* mask = static_cast<const uint64_t*>(seg_mask.data());
        int64_t* o = ptr<int64_t>(out);
        py::gil_scoped_release nogil;
        nnp::packed_class_counts_cpu(p, N, row_bytes, off, C, word, mask, o, threads);
      },
      py::arg("packed"), py::arg("class_offsets"), py::arg("seg_word"), py::arg("seg_mask"), py::arg("out"),
      py::arg("threads"));
}
