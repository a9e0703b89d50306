// class_counts on the CPU: one pass over the activations, exact counts added into
// the caller's int32 or int64 table (O). Direct strategies keep one counter row per
// class that the call's labels name (a class seen for the first time gets its row
// then), so a call costs its rows plus its classes' rows, never the whole table:
// with 1,000 classes a batch of 1,000 samples names about 630 of them, and zeroing
// and flushing all 1,000 rows of a 320-node table cost twice the counting.
//   direct: each thread adds every row's 0/1 vector into narrow 16-bit counters of
//     its label's row, flushed into O before they can overflow (thread 0 into the
//     output, the others into rows of their own summed into it at the end);
//   wide: rows are added straight into O-typed rows (thread 0: the output's), with
//     no narrow counters to zero and flush: cheaper when the classes named have few
//     rows each, as with many classes and small batches.
// Sorted strategy, for tables that do not fit in cache: samples are grouped by class
// once and threads split the node axis, summing one class's rows into a small row
// buffer.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "../dispatch.h"
#include "../ops.h"
#include "class_rows.h"
#include "parallel.h"
#include "prefetch.h"

namespace nnp {
namespace {

// 16-bit counters for every kind: half the cache footprint of 32-bit ones (the
// 100-class table fits in L2: 0.78 -> 0.88 of read bandwidth) and 16-bit lanes
// double float16's element rate; flushed into int64 every 65535 rows.
template <typename K>
using Counter = uint16_t;

template <typename K, bool Check, typename A>
inline typename K::Bits add_row(const typename K::Bits* __restrict row, A* __restrict acc, int64_t n) {
  using U = typename K::Bits;
  constexpr int64_t block = 64 / sizeof(U) * 4;  // four cache lines
  // The non-finite test keeps one vector of lanes (the largest |bits| seen) across
  // the row; a flag reduced per block costs a horizontal reduction per 4 lines.
  U big[block] = {};
  int64_t d0 = 0;
  for (; d0 + block <= n; d0 += block) {
    prefetch_ahead(row + d0);
    for (int64_t i = 0; i < block; ++i) {
      const U b = row[d0 + i];
      acc[d0 + i] += static_cast<A>(K::active(b));
      if (Check) big[i] = std::max(big[i], static_cast<U>(b & K::abs));
    }
  }
  for (int64_t d = d0; d < n; ++d) {
    const U b = row[d];
    acc[d] += static_cast<A>(K::active(b));
    if (Check) big[0] = std::max(big[0], static_cast<U>(b & K::abs));
  }
  if (!Check) return 0;
  U top = 0;
  for (int64_t i = 0; i < block; ++i) top = std::max(top, big[i]);
  return static_cast<U>(top >= K::inf);
}

template <typename C, typename O>
void flush(C* narrow, O* wide, int64_t n) {
  for (int64_t i = 0; i < n; ++i) wide[i] += static_cast<O>(narrow[i]);
  std::memset(narrow, 0, n * sizeof(C));
}

// Rows per named class below which the wide strategy beats the narrow counters
// (auto): measured crossover in benchmarks/bench_class_counts.py.
constexpr int64_t kWideRowsPerClass = 8;

template <typename K, bool Check, typename O>
bool direct(const typename K::Bits* acts, int64_t S, int64_t N, int64_t rs, const int32_t* labels, int64_t C,
            O* out, int threads, bool wide) {
  using Cnt = Counter<K>;
  const int64_t limit = std::numeric_limits<Cnt>::max();
  const int nt = resolve_threads(threads, std::min(S / 64 + 1, element_items(S * N)));
  const auto most = [&](int t) {  // the classes thread t can see: at most one per row
    int64_t s0, s1;
    split_range(S, nt, t, 64, s0, s1);
    return std::min(C, std::max<int64_t>(s1 - s0, 1));
  };
  // Rows of the threads past the first, summed into out at the end (thread 0 counts into out itself).
  std::vector<ClassRows<O>> own;
  own.reserve(nt);
  for (int t = 0; t < nt; ++t) own.emplace_back(t > 0 ? C : 0, t > 0 ? most(t) : 0, N);
  std::vector<int> bad(nt, 0);
  run_threads(nt, [&](int t) {
    int64_t s0, s1;
    split_range(S, nt, t, 64, s0, s1);
    auto target = [&](int32_t c) { return t == 0 ? out + static_cast<int64_t>(c) * N : own[t].row(c, N); };
    typename K::Bits any = 0;
    if (wide) {
      for (int64_t r = s0; r < s1; ++r) any |= add_row<K, Check>(acts + r * rs, target(labels[r]), N);
    } else {
      ClassRows<Cnt> narrow(C, most(t), N);
      for (int64_t s = s0; s < s1; s += limit) {
        const int64_t e = std::min(s1, s + limit);
        for (int64_t r = s; r < e; ++r) any |= add_row<K, Check>(acts + r * rs, narrow.row(labels[r], N), N);
        for (size_t k = 0; k < narrow.cls.size(); ++k)
          flush(narrow.rows.get() + k * N, target(narrow.cls[k]), N);
      }
    }
    bad[t] = any != 0;
  });
  for (int t = 1; t < nt; ++t) own[t].add_into(out, N);
  for (int b : bad)
    if (b) return true;
  return false;
}

// The labels' classes named at least once.
inline int64_t classes_named(const int32_t* labels, int64_t S, int64_t C) {
  std::vector<uint8_t> seen(C, 0);
  int64_t named = 0;
  for (int64_t s = 0; s < S; ++s) {
    named += seen[labels[s]] == 0;
    seen[labels[s]] = 1;
  }
  return named;
}

template <typename K, bool Check, typename O>
bool sorted(const typename K::Bits* acts, int64_t S, int64_t N, int64_t rs, const int32_t* labels, int64_t C,
            O* out, int threads) {
  using Cnt = Counter<K>;
  const int64_t limit = std::numeric_limits<Cnt>::max();
  std::vector<int64_t> start(C + 1, 0);
  for (int64_t s = 0; s < S; ++s) ++start[labels[s] + 1];
  for (int64_t c = 0; c < C; ++c) start[c + 1] += start[c];
  std::vector<int64_t> order(S);
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t s = 0; s < S; ++s) order[next[labels[s]]++] = s;
  }
  // A tile's row buffer stays in L2 while one class's rows stream through it.
  const int64_t tile = std::min<int64_t>(N, 32768);
  const int nt = resolve_threads(threads, std::min(N / 256 + 1, element_items(S * N)));
  std::vector<int> bad(nt, 0);
  run_threads(nt, [&](int t) {
    int64_t d0, d1;
    split_range(N, nt, t, 64, d0, d1);
    std::vector<Cnt> buf(std::min(tile, std::max<int64_t>(d1 - d0, 1)), 0);
    typename K::Bits any = 0;
    for (int64_t a = d0; a < d1; a += tile) {
      const int64_t w = std::min(tile, d1 - a);
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t k = start[c]; k < start[c + 1]; k += limit) {
          const int64_t e = std::min(start[c + 1], k + limit);
          for (int64_t j = k; j < e; ++j) {
            if (j + 1 < e) prefetch_start(acts + order[j + 1] * rs + a, w);  // rows come in class order
            any |= add_row<K, Check>(acts + order[j] * rs + a, buf.data(), w);
          }
          flush(buf.data(), out + c * N + a, w);
        }
      }
    }
    bad[t] = any != 0;
  });
  for (int b : bad)
    if (b) return true;
  return false;
}

template <typename O>
bool count(const void* acts, int kind, int64_t S, int64_t N, int64_t rs, const int32_t* labels, int64_t C, O* out,
           bool check_finite, int threads, int strategy) {
  return dispatch_kind(kind, [&](auto k) {
    using K = decltype(k);
    using U = typename K::Bits;
    const U* a = static_cast<const U*>(acts);
    // strategy: 0 auto, 1 direct, 2 sorted, 3 wide.
    const bool use_sorted =
        strategy == 2 || (strategy == 0 && C * N * static_cast<int64_t>(sizeof(Counter<K>)) > kDirectTableBytes);
    if (use_sorted)
      return check_finite ? sorted<K, true>(a, S, N, rs, labels, C, out, threads)
                          : sorted<K, false>(a, S, N, rs, labels, C, out, threads);
    const bool wide = strategy == 3 || (strategy == 0 && S < kWideRowsPerClass * classes_named(labels, S, C));
    return check_finite ? direct<K, true>(a, S, N, rs, labels, C, out, threads, wide)
                        : direct<K, false>(a, S, N, rs, labels, C, out, threads, wide);
  });
}

}  // namespace

bool class_counts_cpu(const void* acts, int kind, int64_t S, int64_t N, int64_t rs, const int32_t* labels,
                      int64_t C, void* out, int out_bytes, bool check_finite, int threads, int strategy) {
  if (S == 0 || N == 0) return false;
  if (out_bytes == 4)
    return count(acts, kind, S, N, rs, labels, C, static_cast<int32_t*>(out), check_finite, threads, strategy);
  return count(acts, kind, S, N, rs, labels, C, static_cast<int64_t*>(out), check_finite, threads, strategy);
}

}  // namespace nnp
