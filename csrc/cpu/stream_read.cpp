// Streaming-read probe for the benchmarks: sums a buffer as 64-bit words with
// eight independent accumulators (numpy.sum is compute-bound and underestimates
// bandwidth). Returns the sum so the reads cannot be optimised away.
#include <cstring>

#include "../ops.h"
#include "parallel.h"

namespace nnp {

uint64_t stream_read_cpu(const void* data, int64_t bytes, int threads) {
  const int64_t words = bytes / 8;
  const auto* w = static_cast<const uint64_t*>(data);
  const int nt = resolve_threads(threads, words / 4096 + 1);
  std::vector<uint64_t> part(nt, 0);
  run_threads(nt, [&](int t) {
    int64_t b, e;
    split_range(words, nt, t, 64, b, e);
    uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = b;
    for (; i + 8 <= e; i += 8)
      for (int k = 0; k < 8; ++k) acc[k] += w[i + k];
    for (; i < e; ++i) acc[0] += w[i];
    for (int k = 0; k < 8; ++k) part[t] += acc[k];
  });
  uint64_t s = 0;
  for (auto p : part) s += p;
  return s;
}

}  // namespace nnp
