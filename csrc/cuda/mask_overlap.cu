// Host launcher of mask_overlap for the extension; the kernels are in the .cuh.
#include "../ops.h"
#include "launch.h"
#include "mask_overlap.cuh"

namespace nnp {

const char* mask_overlap_cuda(uintptr_t a, uintptr_t b, int64_t N, int64_t row_bytes, uintptr_t class_offsets,
                              int64_t C, uintptr_t seg_word, uintptr_t seg_mask, uint64_t last_mask, uintptr_t out,
                              int device, uintptr_t stream_) {
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_);
  cudaGetLastError();
  if (N == 0) return "";
  const int64_t words = row_bytes / 8;
  auto* pa = reinterpret_cast<const unsigned long long*>(a);
  auto* pb = reinterpret_cast<const unsigned long long*>(b);
  auto* o = reinterpret_cast<long long*>(out);
  if (seg_word == 0) {
    const int lanes = overlap_lanes(words);
    const unsigned blocks = static_cast<unsigned>((N * lanes + kBlock - 1) / kBlock);
    nnp_mask_overlap_rows<<<blocks, kBlock, 0, stream>>>(pa, pb, N, words, last_mask, lanes, o);
  } else {
    const unsigned blocks = static_cast<unsigned>((N + 7) / 8);
    nnp_mask_overlap_classes<<<blocks, kBlock, 0, stream>>>(
        pa, pb, N, words, reinterpret_cast<const long long*>(class_offsets), C,
        reinterpret_cast<const long long*>(seg_word), reinterpret_cast<const unsigned long long*>(seg_mask), o);
  }
  return last_error();
}

}  // namespace nnp
