// Compiled only when the CUDA part is built (setup.py adds bind/cuda/).
#include "../../bind.h"
#include "../../ops.h"

NNP_BIND(sample_popcounts_cuda) {
  using namespace nnp::bind;
  m.def("sample_popcounts_cuda", [](uintptr_t packed, int64_t N, int64_t row_bytes, int64_t samples, uintptr_t out,
                                    int device, uintptr_t stream) {
    py::gil_scoped_release nogil;
    check(nnp::sample_popcounts_cuda(packed, N, row_bytes, samples, out, device, stream));
  });
}
