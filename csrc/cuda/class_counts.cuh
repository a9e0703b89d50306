// class_counts on the GPU. Samples are first grouped by class with a counting
// sort (histogram, scan, scatter: O(samples)); then each warp walks a segment of
// the class-sorted rows, its lanes reading one row's nodes with coalesced 16-byte
// loads, and keeps a running per-node count in registers that it flushes to the
// int64 output with one atomic per node only when the class changes. No shared
// memory, no per-class table: the same kernel serves 2 or 100,000 classes.
#pragma once
#include "common.cuh"

extern "C" __global__ void nnp_class_histogram(const int* labels, long long samples, int* hist) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < samples; i += (long long)gridDim.x * blockDim.x)
    atomicAdd(&hist[labels[i]], 1);
}

// Exclusive scan of hist[0, classes) in place; one block of 1024 threads.
extern "C" __global__ void nnp_class_scan(int* hist, long long classes) {
  __shared__ int part[1024];
  __shared__ int carry;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (long long base = 0; base < classes; base += 1024) {
    const long long i = base + threadIdx.x;
    const int v = i < classes ? hist[i] : 0;
    part[threadIdx.x] = v;
    __syncthreads();
    for (int off = 1; off < 1024; off <<= 1) {
      const int add = threadIdx.x >= off ? part[threadIdx.x - off] : 0;
      __syncthreads();
      part[threadIdx.x] += add;
      __syncthreads();
    }
    if (i < classes) hist[i] = carry + part[threadIdx.x] - v;
    __syncthreads();
    if (threadIdx.x == 1023) carry += part[1023];
    __syncthreads();
  }
}

extern "C" __global__ void nnp_class_scatter(const int* labels, long long samples, int* cursor, int* order,
                                             int* sorted_labels) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < samples; i += (long long)gridDim.x * blockDim.x) {
    const int c = labels[i];
    const int pos = atomicAdd(&cursor[c], 1);
    order[pos] = static_cast<int>(i);
    sorted_labels[pos] = c;
  }
}

namespace nnp {

constexpr int kCountUnroll = 4;

template <typename K, bool Vec, bool Check>
__global__ void class_counts_kernel(const unsigned char* acts, long long samples, long long nodes,
                                    long long row_bytes, const int* order, const int* sorted_labels,
                                    unsigned long long* out, unsigned long long* flags, long long rows_per_warp) {
  using U = typename K::Bits;
  constexpr int V = Vec16<U>::n;
  const int lane = threadIdx.x & 31;
  const long long d0 = (long long)blockIdx.x * 32 * V + lane * V;
  const long long segment = (long long)blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const long long r0 = segment * rows_per_warp;
  const long long r1 = min(samples, r0 + rows_per_warp);
  if (r0 >= samples) return;  // uniform across the warp
  unsigned int cnt[V];
#pragma unroll
  for (int v = 0; v < V; ++v) cnt[v] = 0;
  int cur = -1;
  bool bad = false;
  auto flush = [&]() {
    if (cur < 0) return;
#pragma unroll
    for (int v = 0; v < V; ++v) {
      if (cnt[v] && d0 + v < nodes) atomicAdd(&out[cur * nodes + d0 + v], (unsigned long long)cnt[v]);
      cnt[v] = 0;
    }
  };
  for (long long base = r0; base < r1; base += 32) {
    const long long k = base + lane;
    const int my_row = k < r1 ? order[k] : 0;
    const int my_label = k < r1 ? sorted_labels[k] : -1;
    const int n = static_cast<int>(min(32LL, r1 - base));
    for (int j = 0; j < 32; j += kCountUnroll) {
      if (j >= n) break;  // n is warp-uniform
      Vec16<U> x[kCountUnroll];
#pragma unroll
      for (int u = 0; u < kCountUnroll; ++u) {
        const int row = __shfl_sync(0xffffffffu, my_row, j + u);
        if (j + u < n && d0 < nodes) load_elems<U, Vec>(acts + row * row_bytes, d0, nodes, x[u]);
        else x[u].q = make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kCountUnroll; ++u) {
        const int label = __shfl_sync(0xffffffffu, my_label, j + u);
        if (j + u >= n) continue;
        if (label != cur) {
          flush();
          cur = label;
        }
#pragma unroll
        for (int v = 0; v < V; ++v) {
          cnt[v] += K::active(x[u].e[v]);
          if (Check) bad |= K::nonfinite(x[u].e[v]);
        }
      }
    }
  }
  flush();
  if (Check) report_nonfinite(bad, flags);
}

}  // namespace nnp
