// layer_metrics on the CPU: the layer summaries of many [classes, nodes] count tables
// measured against the same class sizes (a checkpoint's layers) in one call, without
// any per-node array. One team of threads takes the blocks of all the tables as one
// range, so a checkpoint of many small layers pays one thread start and stays balanced.
//
// The layer sums are compensated (Neumaier) in four lanes per block (node j in lane
// j % 4), the lanes combined in order, then the blocks of a table in block order: the
// vector (AVX2) and scalar paths do the same operations, and nothing depends on the
// thread count or on which tables share the call. nnphases/kernels/_numba_metrics.py
// sums the same way.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../ops.h"
#include "metrics_common.h"
#include "parallel.h"

namespace nnp {
namespace {

using namespace metrics;

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

// add_counts and the class's entropy lookups in one sweep of a class row segment, from g,
// the class's column of entropy terms: the count is clamped to |S_c| before it indexes it,
// so a bad count (flagged by the returned maximum) is never read past the table.
template <typename T>
uint64_t add_and_look(const T* row, int64_t w, int64_t* nn, int64_t& sum, const double* g, uint64_t s,
                      double* acc) {
  const char* ahead = reinterpret_cast<const char*>(row + 2 * kBlock);  // a hint, as in add_counts
  for (int64_t b = 0; b < w * static_cast<int64_t>(sizeof(T)); b += 64) __builtin_prefetch(ahead + b);
  uint64_t mx = 0;
  int64_t total = 0;
  for (int64_t j = 0; j < w; ++j) {
    const uint64_t v = as_u64(row[j]);
    nn[j] += static_cast<int64_t>(row[j]);
    total += static_cast<int64_t>(row[j]);
    mx = std::max(mx, v);
    acc[j] += g[std::min(v, s)];
  }
  sum += total;
  return mx;
}

// One block of one table: the block's compensated sums and dead/always-active counts,
// and each class's row sum added to row_sum. False when a count is out of range.
template <typename T>
bool layer_block(const T* counts, int64_t C, int64_t N, int64_t d0, int64_t w, const int64_t* sizes,
                 const double* entropy, const int64_t* table_offset, bool tables, const Scalars& k, double* block_sum,
                 int64_t* block_count, int64_t* row_sum) {
  alignas(64) int64_t nn[kBlock];
  alignas(64) double acc[kBlock];
  std::fill(nn, nn + w, int64_t{0});
  std::fill(acc, acc + w, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    const T* row = counts + c * N + d0;
    const uint64_t s = static_cast<uint64_t>(sizes[c]);
    if (tables && s > 0) {
      if (add_and_look(row, w, nn, row_sum[c], entropy + table_offset[c], s, acc) > s) return false;
      continue;
    }
    // An absent class adds nothing to the entropies; its counts must be 0.
    if (add_counts(row, w, nn, row_sum[c]) > s) return false;
    if (s > 0) row_log<T, false>(row, w, static_cast<double>(s), nullptr, acc, nullptr);
  }
  double ls[2][kLanes] = {}, lc[2][kLanes] = {};
  block_count[0] = block_count[1] = 0;
  finish_layer(k, w, nn, acc, ls, lc, block_count);
  for (int i = 0; i < 2; ++i) {  // the lanes in order
    double s = 0.0, c = 0.0;
    for (int l = 0; l < kLanes; ++l) neumaier(s, c, ls[i][l] + lc[i][l]);
    block_sum[i] = s + c;
  }
  return true;
}

}  // namespace

int64_t layer_metrics_cpu(const MetricsLayer* layers, int64_t L, int64_t C, const int64_t* sizes, const double* entropy,
                          const int64_t* table_offset, const double* hz_table, int threads) {
  int64_t total = 0;
  for (int64_t c = 0; c < C; ++c) total += sizes[c];
  std::vector<int64_t> first(L + 1, 0);  // the tables' first blocks in the common range
  int64_t elements = 0;
  for (int64_t l = 0; l < L; ++l) {
    first[l + 1] = first[l] + (layers[l].nodes + kBlock - 1) / kBlock;
    elements += C * layers[l].nodes;
  }
  const int64_t blocks = first[L];
  std::vector<double> block_sum(2 * blocks);
  std::vector<int64_t> block_count(2 * blocks);
  const int nt = resolve_threads(threads, std::min<int64_t>(blocks, elements / (1 << 18) + 1));
  // Per thread and table: integer row sums, merged exactly; the first table with a bad count (L: none). A
  // thread stops at its first bad block, which lies in the first bad table of its range, so the least over
  // the threads is the first bad table of all.
  std::vector<int64_t> class_sum(static_cast<size_t>(nt) * L * C, 0);
  std::vector<int64_t> bad(nt, L);
  run_threads(nt, [&](int t) {
    int64_t b0, b1;
    split_range(blocks, nt, t, 1, b0, b1);
    int64_t l = std::upper_bound(first.begin(), first.end(), b0) - first.begin() - 1;
    for (int64_t b = b0; b < b1; ++b) {
      while (b >= first[l + 1]) ++l;
      const MetricsLayer& layer = layers[l];
      const int64_t d0 = (b - first[l]) * kBlock, w = std::min(kBlock, layer.nodes - d0);
      const Scalars k{total, static_cast<double>(total), 0.0, 0.0, 0.0, 0.0, layer.hz ? hz_table : nullptr};
      int64_t* row_sum = class_sum.data() + (static_cast<size_t>(t) * L + l) * C;
      const bool ok = with_count_type(layer.count_type, [&](auto tag) {
        using T = decltype(tag);
        return layer_block(static_cast<const T*>(layer.counts), C, layer.nodes, d0, w, sizes, entropy, table_offset,
                           layer.tables, k, block_sum.data() + 2 * b, block_count.data() + 2 * b, row_sum);
      });
      if (!ok) {
        bad[t] = l;
        return;
      }
    }
  });
  const int64_t first_bad = *std::min_element(bad.begin(), bad.end());
  if (first_bad < L) return first_bad;
  for (int64_t l = 0; l < L; ++l) {
    double s[2] = {}, c[2] = {};
    int64_t n[2] = {};
    for (int64_t b = first[l]; b < first[l + 1]; ++b) {
      for (int i = 0; i < 2; ++i) neumaier(s[i], c[i], block_sum[2 * b + i]);
      for (int i = 0; i < 2; ++i) n[i] += block_count[2 * b + i];
    }
    for (int i = 0; i < 2; ++i) layers[l].sums[i] = s[i] + c[i];
    std::copy(n, n + 2, layers[l].node_counts);
    for (int64_t cl = 0; cl < C; ++cl) {
      int64_t sum = 0;
      for (int th = 0; th < nt; ++th) sum += class_sum[(static_cast<size_t>(th) * L + l) * C + cl];
      layers[l].class_sums[cl] = sum;
    }
  }
  return -1;
}

}  // namespace nnp
