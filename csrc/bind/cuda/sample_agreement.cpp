// Compiled only when the CUDA part is built (setup.py adds bind/cuda/).
#include "../../bind.h"
#include "../../ops.h"

NNP_BIND(sample_agreement_cuda) {
  using namespace nnp::bind;
  m.def("sample_agreement_cuda", [](uintptr_t packed, int64_t N, int64_t row_bytes, uintptr_t idx, int64_t count,
                                    uintptr_t codes, uintptr_t out, int device, uintptr_t stream) {
    py::gil_scoped_release nogil;
    check(nnp::sample_agreement_cuda(packed, N, row_bytes, idx, count, codes, out, device, stream));
  });
}
