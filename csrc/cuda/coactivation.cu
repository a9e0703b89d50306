// Host launcher of coactivation for the extension; the kernel is in the .cuh.
#include "../ops.h"
#include "coactivation.cuh"
#include "launch.h"

namespace nnp {

const char* coactivation_cuda(uintptr_t packed, int64_t N, int64_t row_bytes, int64_t samples, uintptr_t out,
                              int device, uintptr_t stream_) {
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_);
  cudaGetLastError();
  if (N == 0) return "";
  const uint64_t last_mask = samples % 64 ? (uint64_t{1} << (samples % 64)) - 1 : ~uint64_t{0};
  const unsigned tiles = static_cast<unsigned>((N + kGramTile - 1) / kGramTile);
  popcount_gram_kernel<false><<<dim3(tiles, tiles), kGramThreads, 0, stream>>>(
      reinterpret_cast<const unsigned long long*>(packed), N, row_bytes / 8, last_mask,
      reinterpret_cast<long long*>(out));
  return last_error();
}

}  // namespace nnp
