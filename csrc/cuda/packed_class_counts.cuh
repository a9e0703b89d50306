// packed_class_counts on the GPU: one warp per node row; for each class its
// lanes split that class's segments (nnphases/kernels/_segments.py), popcount
// row words under the segment masks, and reduce with shuffles. Deterministic,
// no atomics; the row's words stay in L1 across classes.
#pragma once
#include "common.cuh"

extern "C" __global__ void nnp_packed_class_counts(const unsigned long long* packed, long long nodes, long long words,
                                                   const long long* class_offsets, long long classes,
                                                   const long long* seg_word, const unsigned long long* seg_mask,
                                                   long long* out) {
  const long long node = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (node >= nodes) return;  // uniform across the warp
  const int lane = threadIdx.x & 31;
  const unsigned long long* row = packed + node * words;
  for (long long c = 0; c < classes; ++c) {
    long long n = 0;
    for (long long k = class_offsets[c] + lane; k < class_offsets[c + 1]; k += 32)
      n += __popcll(__ldg(row + seg_word[k]) & seg_mask[k]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) n += __shfl_down_sync(0xffffffffu, n, off);
    if (lane == 0) out[c * nodes + node] = n;
  }
}
