// pack_masks on the CPU: bits along samples, so a node's sample set is one
// contiguous bit row. Reads 64 sample rows over a tile of nodes and builds one
// 64-bit word per node in L1. Bits gather first in lanes as wide as the element
// (32 float32 rows per 32-bit lane), so the per-element work is a compare, an
// and and an or in the element's own vector width, never a widening to 64 bits. Threads take ranges of whole output cache lines (512
// samples) so no two threads write the same line.
#include <cstring>
#include <vector>

#include "../dispatch.h"
#include "../ops.h"
#include "parallel.h"
#include "prefetch.h"

namespace nnp {
namespace {

// Wide tiles keep each row's read sequential (64 short strided streams defeat the
// prefetcher); the tile's lane and word buffers still fit in L2.
constexpr int64_t kTile = 8192;

// acc[d] |= bit where row[d] is active; returns the OR of the non-finite flags.
template <typename K, bool Check>
inline typename K::Bits gather_row(const typename K::Bits* __restrict row, typename K::Bits* __restrict acc, int64_t n,
                                   typename K::Bits bit) {
  using U = typename K::Bits;
  constexpr int64_t block = 64 / sizeof(U) * 4;  // four cache lines
  U bad = 0;
  int64_t d0 = 0;
  auto body = [&](int64_t d) {
    acc[d] |= static_cast<U>(-static_cast<U>(K::active(row[d])) & bit);
    if (Check) bad |= static_cast<U>(K::nonfinite(row[d]));
  };
  for (; d0 + block <= n; d0 += block) {
    prefetch_ahead(row + d0);
    for (int64_t d = d0; d < d0 + block; ++d) body(d);
  }
  for (int64_t d = d0; d < n; ++d) body(d);
  return bad;
}

template <typename K, bool Check>
bool pack(const typename K::Bits* acts, int64_t S, int64_t N, int64_t rs, uint8_t* out, int64_t row_bytes,
          int threads) {
  using U = typename K::Bits;
  const int nt = resolve_threads(threads, std::min(S / 512 + 1, element_items(S * N)));
  std::vector<int> bad(nt, 0);
  run_threads(nt, [&](int t) {
    int64_t s0, s1;
    split_range(S, nt, t, 512, s0, s1);
    constexpr int R = 8 * sizeof(U);  // rows gathered per lane before widening
    std::vector<U> acc_buf(kTile);
    std::vector<uint64_t> word_buf(kTile);
    U* __restrict acc = acc_buf.data();
    uint64_t* __restrict word = word_buf.data();
    U any = 0;
    for (int64_t blk = s0; blk < s1; blk += 64) {
      const int rows = static_cast<int>(std::min<int64_t>(64, s1 - blk));
      for (int64_t d0 = 0; d0 < N; d0 += kTile) {
        const int64_t w = std::min(kTile, N - d0);
        std::memset(word, 0, kTile * sizeof(uint64_t));
        for (int g = 0; g * R < rows; ++g) {
          std::memset(acc, 0, kTile * sizeof(U));
          const int group = std::min(R, rows - g * R);
          for (int j = 0; j < group; ++j) {
            const U* __restrict row = acts + (blk + g * R + j) * rs + d0;
            const U bit = static_cast<U>(U(1) << j);
            any |= gather_row<K, Check>(row, acc, w, bit);
          }
          if (R == 64) {
            for (int64_t d = 0; d < w; ++d) word[d] = acc[d];
          } else {
            for (int64_t d = 0; d < w; ++d) word[d] |= static_cast<uint64_t>(acc[d]) << (g * R % 64);
          }
        }
        uint8_t* dst = out + d0 * row_bytes + blk / 8;
        for (int64_t d = 0; d < w; ++d) std::memcpy(dst + d * row_bytes, &word[d], 8);
      }
    }
    bad[t] = any != 0;
  });
  for (int b : bad)
    if (b) return true;
  return false;
}

}  // namespace

bool pack_masks_cpu(const void* acts, int kind, int64_t S, int64_t N, int64_t rs, uint8_t* out, int64_t row_bytes,
                    bool check_finite, int threads) {
  if (S == 0 || N == 0) return false;
  return dispatch_kind(kind, [&](auto k) {
    using K = decltype(k);
    const auto* a = static_cast<const typename K::Bits*>(acts);
    return check_finite ? pack<K, true>(a, S, N, rs, out, row_bytes, threads)
                        : pack<K, false>(a, S, N, rs, out, row_bytes, threads);
  });
}

}  // namespace nnp
