// packed_class_counts on the CPU: per node row, per class, popcounts of the row's
// words under the class's segment masks (nnphases/kernels/_segments.py). Work per
// node is the number of segments, about words + classes for class-grouped labels.
#include <cstring>

#include "../ops.h"
#include "parallel.h"

namespace nnp {

void packed_class_counts_cpu(const uint8_t* packed, int64_t N, int64_t row_bytes, const int64_t* class_offsets,
                             int64_t C, const int64_t* seg_word, const uint64_t* seg_mask, int64_t* out,
                             int threads) {
  if (N == 0) return;
  const int nt = resolve_threads(threads, N / 64 + 1);
  run_threads(nt, [&](int t) {
    int64_t d0, d1;
    split_range(N, nt, t, 64, d0, d1);
    for (int64_t d = d0; d < d1; ++d) {
      const uint8_t* row = packed + d * row_bytes;
      for (int64_t c = 0; c < C; ++c) {
        int64_t n = 0;
        for (int64_t k = class_offsets[c]; k < class_offsets[c + 1]; ++k) {
          uint64_t w;
          std::memcpy(&w, row + seg_word[k] * 8, 8);
          n += __builtin_popcountll(w & seg_mask[k]);
        }
        out[c * N + d] = n;
      }
    }
  });
}

}  // namespace nnp
