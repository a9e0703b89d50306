// Host launcher of sample_agreement for the extension; the kernels are in the .cuh.
#include <algorithm>

#include "../ops.h"
#include "launch.h"
#include "sample_agreement.cuh"

namespace nnp {

const char* sample_agreement_cuda(uintptr_t packed, int64_t N, int64_t row_bytes, uintptr_t idx, int64_t m,
                                  uintptr_t codes, uintptr_t out, int device, uintptr_t stream_) {
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_);
  cudaGetLastError();
  if (m == 0) return "";
  const int64_t code_words = (N + 63) / 64;
  auto* c = reinterpret_cast<unsigned long long*>(codes);
  if (code_words > 0) {
    const int64_t blocks = std::min<int64_t>((m * code_words + 7) / 8, static_cast<int64_t>(sm_count()) * 32);
    nnp_gather_codes<<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(
        reinterpret_cast<const unsigned char*>(packed), N, row_bytes, reinterpret_cast<const long long*>(idx), m,
        code_words, c);
  }
  // Codes are zero past the last node: no word needs masking.
  const unsigned tiles = static_cast<unsigned>((m + kGramTile - 1) / kGramTile);
  popcount_gram_kernel<true><<<dim3(tiles, tiles), kGramThreads, 0, stream>>>(c, m, code_words, ~0ull,
                                                                            reinterpret_cast<long long*>(out));
  return last_error();
}

}  // namespace nnp
