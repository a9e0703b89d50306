// sample_popcounts on the CPU: for every sample, how many node rows of a packed
// layer have its bit set. With AVX-512BW, byte counters (below); otherwise a
// column of 64 samples (one word of every row) is summed in bit-sliced counters: plane p holds bit p of each sample's running count, and
// adding a row's word ripples a carry through the planes (about two steps a word on
// average), so no bit is ever extracted until the end. Rows are walked in blocks of
// 8 words (one cache line of each row) so that every line read is used whole.
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../ops.h"
#include "parallel.h"

namespace nnp {

namespace {
constexpr int kBlock = 8;     // words per block: one 64-byte line of each row
constexpr int kMaxPlanes = 64;
constexpr int kAhead = 16; // rows prefetched ahead
constexpr int kWideBlock = 64;  // byte counters: 512 bytes of each row a block, so each page of a row yields 8 lines
}  // namespace

#if defined(__x86_64__)
// With AVX-512BW a word becomes 64 byte lanes of 0 or -1 in one instruction (vpmovm2b), subtracted from byte
// counters: two instructions a word. Byte counters take at most 255 rows, then are widened into int64 totals.
// A block is 64 words of every row (4 KiB of counters, in L1): rows lie a row's bytes apart, and reading 512 of
// them per row and block keeps the page walks per byte read low.
__attribute__((target("avx512f,avx512bw"))) static void sample_popcounts_avx512(const uint8_t* packed, int64_t N, int64_t row_bytes, int64_t samples,
                                    int64_t* out, int threads) {
  const int64_t words = row_bytes / 8;
  const int64_t blocks = (words + kWideBlock - 1) / kWideBlock;
  const int nt = resolve_threads(threads, blocks);
  run_threads(nt, [&](int t) {
    int64_t b0, b1;
    split_range(blocks, nt, t, 1, b0, b1);
    alignas(64) int64_t total[kWideBlock * 64];
    alignas(64) uint8_t bytes[64];
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t w0 = blk * kWideBlock;
      const int width = static_cast<int>(words - w0 < kWideBlock ? words - w0 : kWideBlock);
      std::memset(total, 0, sizeof(total));
      for (int64_t d0 = 0; d0 < N; d0 += 255) {
        const int64_t d1 = d0 + 255 < N ? d0 + 255 : N;
        __m512i acc[kWideBlock];
        for (int j = 0; j < kWideBlock; ++j) acc[j] = _mm512_setzero_si512();
        for (int64_t d = d0; d < d1; ++d) {
          const uint8_t* row = packed + d * row_bytes + w0 * 8;
          if (d + kAhead < N)  // rows lie far apart: the hardware prefetcher does not follow them
            for (int j = 0; j < width; j += 8)
              _mm_prefetch(reinterpret_cast<const char*>(row + kAhead * row_bytes + j * 8), _MM_HINT_T0);
          for (int j = 0; j < width; ++j) {
            uint64_t w;
            std::memcpy(&w, row + j * 8, 8);
            acc[j] = _mm512_sub_epi8(acc[j], _mm512_movm_epi8(static_cast<__mmask64>(w)));
          }
        }
        for (int j = 0; j < width; ++j) {
          _mm512_store_si512(reinterpret_cast<__m512i*>(bytes), acc[j]);
          for (int b = 0; b < 64; ++b) total[j * 64 + b] += bytes[b];
        }
      }
      for (int j = 0; j < width; ++j) {
        const int64_t s0 = (w0 + j) * 64;
        const int bits = static_cast<int>(samples - s0 < 64 ? samples - s0 : 64);
        for (int b = 0; b < bits; ++b) out[s0 + b] = total[j * 64 + b];
      }
    }
  });
}
#endif

bool sample_popcounts_cpu(const uint8_t* packed, int64_t N, int64_t row_bytes, int64_t samples, int64_t* out,
                          int threads, int strategy) {
#if defined(__x86_64__)
  // Chosen at run time: the package may be built for a portable target and run on an AVX-512 machine.
  if (strategy != 1 && __builtin_cpu_supports("avx512bw")) {
    if (samples > 0) sample_popcounts_avx512(packed, N, row_bytes, samples, out, threads);
    return true;
  }
#endif
  if (strategy == 2) return false;
  const int64_t words = row_bytes / 8;
  const int64_t blocks = (words + kBlock - 1) / kBlock;
  if (samples == 0) return true;
  int planes = 1;
  while (planes < kMaxPlanes && (int64_t{1} << planes) <= N) ++planes;
  const int nt = resolve_threads(threads, blocks);
  run_threads(nt, [&](int t) {
    int64_t b0, b1;
    split_range(blocks, nt, t, 1, b0, b1);
    uint64_t plane[kBlock][kMaxPlanes];
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t w0 = blk * kBlock;
      const int width = static_cast<int>(words - w0 < kBlock ? words - w0 : kBlock);
      std::memset(plane, 0, sizeof(plane));
      for (int64_t d = 0; d < N; ++d) {
        const uint8_t* row = packed + d * row_bytes + w0 * 8;
        for (int j = 0; j < width; ++j) {
          uint64_t carry;
          std::memcpy(&carry, row + j * 8, 8);
          for (int p = 0; carry != 0; ++p) {  // N < 2^planes: the carry never leaves the planes
            const uint64_t next = plane[j][p] & carry;
            plane[j][p] ^= carry;
            carry = next;
          }
        }
      }
      for (int j = 0; j < width; ++j) {
        const int64_t s0 = (w0 + j) * 64;
        const int bits = static_cast<int>(samples - s0 < 64 ? samples - s0 : 64);
        for (int b = 0; b < bits; ++b) {
          int64_t n = 0;
          for (int p = 0; p < planes; ++p) n |= static_cast<int64_t>((plane[j][p] >> b) & 1u) << p;
          out[s0 + b] = n;
        }
      }
    }
  });
  return true;
}

}  // namespace nnp
