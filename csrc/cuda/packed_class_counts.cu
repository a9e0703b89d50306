// Host launcher of packed_class_counts for the extension; the kernel is in the .cuh.
#include "../ops.h"
#include "launch.h"
#include "packed_class_counts.cuh"

namespace nnp {

const char* packed_class_counts_cuda(uintptr_t packed, int64_t N, int64_t row_bytes, uintptr_t class_offsets, int64_t C,
                                     uintptr_t seg_word, uintptr_t seg_mask, uintptr_t out, int device, uintptr_t stream_) {
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_);
  cudaGetLastError();
  if (N == 0) return "";
  const unsigned blocks = static_cast<unsigned>((N + 7) / 8);
  nnp_packed_class_counts<<<blocks, kBlock, 0, stream>>>(
      reinterpret_cast<const unsigned long long*>(packed), N, row_bytes / 8,
      reinterpret_cast<const long long*>(class_offsets), C, reinterpret_cast<const long long*>(seg_word),
      reinterpret_cast<const unsigned long long*>(seg_mask), reinterpret_cast<long long*>(out));
  return last_error();
}

}  // namespace nnp
