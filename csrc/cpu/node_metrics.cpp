// node_metrics on the CPU: the sample-set metrics of one layer from its per-class
// counts, in one pass over the [classes, nodes] table, with the arithmetic of
// nnphases/metrics.py in the same order (so the two agree to the last few ulps of
// the logarithms). Threads take ranges of node blocks; inside a block the classes
// are the outer loop, so every read of the table is a contiguous row segment.
// The layer sums are compensated (Neumaier) per block and combined in block
// order, so they do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../ops.h"
#include "parallel.h"

namespace nnp {
namespace {

// Nodes per block: the block's accumulators (24 bytes a node) and a row segment stay in
// L1 next to the classes' tables. Also the grain of the layer sums: numba.py uses the same.
constexpr int64_t kBlock = 256;

// -m * log(m / d) with 0 log 0 = 0 for integer-valued 0 <= m <= d (metrics._neg_xlogx_ratio).
inline double neg_xlogx_ratio(double m, double d) { return 0.0 - std::log(std::fmax(m, 1.0) / d) * m; }

struct Sum {  // Neumaier's compensated sum
  double s = 0.0, c = 0.0;
  void add(double x) {
    const double t = s + x;
    c += std::fabs(s) >= std::fabs(x) ? (s - t) + x : (x - t) + s;
    s = t;
  }
  double value() const { return s + c; }
};

// One block of nodes [d0, d0 + w): per-class contributions summed in class order into
// nn (node counts), frac (sum of class fractions) and acc (|S| * H(Zhat|Y)). With tables
// (Tab), m / |S_c| and |S_c| * h(m / |S_c|) are one 16-byte pair per possible count m, both
// computed by NumPy (the division it does per count, done once per value).
template <typename T, bool Store, bool Tab>
void block_sums(const T* counts, int64_t C, int64_t N, const int64_t* sizes, const double* pairs,
                const int64_t* table_offset, int64_t d0, int64_t w, int64_t* nn, double* frac, double* acc,
                double* class_fraction) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t j = 0; j < w; ++j) nn[j] = 0, frac[j] = 0.0, acc[j] = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    const T* row = counts + c * N + d0;
    double* cf_out = Store ? class_fraction + c * N + d0 : nullptr;
    const int64_t s = sizes[c];
    if (s == 0) {  // validated counts of an absent class are 0: nothing to add to f[i] or the entropies
      if (Store)
        for (int64_t j = 0; j < w; ++j) cf_out[j] = nan;
      continue;
    }
    if (Tab && table_offset[c] >= 0) {
      const double* pr = pairs + 2 * table_offset[c];
      for (int64_t j = 0; j < w; ++j) {
        const int64_t v = row[j];
        const double cf = pr[2 * v], g = pr[2 * v + 1];
        nn[j] += v;
        if (Store) cf_out[j] = cf;
        frac[j] += cf;
        acc[j] += g;
      }
    } else {  // two terms added one at a time, as metrics._sum_class_entropies does without a table
      const double sd = static_cast<double>(s);
      for (int64_t j = 0; j < w; ++j) {
        const int64_t v = row[j];
        const double m = static_cast<double>(v), cf = m / sd;
        nn[j] += v;
        if (Store) cf_out[j] = cf;
        frac[j] += cf;
        acc[j] += neg_xlogx_ratio(m, sd);
        acc[j] += neg_xlogx_ratio(sd - m, sd);
      }
    }
  }
}

template <typename T, bool Store, bool Tab>
void metrics(const T* counts, int64_t C, int64_t N, const int64_t* sizes, const double* pairs,
             const int64_t* table_offset, const double* hz_table, double h_y, double log_k, const MetricsOut& o,
             int threads) {
  int64_t total = 0, present = 0;
  for (int64_t c = 0; c < C; ++c) {
    total += sizes[c];
    present += sizes[c] > 0;
  }
  const double log2 = std::log(2.0);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double tot = static_cast<double>(total), k = static_cast<double>(present);
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  std::vector<double> block_sum(3 * blocks);
  std::vector<int64_t> block_count(5 * blocks);
  const int nt = resolve_threads(threads, std::min<int64_t>(blocks, C * N / (1 << 18) + 1));
  run_threads(nt, [&](int t) {
    int64_t b0, b1;
    split_range(blocks, nt, t, 1, b0, b1);
    std::vector<int64_t> nn(kBlock);
    std::vector<double> frac(kBlock), acc(kBlock);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t d0 = b * kBlock, w = std::min(kBlock, N - d0);
      block_sums<T, Store, Tab>(counts, C, N, sizes, pairs, table_offset, d0, w, nn.data(), frac.data(), acc.data(),
                                o.class_fraction);
      Sum f_sum, p_sum, u_sum;
      int64_t f_n = 0, p_n = 0, u_n = 0, dead_n = 0, always_n = 0;
      for (int64_t j = 0; j < w; ++j) {
        const int64_t d = d0 + j;
        const bool dead = nn[j] == 0, always = nn[j] == total;
        const double f = frac[j] / k;
        double hzy = nan, hyz = nan;
        if (!(dead || always)) {
          const double q = static_cast<double>(nn[j]);
          const double hz = hz_table ? hz_table[nn[j]] : (neg_xlogx_ratio(q, tot) + neg_xlogx_ratio(tot - q, tot)) / tot;
          // np.clip and np.maximum; no NaN can reach here, so plain comparisons (inlined, unlike fmin) do.
          hzy = std::min(std::max(acc[j] / tot, 0.0), hz);
          hyz = std::max(h_y - hz + hzy, 0.0);
        }
        const double p = 1.0 - hzy / log2;
        const double u = 1.0 - hyz / log_k;  // log_k is NaN when fewer than two classes have samples
        if (Store) {
          o.fraction[d] = f;
          o.predictability[d] = p;
          o.informativeness[d] = u;
          o.h_z_given_y[d] = hzy;
          o.h_y_given_z[d] = hyz;
          o.dead[d] = dead;
          o.always_active[d] = always;
        }
        if (!dead) f_sum.add(f), ++f_n;
        if (p == p) p_sum.add(p), ++p_n;
        if (u == u) u_sum.add(u), ++u_n;
        dead_n += dead;
        always_n += always;
      }
      double* bs = block_sum.data() + 3 * b;
      int64_t* bc = block_count.data() + 5 * b;
      bs[0] = f_sum.value(), bs[1] = p_sum.value(), bs[2] = u_sum.value();
      bc[0] = f_n, bc[1] = p_n, bc[2] = u_n, bc[3] = dead_n, bc[4] = always_n;
    }
  });
  if (!o.layer_sums) return;
  Sum sums[3];
  for (int i = 0; i < 5; ++i) o.layer_counts[i] = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    for (int i = 0; i < 3; ++i) sums[i].add(block_sum[3 * b + i]);
    for (int i = 0; i < 5; ++i) o.layer_counts[i] += block_count[5 * b + i];
  }
  for (int i = 0; i < 3; ++i) o.layer_sums[i] = sums[i].value();
}

template <typename T>
void metrics(const T* counts, int64_t C, int64_t N, const int64_t* sizes, const double* pairs,
             const int64_t* table_offset, const double* hz_table, double h_y, double log_k, const MetricsOut& o,
             int threads) {
  bool tab = false;
  for (int64_t c = 0; c < C; ++c) tab |= sizes[c] > 0 && table_offset[c] >= 0;
  const bool store = o.fraction != nullptr;  // node outputs come all together or not at all
  auto run = [&](auto store_c, auto tab_c) {
    metrics<T, decltype(store_c)::value, decltype(tab_c)::value>(counts, C, N, sizes, pairs, table_offset, hz_table,
                                                                  h_y, log_k, o, threads);
  };
  using Yes = std::true_type;
  using No = std::false_type;
  if (store && tab) run(Yes{}, Yes{});
  else if (store) run(Yes{}, No{});
  else if (tab) run(No{}, Yes{});
  else run(No{}, No{});
}

}  // namespace

void node_metrics_cpu(const void* counts, int count_bytes, int64_t C, int64_t N, const int64_t* sizes,
                      const double* pairs, const int64_t* table_offset, const double* hz_table, double h_y,
                      double log_k, const MetricsOut& out, int threads) {
  if (count_bytes == 4)
    metrics(static_cast<const int32_t*>(counts), C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, out, threads);
  else
    metrics(static_cast<const int64_t*>(counts), C, N, sizes, pairs, table_offset, hz_table, h_y, log_k, out, threads);
}

}  // namespace nnp
