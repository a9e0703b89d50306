// pack_masks on the GPU: each warp packs 64 consecutive samples for 32*V nodes.
// Lanes read a row's nodes with coalesced 16-byte loads and shift each node's
// bit into a 64-bit register word; the block's warps take consecutive words, so
// the 8-byte stores of one node row land next to each other in L2.
#pragma once
#include "common.cuh"

namespace nnp {

constexpr int kPackUnroll = 4;

template <typename K, bool Vec, bool Check>
__global__ void pack_masks_kernel(const unsigned char* acts, long long samples, long long nodes, long long row_bytes,
                                  unsigned long long* out, long long words, unsigned long long* flags) {
  using U = typename K::Bits;
  constexpr int V = Vec16<U>::n;
  const int lane = threadIdx.x & 31;
  const long long d0 = (long long)blockIdx.x * 32 * V + lane * V;
  if (d0 >= nodes) return;  // no warp-wide collectives below
  bool bad = false;
  for (long long w = (long long)blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5); w < words;
       w += (long long)gridDim.y * (blockDim.x >> 5)) {
    const long long s0 = w * 64;
    const int rows = static_cast<int>(min(64LL, samples - s0));
    unsigned long long acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = 0;
    for (int k = 0; k < rows; k += kPackUnroll) {
      Vec16<U> x[kPackUnroll];
#pragma unroll
      for (int u = 0; u < kPackUnroll; ++u) {
        if (k + u < rows) load_elems<U, Vec>(acts + (s0 + k + u) * row_bytes, d0, nodes, x[u]);
        else x[u].q = make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kPackUnroll; ++u) {
#pragma unroll
        for (int v = 0; v < V; ++v) {
          acc[v] |= (unsigned long long)K::active(x[u].e[v]) << (k + u);
          if (Check) bad |= K::nonfinite(x[u].e[v]);
        }
      }
    }
#pragma unroll
    for (int v = 0; v < V; ++v)
      if (d0 + v < nodes) out[(d0 + v) * words + w] = acc[v];
  }
  if (Check && bad) atomicAdd(flags, 1ull);
}

}  // namespace nnp
