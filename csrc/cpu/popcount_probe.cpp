// Popcount-throughput probe for the benchmarks: each thread popcounts its own
// cache-resident buffer `repeats` times with eight independent accumulators, built
// with the kernels' flags, so the figure is this CPU's popcount rate as the kernels'
// compiler can reach it (a yardstick for coactivation, not a memory probe). Returns
// the sum so the work cannot be optimised away.
#include <vector>

#include "../ops.h"
#include "parallel.h"

namespace nnp {

uint64_t popcount_probe_cpu(const uint64_t* data, int64_t words, int64_t repeats, int threads) {
  const int nt = resolve_threads(threads, int64_t{1} << 20);
  std::vector<uint64_t> part(nt, 0);
  run_threads(nt, [&](int t) {
    uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t r = 0; r < repeats; ++r) {
      const uint64_t salt = static_cast<uint64_t>(r + t);  // a different value each pass: nothing to hoist
      int64_t i = 0;
      for (; i + 8 <= words; i += 8)
        for (int k = 0; k < 8; ++k) acc[k] += __builtin_popcountll(data[i + k] ^ salt);
      for (; i < words; ++i) acc[0] += __builtin_popcountll(data[i] ^ salt);
    }
    for (int k = 0; k < 8; ++k) part[t] += acc[k];
  });
  uint64_t s = 0;
  for (auto p : part) s += p;
  return s;
}

}  // namespace nnp
