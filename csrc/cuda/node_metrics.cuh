// node_metrics on the GPU: the sample-set metrics of one layer from its per-class
// counts [classes, nodes], with the arithmetic of nnphases/metrics.py in the order
// csrc/cpu/node_metrics.cpp uses (classes summed in class order per node, the same
// divisions, clip and max), so fractions and flags are identical to NumPy's and the
// entropies differ only by the device's log(). One thread per node reads its column
// (a warp reads 32 adjacent counts of a row: coalesced). The entropy terms are
// computed with log() here; the host passes only |S|, the number of classes with
// samples, H(Y) and log |C|.
//
// Counts are checked in the same pass: a count below 0 or above its class size is
// counted in the block's partials and never used as an index, so the caller raises
// the host path's ValueError when the total is not 0. Layer sums are compensated
// (Neumaier) and reduced in a fixed order, first within each block (the same 256
// nodes the CPU blocks take), then across blocks by node_metrics_combine: no float
// atomics, so they do not change from run to run. Compiled by nvcc and by NVRTC
// (CuPy): built-in types and device math only.
#pragma once

namespace nnp {

constexpr int kMetricsBlock = 256;    // nodes per block: one per thread
constexpr int kMetricsPartial = 9;    // doubles per block: sums of f, p, u; counts of f, p, u, dead, always, bad
constexpr int kMetricsCombine = 1024;  // threads of the combining block

struct NeumaierSum {
  double s, c;
  __device__ __forceinline__ void add(double x) {
    const double t = s + x;
    c += fabs(s) >= fabs(x) ? (s - t) + x : (x - t) + s;
    s = t;
  }
  __device__ __forceinline__ void add(const NeumaierSum& o) {
    add(o.s);
    c += o.c;
  }
};

// -m * log(m / d) with 0 log 0 = 0 for integer-valued 0 <= m <= d (metrics._neg_xlogx_ratio). __dmul_rn:
// the product is rounded on its own, as NumPy's is, never contracted into an fma with a neighbour.
__device__ __forceinline__ double metrics_neg_xlogx_ratio(double m, double d) {
  return 0.0 - __dmul_rn(log(fmax(m, 1.0) / d), m);
}

// Sums (s, c) across the warp in a fixed tree; lane 0 ends with the warp's total.
__device__ __forceinline__ void warp_neumaier(NeumaierSum& x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    NeumaierSum o;
    o.s = __shfl_down_sync(0xffffffffu, x.s, off);
    o.c = __shfl_down_sync(0xffffffffu, x.c, off);
    x.add(o);
  }
}

// Pair: add each class's two entropy terms together before adding them to the node's sum, as NumPy does
// when it tabulates them (metrics._sum_class_entropies' rule, decided on the host); otherwise one at a time.
// Store: write the node arrays (class_fraction too when not null); the block's partials are always written.
template <typename T, bool Store, bool Pair>
__global__ void node_metrics_kernel(const T* counts, long long classes, long long nodes, const long long* sizes,
                                    long long total, double present, double h_y, double log_k,
                                    double* class_fraction, double* fraction, double* predictability,
                                    double* informativeness, double* h_z_given_y, double* h_y_given_z,
                                    unsigned char* dead_out, unsigned char* always_out, double* partials) {
  const double nan = __longlong_as_double(0x7ff8000000000000LL);
  const double log2 = 0.6931471805599453094172321;  // rounded by the compiler: the double math.log(2.0) gives
  const long long i = (long long)blockIdx.x * kMetricsBlock + threadIdx.x;
  const bool live = i < nodes;
  long long nn = 0;
  double frac = 0.0, acc = 0.0;
  bool bad = false;
  if (live) {
    for (long long c = 0; c < classes; ++c) {
      const long long s = __ldg(sizes + c);
      const long long v = static_cast<long long>(counts[c * nodes + i]);
      bad |= v < 0 || v > s;  // an absent class (s == 0) must have no counts
      if (s == 0) {
        if (Store && class_fraction) class_fraction[c * nodes + i] = nan;
        continue;
      }
      const double sd = static_cast<double>(s), m = static_cast<double>(v), cf = m / sd;
      nn += v;
      frac += cf;
      if (Store && class_fraction) class_fraction[c * nodes + i] = cf;
      // The first term's ratio fmax(m, 1) / |S_c| is cf itself when m >= 1; when m == 0 the term is 0 with
      // either ratio (0 * log 1 and 0 * log(1 / |S_c|) both give 0.0 - 0 = 0.0), so one division serves both.
      const double a = 0.0 - __dmul_rn(log(v > 0 ? cf : 1.0), m), b = metrics_neg_xlogx_ratio(sd - m, sd);
      if (Pair) {
        acc += a + b;
      } else {
        acc += a;
        acc += b;
      }
    }
  }
  const bool dead = nn == 0, always = nn == total;
  const double tot = static_cast<double>(total);
  const double f = frac / present;
  double hzy = nan, hyz = nan;
  if (!(dead || always)) {
    const double q = static_cast<double>(nn);
    const double hz = (metrics_neg_xlogx_ratio(q, tot) + metrics_neg_xlogx_ratio(tot - q, tot)) / tot;
    // np.clip and np.maximum: the bounds the true values obey, removing only rounding. No NaN reaches here.
    hzy = fmin(fmax(acc / tot, 0.0), hz);
    hyz = fmax(h_y - hz + hzy, 0.0);
  }
  const double p = 1.0 - hzy / log2;
  const double u = 1.0 - hyz / log_k;  // log_k is NaN when fewer than two classes have samples
  if (Store && live) {
    fraction[i] = f;
    predictability[i] = p;
    informativeness[i] = u;
    h_z_given_y[i] = hzy;
    h_y_given_z[i] = hyz;
    dead_out[i] = dead;
    always_out[i] = always;
  }

  const bool has_f = live && !dead, has_p = live && p == p, has_u = live && u == u;
  NeumaierSum sums[3] = {{has_f ? f : 0.0, 0.0}, {has_p ? p : 0.0, 0.0}, {has_u ? u : 0.0, 0.0}};
  __shared__ NeumaierSum warp_sums[kMetricsBlock / 32][3];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    warp_neumaier(sums[k]);
    if (lane == 0) warp_sums[warp][k] = sums[k];
  }
  const int counts_of[6] = {__syncthreads_count(has_f), __syncthreads_count(has_p), __syncthreads_count(has_u),
                            __syncthreads_count(live && dead), __syncthreads_count(live && always),
                            __syncthreads_count(live && bad)};
  if (threadIdx.x == 0) {  // the warps' totals in warp order, as the CPU adds a block's nodes in node order
    double* out = partials + (long long)blockIdx.x * kMetricsPartial;
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      NeumaierSum t = warp_sums[0][k];
      for (int w = 1; w < kMetricsBlock / 32; ++w) t.add(warp_sums[w][k]);
      out[k] = t.s + t.c;
    }
#pragma unroll
    for (int k = 0; k < 6; ++k) out[3 + k] = counts_of[k];
  }
}

}  // namespace nnp

// The blocks' partials [blocks, 9] reduced to result[9] (sums of f, p, u; counts of f, p, u, dead, always
// active, bad counts) by one block of kMetricsCombine threads: thread t adds a run of consecutive blocks, then
// the runs are combined in a fixed tree. The order depends only on the number of blocks, so the layer sums are
// the same on every run and every GPU. Counts are exact integers in doubles (< 2**53).
extern "C" __global__ void nnp_node_metrics_combine(const double* partials, long long blocks, double* result) {
  using nnp::kMetricsCombine;
  using nnp::kMetricsPartial;
  const long long per = (blocks + kMetricsCombine - 1) / kMetricsCombine;
  const long long b0 = threadIdx.x * per, b1 = min(blocks, b0 + per);
  nnp::NeumaierSum sums[3] = {{0.0, 0.0}, {0.0, 0.0}, {0.0, 0.0}};
  long long counts[6] = {0, 0, 0, 0, 0, 0};
  for (long long b = b0; b < b1; ++b) {
    const double* row = partials + b * kMetricsPartial;
#pragma unroll
    for (int k = 0; k < 3; ++k) sums[k].add(row[k]);
#pragma unroll
    for (int k = 0; k < 6; ++k) counts[k] += static_cast<long long>(row[3 + k]);
  }
  __shared__ nnp::NeumaierSum warp_sums[kMetricsCombine / 32][3];
  __shared__ long long warp_counts[kMetricsCombine / 32][6];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    nnp::warp_neumaier(sums[k]);
    if (lane == 0) warp_sums[warp][k] = sums[k];
  }
#pragma unroll
  for (int k = 0; k < 6; ++k) {
    for (int off = 16; off > 0; off >>= 1) counts[k] += __shfl_down_sync(0xffffffffu, counts[k], off);
    if (lane == 0) warp_counts[warp][k] = counts[k];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      nnp::NeumaierSum t = warp_sums[0][k];
      for (int w = 1; w < kMetricsCombine / 32; ++w) t.add(warp_sums[w][k]);
      result[k] = t.s + t.c;
    }
#pragma unroll
    for (int k = 0; k < 6; ++k) {
      long long t = 0;
      for (int w = 0; w < kMetricsCombine / 32; ++w) t += warp_counts[w][k];
      result[3 + k] = static_cast<double>(t);
    }
  }
}
