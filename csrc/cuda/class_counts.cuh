// class_counts on the GPU. Samples are first grouped by class with a counting
// sort (histogram, scan, scatter: O(samples)), which also checks the labels: an
// out-of-range label is counted in flags[1] and left out, so no kernel ever
// indexes with it and the caller raises. Then each warp walks a segment of the
// class-sorted rows, its lanes reading one row's nodes with coalesced 16-byte
// loads (the block's 8 warps take 8 adjacent node tiles of the same rows, so a
// block reads 4 KB contiguous per row), and keeps a running per-node count in
// registers that it flushes to the output with one atomic per node only when the
// class changes. The output is the caller's int32 or int64 table (O: unsigned int
// or unsigned long long, the types atomicAdd takes; two's complement makes the sum
// the same), which the counts are added into. No per-class table: the same kernel
// serves 2 or 100,000 classes. flags[0] counts warps that saw a non-finite value.
#pragma once
#include "common.cuh"

namespace nnp {

// Labels are read in their own width (int32 or int64), so an int64 label cannot
// wrap into range before it is checked.
template <typename L>
__global__ void class_histogram(const L* labels, long long samples, long long classes, int* hist,
                                unsigned long long* flags) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < samples; i += (long long)gridDim.x * blockDim.x) {
    const L c = labels[i];
    if (c >= 0 && c < classes) atomicAdd(&hist[c], 1);
    else atomicAdd(&flags[1], 1ull);
  }
}

}  // namespace nnp

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

namespace nnp {

template <typename L>
__global__ void class_scatter(const L* labels, long long samples, long long classes, int* cursor, int* order,
                              int* sorted_labels) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < samples; i += (long long)gridDim.x * blockDim.x) {
    const L c = labels[i];
    if (c < 0 || c >= classes) continue;
    const int pos = atomicAdd(&cursor[c], 1);
    order[pos] = static_cast<int>(i);
    sorted_labels[pos] = static_cast<int>(c);
  }
}

}  // namespace nnp

namespace nnp {

constexpr int kCountUnroll = 4;

// Per-lane running counts of V nodes. 2-byte kinds keep two 16-bit counts per
// register and test two elements per instruction (SIMD-within-a-register); a
// flush happens at least every rows_per_warp (< 65536) rows, so halves never carry.
template <typename K, bool Packed2 = sizeof(typename K::Bits) == 2>
struct Counts {
  using U = typename K::Bits;
  static constexpr int V = Vec16<U>::n;
  unsigned int c[V];
  U mx;
  __device__ void clear() {
#pragma unroll
    for (int v = 0; v < V; ++v) c[v] = 0;
  }
  __device__ void add(const Vec16<U>& x) {
#pragma unroll
    for (int v = 0; v < V; ++v) c[v] += K::active(x.e[v]);
  }
  __device__ void check(const Vec16<U>& x) {
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const U a = static_cast<U>(x.e[v] & K::abs);
      mx = a > mx ? a : mx;
    }
  }
  __device__ unsigned int get(int v) const { return c[v]; }
};

template <typename K>
struct Counts<K, true> {
  static constexpr int V = 8;
  unsigned int c[4];
  unsigned int mx;
  __device__ void clear() {
#pragma unroll
    for (int i = 0; i < 4; ++i) c[i] = 0;
  }
  __device__ void add(const Vec16<unsigned short>& x) {
    const unsigned int w[4] = {x.q.x, x.q.y, x.q.z, x.q.w};
    const unsigned int inf2 = (unsigned int)K::inf * 0x00010001u;
#pragma unroll
    for (int i = 0; i < 4; ++i) c[i] += __vcmpltu2(__vsub2(w[i], 0x00010001u), inf2) & 0x00010001u;
  }
  __device__ void check(const Vec16<unsigned short>& x) {
    const unsigned int abs2 = (unsigned int)K::abs * 0x00010001u;
    mx = __vmaxu2(mx, __vmaxu2(__vmaxu2(x.q.x & abs2, x.q.y & abs2), __vmaxu2(x.q.z & abs2, x.q.w & abs2)));
  }
  __device__ unsigned int get(int v) const { return (c[v >> 1] >> (16 * (v & 1))) & 0xFFFFu; }
};

template <typename K, bool Vec, bool Check, typename O>
__global__ void class_counts_kernel(const unsigned char* acts, long long samples, long long nodes,
                                    long long row_bytes, const int* order, const int* sorted_labels,
                                    O* out, unsigned long long* flags, long long rows_per_warp) {
  using U = typename K::Bits;
  constexpr int V = Vec16<U>::n;
  const int lane = threadIdx.x & 31;
  const long long d0 = ((long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * 32 * V + lane * V;
  const long long valid = samples - (long long)flags[1];  // rows with a bad label were left out of the order
  const long long r0 = (long long)blockIdx.y * rows_per_warp;
  const long long r1 = min(valid, r0 + rows_per_warp);
  if (r0 >= valid || d0 - lane * V >= nodes) return;  // uniform across the warp
  Counts<K> cnt;
  cnt.clear();
  cnt.mx = 0;
  int cur = -1;
  auto flush = [&]() {
    if (cur < 0) return;
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const unsigned int n = cnt.get(v);
      if (n && d0 + v < nodes) atomicAdd(&out[cur * nodes + d0 + v], static_cast<O>(n));
    }
    cnt.clear();
  };
  for (long long base = r0; base < r1; base += 32) {
    const long long k = base + lane;
    const int my_row = k < r1 ? order[k] : 0;
    const int my_label = k < r1 ? sorted_labels[k] : -1;
    const int n = static_cast<int>(min(32LL, r1 - base));
    for (int j = 0; j < n; j += kCountUnroll) {  // n is warp-uniform
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
        cnt.add(x[u]);
        if (Check) cnt.check(x[u]);
      }
    }
  }
  flush();
  if (Check) {
    bool bad;
    if constexpr (sizeof(U) == 2) bad = (cnt.mx & 0xFFFFu) >= K::inf || (cnt.mx >> 16) >= K::inf;
    else bad = cnt.mx >= K::inf;
    report_nonfinite(bad, flags);
  }
}

}  // namespace nnp
