// node_metrics on the CPU: the per-node sample-set metrics of one layer from its
// per-class counts, in one pass over the [classes, nodes] table, with the arithmetic of
// nnphases/metrics.py in the same order (so the two agree to the last few ulps of the
// logarithms). Threads take ranges of node blocks; inside a block the classes are the
// outer loop, so every read of the table is a contiguous row segment. The layer
// summaries have their own pass (layer_metrics.cpp), which builds no per-node arrays.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../ops.h"
#include "metrics_common.h"
#include "parallel.h"

namespace nnp {
namespace {

using namespace metrics;

// One checked class row of a block with tables: m / |S_c| and |S_c| * h(m / |S_c|) are one
// 16-byte pair per possible count m (NumPy computed both).
template <typename T>
void row_tab(const T* row, int64_t w, const double* pr, double* frac, double* acc, double* cf_out) {
  int64_t j = 0;
#if defined(__AVX2__)
  for (; j + 4 <= w; j += 4) {
    const int64_t i0 = row[j], i1 = row[j + 1], i2 = row[j + 2], i3 = row[j + 3];
    // Four (fraction, entropy) pairs into a vector of fractions and one of entropies.
    const __m256d lo = _mm256_insertf128_pd(_mm256_castpd128_pd256(_mm_loadu_pd(pr + 2 * i0)), _mm_loadu_pd(pr + 2 * i2), 1);
    const __m256d hi = _mm256_insertf128_pd(_mm256_castpd128_pd256(_mm_loadu_pd(pr + 2 * i1)), _mm_loadu_pd(pr + 2 * i3), 1);
    const __m256d cf = _mm256_unpacklo_pd(lo, hi), g = _mm256_unpackhi_pd(lo, hi);
    _mm256_storeu_pd(frac + j, _mm256_add_pd(_mm256_loadu_pd(frac + j), cf));
    _mm256_storeu_pd(acc + j, _mm256_add_pd(_mm256_loadu_pd(acc + j), g));
    _mm256_storeu_pd(cf_out + j, cf);
  }
#endif
  for (; j < w; ++j) {
    const int64_t i = row[j];
    const double cf = pr[2 * i], g = pr[2 * i + 1];
    cf_out[j] = cf, frac[j] += cf;
    acc[j] += g;
  }
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

template <typename T>
bool node_pass(const T* counts, int64_t C, int64_t N, const int64_t* sizes, const double* pairs,
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
  std::vector<char> bad_of(64);
  const int nt = resolve_threads(threads, std::min<int64_t>(blocks, C * N / (1 << 18) + 1));
  run_threads(nt, [&](int t) {
    int64_t b0, b1;
    split_range(blocks, nt, t, 1, b0, b1);
    alignas(64) int64_t nn[kBlock];
    alignas(64) double frac[kBlock], acc[kBlock];
    int64_t unused_sum = 0;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t d0 = b * kBlock, w = std::min(kBlock, N - d0);
      std::fill(nn, nn + w, int64_t{0});
      std::fill(frac, frac + w, 0.0);
      std::fill(acc, acc + w, 0.0);
      for (int64_t c = 0; c < C; ++c) {
        const T* row = counts + c * N + d0;
        double* cf_out = o.class_fraction + c * N + d0;
        const uint64_t s = static_cast<uint64_t>(sizes[c]);
        // An absent class adds nothing to f[i] or the entropies; its counts must be 0. Outputs are
        // undefined after a bad count (node counts may then exceed |S| and must not index hz_table).
        if (add_counts(row, w, nn, unused_sum) > s) {
          bad_of[t % 64] = 1;
          return;
        }
        if (s == 0)
          std::fill(cf_out, cf_out + w, nan);
        else if (table_offset[c] >= 0)
          row_tab(row, w, pairs + 2 * table_offset[c], frac, acc, cf_out);
        else
          row_log<T, true>(row, w, static_cast<double>(s), frac, acc, cf_out);
      }
      finish_nodes(k, d0, w, nn, frac, acc, o);
    }
  });
  for (char b : bad_of)
    if (b) return true;
  return false;
}

}  // namespace

bool node_metrics_cpu(const void* counts, char count_type, int64_t C, int64_t N, const int64_t* sizes,
                      const double* pairs, const int64_t* table_offset, const double* hz_table, double h_y,
                      double log_k, const MetricsOut& out, int threads) {
  return with_count_type(count_type, [&](auto tag) {
    using T = decltype(tag);
    return node_pass(static_cast<const T*>(counts), C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, out,
                     threads);
  });
}

}  // namespace nnp
