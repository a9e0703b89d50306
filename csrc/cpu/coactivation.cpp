// coactivation on the CPU: out[i, j] = popcount(row_i & row_j) over the sample
// words of one packed layer, a binary matrix product by AND and popcount. Tiled:
// a block of kTile rows against another, a chunk of kChunk words at a time, keeps
// both blocks' chunks in L2 (2 x 64 x 2 KiB) while every 4 x 4 register tile of
// accumulators uses them (each word loaded once for four products). Only blocks
// with j >= i are computed; the lower triangle is mirrored. The last word is
// masked to the samples (padding bits of stored masks are not guaranteed zero).
// Memory: the [nodes, nodes] result and one 64 x 64 tile per thread.
#include <algorithm>
#include <cstring>
#include <vector>

#include "../ops.h"
#include "parallel.h"

namespace nnp {

namespace {
constexpr int64_t kTile = 64;    // rows per block
constexpr int64_t kChunk = 256;  // words per chunk: 2 KiB of each row

inline uint64_t word(const uint8_t* row, int64_t k) {
  uint64_t w;
  std::memcpy(&w, row + k * 8, 8);
  return w;
}

// acc[a][b] += popcount(rows_i[a] & rows_j[b]) over words [k0, k1), for a < ni, b < nj (each at most 4).
inline void micro(const uint8_t* const* ri, int ni, const uint8_t* const* rj, int nj, int64_t k0, int64_t k1,
                  uint64_t last_mask, int64_t last, int64_t acc[4][4]) {
  if (ni == 4 && nj == 4) {
    for (int64_t k = k0; k < k1; ++k) {
      const uint64_t m = k == last ? last_mask : ~uint64_t{0};
      const uint64_t a0 = word(ri[0], k) & m, a1 = word(ri[1], k) & m, a2 = word(ri[2], k) & m,
                     a3 = word(ri[3], k) & m;
      const uint64_t b0 = word(rj[0], k), b1 = word(rj[1], k), b2 = word(rj[2], k), b3 = word(rj[3], k);
      acc[0][0] += __builtin_popcountll(a0 & b0); acc[0][1] += __builtin_popcountll(a0 & b1);
      acc[0][2] += __builtin_popcountll(a0 & b2); acc[0][3] += __builtin_popcountll(a0 & b3);
      acc[1][0] += __builtin_popcountll(a1 & b0); acc[1][1] += __builtin_popcountll(a1 & b1);
      acc[1][2] += __builtin_popcountll(a1 & b2); acc[1][3] += __builtin_popcountll(a1 & b3);
      acc[2][0] += __builtin_popcountll(a2 & b0); acc[2][1] += __builtin_popcountll(a2 & b1);
      acc[2][2] += __builtin_popcountll(a2 & b2); acc[2][3] += __builtin_popcountll(a2 & b3);
      acc[3][0] += __builtin_popcountll(a3 & b0); acc[3][1] += __builtin_popcountll(a3 & b1);
      acc[3][2] += __builtin_popcountll(a3 & b2); acc[3][3] += __builtin_popcountll(a3 & b3);
    }
    return;
  }
  for (int64_t k = k0; k < k1; ++k) {
    const uint64_t m = k == last ? last_mask : ~uint64_t{0};
    for (int a = 0; a < ni; ++a) {
      const uint64_t wa = word(ri[a], k) & m;
      for (int b = 0; b < nj; ++b) acc[a][b] += __builtin_popcountll(wa & word(rj[b], k));
    }
  }
}
}  // namespace

void coactivation_cpu(const uint8_t* packed, int64_t N, int64_t row_bytes, int64_t samples, int64_t* out,
                      int threads) {
  const int64_t words = (samples + 63) / 64;
  const uint64_t last_mask = samples % 64 ? (uint64_t{1} << (samples % 64)) - 1 : ~uint64_t{0};
  const int64_t blocks = (N + kTile - 1) / kTile;
  std::vector<std::pair<int64_t, int64_t>> pairs;  // (i block, j block), j >= i
  for (int64_t bi = 0; bi < blocks; ++bi)
    for (int64_t bj = bi; bj < blocks; ++bj) pairs.emplace_back(bi, bj);
  const int64_t P = static_cast<int64_t>(pairs.size());
  if (P == 0) return;
  const int nt = resolve_threads(threads, P);
  run_threads(nt, [&](int t) {
    std::vector<int64_t> tile(kTile * kTile);
    for (int64_t q = t; q < P; q += nt) {  // interleaved: the blocks near the diagonal cost less
      const int64_t i0 = pairs[q].first * kTile, j0 = pairs[q].second * kTile;
      const int64_t i1 = std::min(N, i0 + kTile), j1 = std::min(N, j0 + kTile);
      std::fill(tile.begin(), tile.end(), 0);
      // Chunk outermost: the chunk of both blocks' rows stays in cache while every 4 x 4 tile uses it.
      for (int64_t k0 = 0; k0 < words; k0 += kChunk) {
        const int64_t k1 = std::min(words, k0 + kChunk);
        for (int64_t i = i0; i < i1; i += 4) {
          const int ni = static_cast<int>(std::min<int64_t>(4, i1 - i));
          const uint8_t* ri[4];
          for (int a = 0; a < ni; ++a) ri[a] = packed + (i + a) * row_bytes;
          for (int64_t j = (i0 == j0 ? i : j0); j < j1; j += 4) {
            const int nj = static_cast<int>(std::min<int64_t>(4, j1 - j));
            const uint8_t* rj[4];
            for (int b = 0; b < nj; ++b) rj[b] = packed + (j + b) * row_bytes;
            int64_t acc[4][4] = {};
            micro(ri, ni, rj, nj, k0, k1, last_mask, words - 1, acc);
            for (int a = 0; a < ni; ++a)
              for (int b = 0; b < nj; ++b) tile[(i - i0 + a) * kTile + (j - j0 + b)] += acc[a][b];
          }
        }
      }
      // In a diagonal block the 4 x 4 tiles on and above the diagonal were computed: every (i, j >= i).
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = (i0 == j0 ? i : j0); j < j1; ++j) {
          out[i * N + j] = tile[(i - i0) * kTile + (j - j0)];
          out[j * N + i] = tile[(i - i0) * kTile + (j - j0)];
        }
    }
  });
}

}  // namespace nnp
