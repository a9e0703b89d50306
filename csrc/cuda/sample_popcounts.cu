// Host launcher of sample_popcounts for the extension; the kernel is in the .cuh.
#include "../ops.h"
#include "launch.h"
#include "sample_popcounts.cuh"

namespace nnp {

const char* sample_popcounts_cuda(uintptr_t packed, int64_t N, int64_t row_bytes, int64_t samples, uintptr_t out,
                                  int device, uintptr_t stream_) {
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_);
  cudaGetLastError();
  if (samples == 0) return "";  // an empty result may have no address to clear
  if (cudaMemsetAsync(reinterpret_cast<void*>(out), 0, samples * sizeof(int64_t), stream) != cudaSuccess)
    return last_error();
  const int64_t words = row_bytes / 8;
  if (N == 0) return "";
  const int64_t rows = popcount_chunk_rows(N, words);
  const int64_t chunks = (N + rows - 1) / rows;
  const dim3 grid(static_cast<unsigned>((words + 31) / 32), static_cast<unsigned>((chunks + 7) / 8));
  nnp_sample_popcounts<<<grid, kBlock, 0, stream>>>(reinterpret_cast<const unsigned long long*>(packed), N, words,
                                                     samples, rows, reinterpret_cast<long long*>(out));
  return last_error();
}

}  // namespace nnp
