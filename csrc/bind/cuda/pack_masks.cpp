// Compiled only when the CUDA part is built (setup.py adds bind/cuda/).
#include "../../bind.h"
#include "../../ops.h"

NNP_BIND(pack_masks_cuda) {
  using namespace nnp::bind;
  m.def("pack_masks_cuda", [](uintptr_t acts, int kind, int64_t S, int64_t N, int64_t rs, uintptr_t out,
                              int64_t row_bytes, uintptr_t flags, bool check_finite, int device, uintptr_t stream) {
    py::gil_scoped_release nogil;
    check(nnp::pack_masks_cuda(acts, kind, S, N, rs, out, row_bytes, flags, check_finite, device, stream));
  });
}
