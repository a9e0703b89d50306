// Host launcher of class_counts for the extension; the kernels are in the .cuh.
#include "../dispatch.h"
#include "../ops.h"
#include "class_counts.cuh"
#include "launch.h"

#include <type_traits>

namespace nnp {

const char* class_counts_cuda(uintptr_t acts, int kind, int64_t S, int64_t N, int64_t rs, uintptr_t labels,
                              int label_bytes, int64_t C, uintptr_t out, int out_bytes, bool accumulate, uintptr_t work,
                              uintptr_t flags, bool check_finite, int device, uintptr_t stream_) {
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_);
  cudaGetLastError();
  if ((!accumulate && cudaMemsetAsync(reinterpret_cast<void*>(out), 0, C * N * out_bytes, stream) != cudaSuccess) ||
      cudaMemsetAsync(reinterpret_cast<void*>(flags), 0, 2 * sizeof(uint64_t), stream) != cudaSuccess)
    return last_error();
  if (S == 0 || N == 0) return "";
  int* order = reinterpret_cast<int*>(work);
  int* sorted_labels = order + S;
  int* hist = sorted_labels + S;
  if (cudaMemsetAsync(hist, 0, C * sizeof(int), stream) != cudaSuccess) return last_error();
  auto* f = reinterpret_cast<unsigned long long*>(flags);
  const unsigned sort_blocks = static_cast<unsigned>(std::min<int64_t>((S + kBlock - 1) / kBlock, 4096));
  auto sort = [&](auto* lab) {
    class_histogram<<<sort_blocks, kBlock, 0, stream>>>(lab, S, C, hist, f);
    nnp_class_scan<<<1, 1024, 0, stream>>>(hist, C);
    class_scatter<<<sort_blocks, kBlock, 0, stream>>>(lab, S, C, hist, order, sorted_labels);
  };
  if (label_bytes == 8) sort(reinterpret_cast<const long long*>(labels));
  else sort(reinterpret_cast<const int*>(labels));
  auto launch = [&](auto* o) {
    using O = std::remove_pointer_t<decltype(o)>;
    dispatch_kind(kind, [&](auto k) {
      using K = decltype(k);
      constexpr int V = Vec16<typename K::Bits>::n;
      const int64_t row_bytes = rs * static_cast<int64_t>(sizeof(typename K::Bits));
      const int64_t tiles = (N + 32 * V - 1) / (32 * V);
      const int64_t blocks_x = (tiles + 7) / 8;
      const int64_t rpw = rows_per_warp(S, blocks_x * 8);
      const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>((S + rpw - 1) / rpw));
      auto* a = reinterpret_cast<const unsigned char*>(acts);
      const bool vec = aligned16(acts, row_bytes);
      if (vec && check_finite)
        class_counts_kernel<K, true, true, O><<<grid, kBlock, 0, stream>>>(a, S, N, row_bytes, order, sorted_labels, o, f, rpw);
      else if (vec)
        class_counts_kernel<K, true, false, O><<<grid, kBlock, 0, stream>>>(a, S, N, row_bytes, order, sorted_labels, o, f, rpw);
      else if (check_finite)
        class_counts_kernel<K, false, true, O><<<grid, kBlock, 0, stream>>>(a, S, N, row_bytes, order, sorted_labels, o, f, rpw);
      else
        class_counts_kernel<K, false, false, O><<<grid, kBlock, 0, stream>>>(a, S, N, row_bytes, order, sorted_labels, o, f, rpw);
    });
  };
  if (out_bytes == 4) launch(reinterpret_cast<unsigned int*>(out));
  else launch(reinterpret_cast<unsigned long long*>(out));
  return last_error();
}

}  // namespace nnp
