// Compiled only when the CUDA part is built (setup.py adds bind/cuda/).
#include "../../bind.h"
#include "../../ops.h"

NNP_BIND(mask_overlap_cuda) {
  using namespace nnp::bind;
  m.def("mask_overlap_cuda", [](uintptr_t a, uintptr_t b, int64_t N, int64_t row_bytes, uintptr_t class_offsets,
                                int64_t C, uintptr_t seg_word, uintptr_t seg_mask, uint64_t last_mask, uintptr_t out,
                                int device, uintptr_t stream) {
    py::gil_scoped_release nogil;
    check(nnp::mask_overlap_cuda(a, b, N, row_bytes, class_offsets, C, seg_word, seg_mask, last_mask, out, device,
                                 stream));
  });
}
