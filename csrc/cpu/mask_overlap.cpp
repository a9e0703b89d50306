// mask_overlap on the CPU: per node row of two mask sets of one layer (two
// checkpoints), per class, popcounts of the rows' AND and OR under the class's
// segment masks (nnphases/kernels/_segments.py). Both sets are read once, row by
// row; the segments, a few words per class, stay in cache.
#include <cstring>

#include "../ops.h"
#include "parallel.h"

namespace nnp {

void mask_overlap_cpu(const uint8_t* a, const uint8_t* b, int64_t N, int64_t row_bytes, const int64_t* class_offsets,
                      int64_t C, const int64_t* seg_word, const uint64_t* seg_mask, uint64_t last_mask, int64_t* inter,
                      int64_t* uni, int threads) {
  if (N == 0) return;
  const int nt = resolve_threads(threads, N / 64 + 1);
  run_threads(nt, [&](int t) {
    int64_t d0, d1;
    split_range(N, nt, t, 64, d0, d1);
    for (int64_t d = d0; d < d1; ++d) {
      const uint8_t* ra = a + d * row_bytes;
      const uint8_t* rb = b + d * row_bytes;
      if (seg_word == nullptr) {  // one class of every sample: whole rows, the last word masked
        const int64_t words = row_bytes / 8;
        const int64_t full = words > 0 ? words - 1 : 0;
        uint64_t both = 0, either = 0;
        for (int64_t k = 0; k < full; ++k) {
          uint64_t wa, wb;
          std::memcpy(&wa, ra + k * 8, 8);
          std::memcpy(&wb, rb + k * 8, 8);
          both += __builtin_popcountll(wa & wb);
          either += __builtin_popcountll(wa | wb);
        }
        if (words > 0) {
          uint64_t wa, wb;
          std::memcpy(&wa, ra + full * 8, 8);
          std::memcpy(&wb, rb + full * 8, 8);
          both += __builtin_popcountll(wa & wb & last_mask);
          either += __builtin_popcountll((wa | wb) & last_mask);
        }
        inter[d] = static_cast<int64_t>(both);
        uni[d] = static_cast<int64_t>(either);
        continue;
      }
      for (int64_t c = 0; c < C; ++c) {
        int64_t both = 0, either = 0;
        for (int64_t k = class_offsets[c]; k < class_offsets[c + 1]; ++k) {
          uint64_t wa, wb;
          std::memcpy(&wa, ra + seg_word[k] * 8, 8);
          std::memcpy(&wb, rb + seg_word[k] * 8, 8);
          both += __builtin_popcountll(wa & wb & seg_mask[k]);
          either += __builtin_popcountll((wa | wb) & seg_mask[k]);
        }
        inter[c * N + d] = both;
        uni[c * N + d] = either;
      }
    }
  });
}

}  // namespace nnp
