// sample_agreement on the GPU: Hamming distances between chosen samples' binary
// codes across one layer's nodes, from the stored layout (a row per node, a bit
// per sample) without unpacking it. A warp gathers one code word (64 nodes) of
// one chosen sample: each lane tests the sample's bit in two node rows and two
// ballots assemble the word, zero past the last node. The pairs are then the
// tiles of coactivation's product with XOR in place of AND.
#pragma once
#include "coactivation.cuh"

// codes: [m, code_words] words, code_words = ceil(nodes / 64); one warp per code word, grid-stride.
extern "C" __global__ void nnp_gather_codes(const unsigned char* packed, long long nodes, long long row_bytes,
                                            const long long* idx, long long m, long long code_words,
                                            unsigned long long* codes) {
  const int lane = threadIdx.x & 31;
  const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
  for (long long g = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); g < m * code_words;
       g += warps) {  // g is the same for the whole warp: the ballots see every lane
    const long long j = g / code_words, w = g % code_words;
    const long long s = idx[j];
    const long long byte = s >> 3;
    const int bit = static_cast<int>(s & 7);
    const long long lo = w * 64 + lane, hi = lo + 32;
    const bool on_lo = lo < nodes && ((__ldg(packed + lo * row_bytes + byte) >> bit) & 1);
    const bool on_hi = hi < nodes && ((__ldg(packed + hi * row_bytes + byte) >> bit) & 1);
    const unsigned blo = __ballot_sync(0xffffffffu, on_lo), bhi = __ballot_sync(0xffffffffu, on_hi);
    if (lane == 0) codes[g] = (static_cast<unsigned long long>(bhi) << 32) | blo;
  }
}
