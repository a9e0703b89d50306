// mask_overlap on the GPU: per node row of two mask sets of one layer, the
// popcounts of the rows' AND and OR, a memory-bound reduction that reads both
// sets once. Without labels a group of lanes (a power of two up to a warp, as
// wide as the row has words, so short rows do not idle most of a warp) walks the
// row's words with coalesced loads, the last word masked to the samples; per
// class a warp walks each class's segments (nnphases/kernels/_segments.py) as
// packed_class_counts does. Deterministic: shuffle reductions, no atomics.
// out is int64 [2, classes, nodes]: the AND counts, then the OR counts.
#pragma once

namespace nnp {

constexpr int kOverlapUnroll = 4;  // words of each row in flight per lane: loads outnumber the popcounts

}  // namespace nnp

// lanes: the group width, a power of two in [1, 32]; the block is whole warps.
extern "C" __global__ void nnp_mask_overlap_rows(const unsigned long long* a, const unsigned long long* b,
                                                 long long nodes, long long words, unsigned long long last_mask,
                                                 int lanes, long long* out) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long node = t / lanes;
  const int sub = static_cast<int>(t % lanes);
  unsigned long long both = 0, either = 0;
  if (node < nodes) {  // no return: every lane takes part in the shuffles below
    const unsigned long long* ra = a + node * words;
    const unsigned long long* rb = b + node * words;
    const long long full = words > 0 ? words - 1 : 0;
    long long k = sub;
    for (; k + (nnp::kOverlapUnroll - 1) * lanes < full; k += nnp::kOverlapUnroll * lanes) {
      unsigned long long wa[nnp::kOverlapUnroll], wb[nnp::kOverlapUnroll];
#pragma unroll
      for (int u = 0; u < nnp::kOverlapUnroll; ++u) {
        wa[u] = __ldcs(ra + k + u * lanes);
        wb[u] = __ldcs(rb + k + u * lanes);
      }
#pragma unroll
      for (int u = 0; u < nnp::kOverlapUnroll; ++u) {
        both += __popcll(wa[u] & wb[u]);
        either += __popcll(wa[u] | wb[u]);
      }
    }
    for (; k < full; k += lanes) {
      const unsigned long long wa = __ldcs(ra + k), wb = __ldcs(rb + k);
      both += __popcll(wa & wb);
      either += __popcll(wa | wb);
    }
    if (words > 0 && sub == 0) {  // padding bits of stored masks are not guaranteed zero
      const unsigned long long wa = __ldcs(ra + full), wb = __ldcs(rb + full);
      both += __popcll(wa & wb & last_mask);
      either += __popcll((wa | wb) & last_mask);
    }
  }
  for (int off = lanes >> 1; off > 0; off >>= 1) {
    both += __shfl_xor_sync(0xffffffffu, both, off);
    either += __shfl_xor_sync(0xffffffffu, either, off);
  }
  if (node < nodes && sub == 0) {
    out[node] = static_cast<long long>(both);
    out[nodes + node] = static_cast<long long>(either);
  }
}

// One warp per node row; for each class its lanes split that class's segments.
extern "C" __global__ void nnp_mask_overlap_classes(const unsigned long long* a, const unsigned long long* b,
                                                    long long nodes, long long words, const long long* class_offsets,
                                                    long long classes, const long long* seg_word,
                                                    const unsigned long long* seg_mask, long long* out) {
  const long long node = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (node >= nodes) return;  // uniform across the warp
  const int lane = threadIdx.x & 31;
  const unsigned long long* ra = a + node * words;
  const unsigned long long* rb = b + node * words;
  for (long long c = 0; c < classes; ++c) {
    long long both = 0, either = 0;
    for (long long k = class_offsets[c] + lane; k < class_offsets[c + 1]; k += 32) {
      const long long w = seg_word[k];
      const unsigned long long m = seg_mask[k], wa = __ldg(ra + w), wb = __ldg(rb + w);
      both += __popcll(wa & wb & m);
      either += __popcll((wa | wb) & m);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      both += __shfl_down_sync(0xffffffffu, both, off);
      either += __shfl_down_sync(0xffffffffu, either, off);
    }
    if (lane == 0) {
      out[c * nodes + node] = both;
      out[(classes + c) * nodes + node] = either;
    }
  }
}
