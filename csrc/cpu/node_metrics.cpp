// node_metrics on the CPU: the sample-set metrics of one layer from its per-class
// counts, in one pass over the [classes, nodes] table, with the arithmetic of
// nnphases/metrics.py in the same order (so the two agree to the last few ulps of
// the logarithms). Threads take ranges of node blocks; inside a block the classes
// are the outer loop, so every read of the table is a contiguous row segment.
//
// Counts are read in the type they are stored in (uint8/16/32, int32, int64), so a
// narrowed table is never widened first, and each count is range-checked where it is
// read: a count outside [0, |S_c|] raises the returned flag and is looked up as 0, so
// a bad table never indexes past the entropy tables.
//
// The layer sums are compensated (Neumaier) in four lanes per block (node j in lane
// j % 4), the lanes combined in order, then the blocks in block order: the vector
// (AVX2) and scalar paths do the same operations, and nothing depends on the thread
// count. nnphases/kernels/_numba_metrics.py sums the same way.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "../ops.h"
#include "parallel.h"

namespace nnp {
namespace {

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

// One checked class row of a block with tables: m / |S_c| and |S_c| * h(m / |S_c|) are one
// 16-byte pair per possible count m (NumPy computed both).
template <typename T, bool Store>
void row_tab(const T* row, int64_t w, const double* pr, double* frac, double* acc, double* cf_out) {
  int64_t j = 0;
#if defined(__AVX2__)
  if (!Store) {  // the layer pass needs the entropy terms only (the fractions come from the row sums)
    for (; j + 4 <= w; j += 4) {
      const __m256d g = _mm256_set_pd(pr[2 * row[j + 3] + 1], pr[2 * row[j + 2] + 1], pr[2 * row[j + 1] + 1],
                                      pr[2 * row[j] + 1]);
      _mm256_storeu_pd(acc + j, _mm256_add_pd(_mm256_loadu_pd(acc + j), g));
    }
  }
  for (; Store && j + 4 <= w; j += 4) {
    const int64_t i0 = row[j], i1 = row[j + 1], i2 = row[j + 2], i3 = row[j + 3];
    // Four (fraction, entropy) pairs into a vector of fractions and one of entropies.
    const __m256d lo = _mm256_insertf128_pd(_mm256_castpd128_pd256(_mm_loadu_pd(pr + 2 * i0)), _mm_loadu_pd(pr + 2 * i2), 1);
    const __m256d hi = _mm256_insertf128_pd(_mm256_castpd128_pd256(_mm_loadu_pd(pr + 2 * i1)), _mm_loadu_pd(pr + 2 * i3), 1);
    const __m256d cf = _mm256_unpacklo_pd(lo, hi), g = _mm256_unpackhi_pd(lo, hi);
    _mm256_storeu_pd(frac + j, _mm256_add_pd(_mm256_loadu_pd(frac + j), cf));
    _mm256_storeu_pd(acc + j, _mm256_add_pd(_mm256_loadu_pd(acc + j), g));
    if (Store) _mm256_storeu_pd(cf_out + j, cf);
  }
#endif
  for (; j < w; ++j) {
    const int64_t i = row[j];
    const double cf = pr[2 * i], g = pr[2 * i + 1];
    if (Store) cf_out[j] = cf, frac[j] += cf;
    acc[j] += g;
  }
}

// The same without tables: two terms added one at a time, as metrics._sum_class_entropies does.
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

// Per-node results of one block from its sums: the arithmetic of metrics.node_metrics_np
// (divisions, clip, maximum) node by node, four at a time.
void finish_nodes(const Scalars& k, int64_t d0, int64_t w, const int64_t* nn, const double* frac, const double* acc,
                  const MetricsOut& o) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  int64_t j = 0;
#if defined(__AVX2__)
  const __m256d kv = _mm256_set1_pd(k.k), totv = _mm256_set1_pd(k.tot), zero = _mm256_setzero_pd();
  const __m256d hyv = _mm256_set1_pd(k.h_y), one = _mm256_set1_pd(1.0), log2v = _mm256_set1_pd(k.log2);
  const __m256d logkv = _mm256_set1_pd(k.log_k), nanv = _mm256_set1_pd(nan);
  const __m256i totalv = _mm256_set1_epi64x(k.total), izero = _mm256_setzero_si256();
  for (; j + 4 <= w; j += 4) {
    const __m256i n = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nn + j));
    const __m256d undefined = _mm256_castsi256_pd(_mm256_or_si256(_mm256_cmpeq_epi64(n, izero),
                                                                   _mm256_cmpeq_epi64(n, totalv)));
    const __m256d f = _mm256_div_pd(_mm256_loadu_pd(frac + j), kv);
    const __m256d hz = _mm256_set_pd(hz_of(k, nn[j + 3]), hz_of(k, nn[j + 2]), hz_of(k, nn[j + 1]), hz_of(k, nn[j]));
    // np.clip and np.maximum; no NaN reaches here and acc / |S| is never -0.0, so max/min
    // order their operands as std::max/std::min do.
    __m256d hzy = _mm256_min_pd(_mm256_max_pd(_mm256_div_pd(_mm256_loadu_pd(acc + j), totv), zero), hz);
    __m256d hyz = _mm256_max_pd(_mm256_add_pd(_mm256_sub_pd(hyv, hz), hzy), zero);
    hzy = _mm256_blendv_pd(hzy, nanv, undefined);
    hyz = _mm256_blendv_pd(hyz, nanv, undefined);
    const int64_t d = d0 + j;
    _mm256_storeu_pd(o.fraction + d, f);
    _mm256_storeu_pd(o.predictability + d, _mm256_sub_pd(one, _mm256_div_pd(hzy, log2v)));
    _mm256_storeu_pd(o.informativeness + d, _mm256_sub_pd(one, _mm256_div_pd(hyz, logkv)));  // log_k NaN: all NaN
    _mm256_storeu_pd(o.h_z_given_y + d, hzy);
    _mm256_storeu_pd(o.h_y_given_z + d, hyz);
    for (int l = 0; l < 4; ++l) o.dead[d + l] = nn[j + l] == 0, o.always_active[d + l] = nn[j + l] == k.total;
  }
#endif
  for (; j < w; ++j) {
    const bool dead = nn[j] == 0, always = nn[j] == k.total;
    const double hz = hz_of(k, nn[j]);
    double hzy = std::min(std::max(acc[j] / k.tot, 0.0), hz);
    double hyz = std::max(k.h_y - hz + hzy, 0.0);
    if (dead || always) hzy = nan, hyz = nan;
    const int64_t d = d0 + j;
    o.fraction[d] = frac[j] / k.k;
    o.predictability[d] = 1.0 - hzy / k.log2;
    o.informativeness[d] = 1.0 - hyz / k.log_k;
    o.h_z_given_y[d] = hzy;
    o.h_y_given_z[d] = hyz;
    o.dead[d] = dead;
    o.always_active[d] = always;
  }
}

// The layer sums of one block without per-node results: over all nodes, the compensated
// sums (per lane) of |S| H(Zhat|Y) and of H(Zhat). A dead or always-active node adds
// exactly 0 to both (h(0) = h(1) = 0 in every table and formula), so the sums over all
// nodes are the sums over the defined ones and no node needs a mask; counts: dead and
// always-active nodes. (The fractions' sum comes from the classes' row sums.)
void finish_layer(const Scalars& k, int64_t w, const int64_t* nn, const double* acc, double (&ls)[2][kLanes],
                  double (&lc)[2][kLanes], int64_t* counts) {
  int64_t j = 0;
#if defined(__AVX2__)
  {
    const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
    const __m256i totalv = _mm256_set1_epi64x(k.total), izero = _mm256_setzero_si256();
    __m256d s[2], c[2];
    for (int i = 0; i < 2; ++i) s[i] = _mm256_loadu_pd(ls[i]), c[i] = _mm256_loadu_pd(lc[i]);
    int dead = 0, always = 0;
    for (; j + 4 <= w; j += 4) {
      const __m256i n = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nn + j));
      dead += __builtin_popcount(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(n, izero))));
      always += __builtin_popcount(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(n, totalv))));
      // Four loads rather than a gather instruction: measured faster on Zen.
      const __m256d hz = _mm256_set_pd(hz_of(k, nn[j + 3]), hz_of(k, nn[j + 2]), hz_of(k, nn[j + 1]), hz_of(k, nn[j]));
      const __m256d x[2] = {_mm256_loadu_pd(acc + j), hz};
      for (int i = 0; i < 2; ++i) {  // Neumaier, lane by lane
        const __m256d t = _mm256_add_pd(s[i], x[i]);
        const __m256d big = _mm256_cmp_pd(_mm256_and_pd(s[i], absmask), _mm256_and_pd(x[i], absmask), _CMP_GE_OQ);
        const __m256d when_s = _mm256_add_pd(_mm256_sub_pd(s[i], t), x[i]);
        const __m256d when_x = _mm256_add_pd(_mm256_sub_pd(x[i], t), s[i]);
        c[i] = _mm256_add_pd(c[i], _mm256_blendv_pd(when_x, when_s, big));
        s[i] = t;
      }
    }
    counts[0] += dead, counts[1] += always;
    for (int i = 0; i < 2; ++i) _mm256_storeu_pd(ls[i], s[i]), _mm256_storeu_pd(lc[i], c[i]);
  }
#endif
  for (; j < w; ++j) {
    const int lane = static_cast<int>(j % kLanes);
    const double x[2] = {acc[j], hz_of(k, nn[j])};
    for (int i = 0; i < 2; ++i) neumaier(ls[i][lane], lc[i][lane], x[i]);
    counts[0] += nn[j] == 0;
    counts[1] += nn[j] == k.total;
  }
}

template <typename T, bool Store>
bool metrics(const T* counts, int64_t C, int64_t N, const int64_t* sizes, const double* pairs,
             const int64_t* table_offset, const double* hz_table, double h_y, double log_k, const MetricsOut& o,
             int threads) {
  Scalars k{0, 0.0, 0.0, h_y, log_k, std::log(2.0), hz_table};
  int64_t present = 0;
  for (int64_t c = 0; c < C; ++c) {
    k.total += sizes[c];
    present += sizes[c] > 0;
  }
  k.tot = static_cast<double>(k.total);
  k.k = static_cast<double>(present);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  std::vector<double> block_sum(2 * blocks);
  std::vector<int64_t> block_count(2 * blocks);
  std::vector<char> bad_of(64);
  const int nt = resolve_threads(threads, std::min<int64_t>(blocks, C * N / (1 << 18) + 1));
  std::vector<int64_t> class_sum(static_cast<size_t>(C) * nt);  // per thread: integer row sums, merged exactly
  run_threads(nt, [&](int t) {
    int64_t b0, b1;
    split_range(blocks, nt, t, 1, b0, b1);
    alignas(64) int64_t nn[kBlock];
    alignas(64) double frac[kBlock], acc[kBlock];
    bool bad = false;
    int64_t* row_sum = class_sum.data() + static_cast<size_t>(C) * t;  // this thread's, exact
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t d0 = b * kBlock, w = std::min(kBlock, N - d0);
      std::fill(nn, nn + w, int64_t{0});
      std::fill(frac, frac + w, 0.0);
      std::fill(acc, acc + w, 0.0);
      for (int64_t c = 0; c < C; ++c) {
        const T* row = counts + c * N + d0;
        double* cf_out = Store ? o.class_fraction + c * N + d0 : nullptr;
        const uint64_t s = static_cast<uint64_t>(sizes[c]);
        if (s == 0) {  // an absent class adds nothing to f[i] or the entropies; its counts must be 0
          if (Store) std::fill(cf_out, cf_out + w, nan);
          if (add_counts(row, w, nn, row_sum[c]) != 0) {
            bad = true;
            break;
          }
          continue;
        }
        if (add_counts(row, w, nn, row_sum[c]) > s) {
          bad = true;
          break;
        }
        if (table_offset[c] >= 0)
          row_tab<T, Store>(row, w, pairs + 2 * table_offset[c], frac, acc, cf_out);
        else
          row_log<T, Store>(row, w, static_cast<double>(s), frac, acc, cf_out);
      }
      if (bad) break;  // outputs are undefined; the node counts may exceed |S| and must not index hz_table
      if (Store) {
        finish_nodes(k, d0, w, nn, frac, acc, o);
        continue;
      }
      double ls[2][kLanes] = {}, lc[2][kLanes] = {};
      int64_t* bc = block_count.data() + 2 * b;
      bc[0] = bc[1] = 0;
      finish_layer(k, w, nn, acc, ls, lc, bc);
      for (int i = 0; i < 2; ++i) {  // the lanes in order
        double s = 0.0, c = 0.0;
        for (int l = 0; l < kLanes; ++l) neumaier(s, c, ls[i][l] + lc[i][l]);
        block_sum[2 * b + i] = s + c;
      }
    }
    if (bad) bad_of[t % 64] = 1;
  });
  for (char b : bad_of)
    if (b) return true;
  if (Store || !o.layer_sums) return false;  // the layer sums come from the pass without node outputs
  double s[2] = {}, c[2] = {};
  int64_t n[2] = {};
  for (int64_t b = 0; b < blocks; ++b) {
    for (int i = 0; i < 2; ++i) neumaier(s[i], c[i], block_sum[2 * b + i]);
    for (int i = 0; i < 2; ++i) n[i] += block_count[2 * b + i];
  }
  for (int i = 0; i < 2; ++i) o.layer_sums[i] = s[i] + c[i];
  std::copy(n, n + 2, o.layer_counts);
  for (int64_t cl = 0; cl < C; ++cl) {
    o.class_sums[cl] = 0;
    for (int th = 0; th < nt; ++th) o.class_sums[cl] += class_sum[static_cast<size_t>(C) * th + cl];
  }
  return false;
}

template <typename T>
bool metrics(const void* counts, int64_t C, int64_t N, const int64_t* sizes, const double* pairs,
             const int64_t* table_offset, const double* hz_table, double h_y, double log_k, const MetricsOut& o,
             int threads) {
  const T* n = static_cast<const T*>(counts);
  if (o.fraction)  // node outputs come all together or not at all
    return metrics<T, true>(n, C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, o, threads);
  return metrics<T, false>(n, C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, o, threads);
}

}  // namespace

bool node_metrics_cpu(const void* counts, char count_type, int64_t C, int64_t N, const int64_t* sizes,
                      const double* pairs, const int64_t* table_offset, const double* hz_table, double h_y,
                      double log_k, const MetricsOut& out, int threads) {
  switch (count_type) {
    case 'B': return metrics<uint8_t>(counts, C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, out, threads);
    case 'H': return metrics<uint16_t>(counts, C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, out, threads);
    case 'I': return metrics<uint32_t>(counts, C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, out, threads);
    case 'i': return metrics<int32_t>(counts, C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, out, threads);
    default: return metrics<int64_t>(counts, C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, out, threads);
  }
}

}  // namespace nnp
