// sample_popcounts on the GPU: for every sample, how many node rows of a packed
// layer have its bit set; a memory-bound reduction down the rows. Each lane owns
// one word column (64 samples) of a chunk of rows, so a warp reads 256
// consecutive bytes of each row; the column is summed in bit-sliced counters
// (plane p holds bit p of each sample's count, a row's word ripples a carry
// through the planes, branch-free), and only at the end of the chunk are the 64
// counts read out of the planes and added into out with one atomic each. Eight
// planes hold a chunk of up to 255 rows; chunks are long enough that the
// read-out and the atomics stay a small part of the work (launch.h). The
// integer atomics make the result exact whatever their order.
#pragma once

namespace nnp {

constexpr int kPopPlanes = 8;
constexpr long long kPopChunkMax = (1LL << kPopPlanes) - 1;  // rows a chunk's counters can hold
constexpr int kPopUnroll = 8;                                  // rows' words in flight per lane

__device__ __forceinline__ void pop_add(unsigned long long (&plane)[kPopPlanes], unsigned long long carry) {
#pragma unroll
  for (int p = 0; p < kPopPlanes; ++p) {
    const unsigned long long next = plane[p] & carry;
    plane[p] ^= carry;
    carry = next;
  }
}

}  // namespace nnp

// grid.x: groups of 32 word columns; each of the block's warps takes the next chunk of rows_per_chunk rows
// (grid.y * warps per block chunks in all). out ([samples], int64) must be zeroed first.
extern "C" __global__ void nnp_sample_popcounts(const unsigned long long* packed, long long nodes, long long words,
                                                long long samples, long long rows_per_chunk, long long* out) {
  const long long k = (long long)blockIdx.x * 32 + (threadIdx.x & 31);
  const long long d0 = ((long long)blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5)) * rows_per_chunk;
  if (k >= words || d0 >= nodes) return;  // no warp-wide collectives below
  const long long d1 = min(nodes, d0 + rows_per_chunk);
  unsigned long long plane[nnp::kPopPlanes];
#pragma unroll
  for (int p = 0; p < nnp::kPopPlanes; ++p) plane[p] = 0;
  const unsigned long long* col = packed + d0 * words + k;
  long long d = d0;
  for (; d + nnp::kPopUnroll <= d1; d += nnp::kPopUnroll) {
    unsigned long long w[nnp::kPopUnroll];
#pragma unroll
    for (int u = 0; u < nnp::kPopUnroll; ++u) w[u] = __ldcs(col + (d - d0 + u) * words);
#pragma unroll
    for (int u = 0; u < nnp::kPopUnroll; ++u) nnp::pop_add(plane, w[u]);
  }
  for (; d < d1; ++d) nnp::pop_add(plane, __ldcs(col + (d - d0) * words));
  const long long s0 = k * 64;
  const int bits = static_cast<int>(min(64LL, samples - s0));  // the padding's counts are never read out
  for (int b = 0; b < bits; ++b) {
    unsigned n = 0;
#pragma unroll
    for (int p = 0; p < nnp::kPopPlanes; ++p) n |= static_cast<unsigned>((plane[p] >> b) & 1ull) << p;
    if (n) atomicAdd(reinterpret_cast<unsigned long long*>(out + s0 + b), static_cast<unsigned long long>(n));
  }
}
