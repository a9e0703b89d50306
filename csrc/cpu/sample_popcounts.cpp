// sample_popcounts on the CPU: for every sample, how many node rows of a packed
// layer have its bit set. A column of 64 samples (one word of every row) is summed
// in bit-sliced counters: plane p holds bit p of each sample's running count, and
// adding a row's word ripples a carry through the planes (about two steps a word on
// average), so no bit is ever extracted until the end. Rows are walked in blocks of
// 8 words (one cache line of each row) so that every line read is used whole.
#include <cstring>

#include "../ops.h"
#include "parallel.h"

namespace nnp {

namespace {
constexpr int kBlock = 8;     // words per block: one 64-byte line of each row
constexpr int kMaxPlanes = 64;
}  // namespace

void sample_popcounts_cpu(const uint8_t* packed, int64_t N, int64_t row_bytes, int64_t samples, int64_t* out,
                          int threads) {
  const int64_t words = row_bytes / 8;
  const int64_t blocks = (words + kBlock - 1) / kBlock;
  if (samples == 0) return;
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
}

}  // namespace nnp
