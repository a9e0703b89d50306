// Compiled only when the CUDA part is built (setup.py adds bind/cuda/).
#include "../../bind.h"
#include "../../ops.h"

NNP_BIND(class_counts_cuda) {
  using namespace nnp::bind;
  m.def("class_counts_cuda", [](uintptr_t acts, int kind, int64_t S, int64_t N, int64_t rs, uintptr_t labels,
                                int label_bytes, int64_t C, uintptr_t out, int out_bytes, bool accumulate,
                                uintptr_t work, uintptr_t flags, bool check_finite, int device, uintptr_t stream) {
    py::gil_scoped_release nogil;
    check(nnp::class_counts_cuda(acts, kind, S, N, rs, labels, label_bytes, C, out, out_bytes, accumulate, work, flags,
                                 check_finite, device, stream));
  });
}
