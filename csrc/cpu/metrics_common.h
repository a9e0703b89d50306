// What the CPU metric passes share (node_metrics.cpp: per-node results; layer_metrics.cpp:
// the layer sums of many tables in one call): the block layout, the per-class row passes
// over a block and the entropy arithmetic of nnphases/metrics.py in the same order.
//
// Counts are read in the type they are stored in (uint8/16/32, int32, int64), so a
// narrowed table is never widened first, and each count is range-checked where it is
// read: a count outside [0, |S_c|] raises the pass's flag and is never used as an index.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace nnp {
namespace metrics {

// Nodes per block: the block's accumulators (24 bytes a node) and a row segment stay in
// L1 next to the classes' tables. Also the grain of the layer sums: numba uses the same.
constexpr int64_t kBlock = 256;
constexpr int kLanes = 4;

// -m * log(m / d) with 0 log 0 = 0 for integer-valued 0 <= m <= d (metrics._neg_xlogx_ratio).
inline double neg_xlogx_ratio(double m, double d) { return 0.0 - std::log(std::fmax(m, 1.0) / d) * m; }

inline void neumaier(double& s, double& c, double x) {
  const double t = s + x;
  c += std::fabs(s) >= std::fabs(x) ? (s - t) + x : (x - t) + s;
  s = t;
}

// A count as an unsigned 64-bit value: negative ones become huge, so one comparison
// with the class size catches both ends of the range.
template <typename T>
inline uint64_t as_u64(T v) {
  return static_cast<uint64_t>(static_cast<int64_t>(v));
}

struct Scalars {
  int64_t total;
  double tot, k, h_y, log_k, log2;
  const double* hz_table;
};

// Adds a class row segment to the node counts and returns its largest count as unsigned
// (a negative count is huge), in one pass the compiler vectorises: the lookups below run
// only on segments whose counts are all within [0, |S_c|].
//
// It also prefetches the row's segment two blocks ahead: each block reads C short segments a
// whole row apart, a pattern the hardware prefetchers do not follow (measured: 60% of a
// 10 x 524,288 int64 pass waited on these loads).
template <typename T>
uint64_t add_counts(const T* row, int64_t w, int64_t* nn, int64_t& sum) {
  const char* ahead = reinterpret_cast<const char*>(row + 2 * kBlock);  // a hint: past the end it is ignored
  for (int64_t b = 0; b < w * static_cast<int64_t>(sizeof(T)); b += 64) __builtin_prefetch(ahead + b);
  uint64_t mx = 0;
  int64_t total = 0;
  for (int64_t j = 0; j < w; ++j) {
    nn[j] += static_cast<int64_t>(row[j]);
    total += static_cast<int64_t>(row[j]);
    mx = std::max(mx, as_u64(row[j]));
  }
  sum += total;
  return mx;
}

// One checked class row of a block without tables: two terms added one at a time, as
// metrics._sum_class_entropies does (with Store, the class fractions too).
template <typename T, bool Store>
void row_log(const T* row, int64_t w, double sd, double* frac, double* acc, double* cf_out) {
  for (int64_t j = 0; j < w; ++j) {
    const double m = static_cast<double>(row[j]), cf = m / sd;
    if (Store) cf_out[j] = cf, frac[j] += cf;
    acc[j] += neg_xlogx_ratio(m, sd);
    acc[j] += neg_xlogx_ratio(sd - m, sd);
  }
}

inline double hz_of(const Scalars& k, int64_t n) {
  if (k.hz_table) return k.hz_table[n];
  const double q = static_cast<double>(n);
  return (neg_xlogx_ratio(q, k.tot) + neg_xlogx_ratio(k.tot - q, k.tot)) / k.tot;
}

// Calls fn(T{}) with T the C type of a count type code ('B', 'H', 'I', 'i', 'q').
template <typename Fn>
auto with_count_type(char code, Fn&& fn) {
  switch (code) {
    case 'B': return fn(uint8_t{});
    case 'H': return fn(uint16_t{});
    case 'I': return fn(uint32_t{});
    case 'i': return fn(int32_t{});
    default: return fn(int64_t{});
  }
}

}  // namespace metrics
}  // namespace nnp
