// coactivation on the GPU: out[i, j] = popcount(row_i & row_j) over the sample
// words of one packed layer, a binary matrix product by AND and popcount, bound
// by the popcount rate. A block computes one 64 x 64 tile of out (upper half
// only, i <= j, mirrored into the lower one): a chunk of 32 words of its 64 i
// rows and 64 j rows is staged in shared memory, word-major, so that each of the
// 256 threads reads its 4 i words and 4 j words of a column without bank
// conflicts and makes 16 products with them in registers. The last word is
// masked to the samples on loading (padding bits of stored masks are not
// guaranteed zero). Memory: the result and 32 KiB of shared memory per block,
// whatever the layer (4,096 nodes x 100,000 samples: 128 MiB of result, 51 MB
// of masks). sample_agreement runs the same tiles with XOR.
#pragma once

namespace nnp {

constexpr int kGramTile = 64;     // rows of each side of a block's tile
constexpr int kGramChunk = 32;    // words per shared-memory chunk: a warp loads one row's chunk, 256 bytes
constexpr int kGramThreads = 256; // 16 x 16 threads, 4 x 4 entries each
constexpr int kGramSide = 16;
// Three blocks an SM (24 warps): ptxas then keeps the registers at 80 without spills (sm_90); left free, the
// unrolled chunk loop takes 128 and only two blocks fit.
constexpr int kGramBlocksPerSM = 3;

// grid (tiles, tiles), tiles = ceil(n / kGramTile); blocks under the diagonal return at once. Xor: Hamming
// distances (popcount of a ^ b) instead of the AND's popcount; both sides are masked with last_mask.
template <bool Xor>
__global__ void __launch_bounds__(kGramThreads, kGramBlocksPerSM)
    popcount_gram_kernel(const unsigned long long* rows, long long n, long long words, unsigned long long last_mask,
                         long long* out) {
  if (blockIdx.x < blockIdx.y) return;  // uniform across the block, before any barrier
  // +1: a warp stores one row's 32 words down a column; padded, they fall in distinct banks.
  __shared__ unsigned long long si[kGramChunk][kGramTile + 1];
  __shared__ unsigned long long sj[kGramChunk][kGramTile + 1];
  const long long i0 = (long long)blockIdx.y * kGramTile, j0 = (long long)blockIdx.x * kGramTile;
  const int tx = threadIdx.x % kGramSide, ty = threadIdx.x / kGramSide;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  long long acc[4][4];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[r][c] = 0;
  for (long long k0 = 0; k0 < words; k0 += kGramChunk) {
    const long long k = k0 + lane;
    const unsigned long long m = k == words - 1 ? last_mask : ~0ull;
#pragma unroll
    for (int q = 0; q < kGramTile / (kGramThreads / 32); ++q) {
      const int r = warp + q * (kGramThreads / 32);
      unsigned long long wi = 0, wj = 0;
      if (k < words) {
        if (i0 + r < n) wi = __ldg(rows + (i0 + r) * words + k) & m;
        if (j0 + r < n) wj = __ldg(rows + (j0 + r) * words + k) & m;
      }
      si[lane][r] = wi;
      sj[lane][r] = wj;
    }
    __syncthreads();
    unsigned part[4][4];  // a chunk's counts fit 32 bits: at most 32 x 64
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) part[r][c] = 0;
#pragma unroll 8
    for (int kk = 0; kk < kGramChunk; ++kk) {
      unsigned long long a[4], b[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = si[kk][ty + kGramSide * r];
#pragma unroll
      for (int c = 0; c < 4; ++c) b[c] = sj[kk][tx + kGramSide * c];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) part[r][c] += __popcll(Xor ? a[r] ^ b[c] : a[r] & b[c]);
    }
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[r][c] += part[r][c];
    __syncthreads();  // the next chunk overwrites the tiles
  }
  // Rows of a thread's entries lie 16 apart and columns too, so a warp's stores of out[i, j] are 16 adjacent
  // entries; the mirrored stores are scattered, but the result is written once against the many words read.
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const long long i = i0 + ty + kGramSide * r, j = j0 + tx + kGramSide * c;
      if (i < n && j < n) {
        out[i * n + j] = acc[r][c];
        out[j * n + i] = acc[r][c];  // in a diagonal tile both threads store the same value
      }
    }
}

}  // namespace nnp
