// Host launcher of node_metrics for the extension; the kernels are in the .cuh, which
// CuPy compiles too.
#include "launch.h"
#include "node_metrics.cuh"
#include "node_metrics.h"

#include <type_traits>

namespace nnp {

int64_t node_metrics_blocks(int64_t nodes) { return (nodes + kMetricsBlock - 1) / kMetricsBlock; }

namespace {

template <typename T, bool Store, bool Pair>
void launch(const void* counts, int64_t C, int64_t N, const long long* sizes, int64_t total, double present,
            double h_y, double log_k, const MetricsCudaOut& o, double* partials, cudaStream_t stream) {
  auto d = [](uintptr_t p) { return reinterpret_cast<double*>(p); };
  auto b = [](uintptr_t p) { return reinterpret_cast<unsigned char*>(p); };
  node_metrics_kernel<T, Store, Pair><<<static_cast<unsigned>(node_metrics_blocks(N)), kMetricsBlock, 0, stream>>>(
      static_cast<const T*>(counts), C, N, sizes, total, present, h_y, log_k, d(o.class_fraction), d(o.fraction),
      d(o.predictability), d(o.informativeness), d(o.h_z_given_y), d(o.h_y_given_z), b(o.dead), b(o.always_active),
      partials);
}

template <typename T>
void launch(bool store, bool pair, const void* counts, int64_t C, int64_t N, const long long* sizes, int64_t total,
            double present, double h_y, double log_k, const MetricsCudaOut& o, double* partials, cudaStream_t stream) {
  if (store && pair) launch<T, true, true>(counts, C, N, sizes, total, present, h_y, log_k, o, partials, stream);
  else if (store) launch<T, true, false>(counts, C, N, sizes, total, present, h_y, log_k, o, partials, stream);
  else if (pair) launch<T, false, true>(counts, C, N, sizes, total, present, h_y, log_k, o, partials, stream);
  else launch<T, false, false>(counts, C, N, sizes, total, present, h_y, log_k, o, partials, stream);
}

}  // namespace

const char* node_metrics_cuda(uintptr_t counts, int count_code, int64_t C, int64_t N, uintptr_t class_sizes,
                              int64_t total, double present, double h_y, double log_k, bool pair_terms,
                              const MetricsCudaOut& out, uintptr_t partials_, uintptr_t result, int device,
                              uintptr_t stream_) {
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_);
  cudaGetLastError();
  auto* partials = reinterpret_cast<double*>(partials_);
  if (N > 0) {
    const void* c = reinterpret_cast<const void*>(counts);
    const auto* sizes = reinterpret_cast<const long long*>(class_sizes);
    const bool store = out.fraction != 0;
    auto go = [&](auto* type) {
      using T = std::remove_pointer_t<decltype(type)>;
      launch<T>(store, pair_terms, c, C, N, sizes, total, present, h_y, log_k, out, partials, stream);
    };
    switch (count_code) {
      case kCountInt32: go(static_cast<int*>(nullptr)); break;
      case kCountUInt8: go(static_cast<unsigned char*>(nullptr)); break;
      case kCountUInt16: go(static_cast<unsigned short*>(nullptr)); break;
      case kCountUInt32: go(static_cast<unsigned int*>(nullptr)); break;
      default: go(static_cast<long long*>(nullptr)); break;
    }
  }
  // Also with no nodes: the result (zero sums and counts) is what the caller reads back.
  nnp_node_metrics_combine<<<1, kMetricsCombine, 0, stream>>>(partials, node_metrics_blocks(N),
                                                                reinterpret_cast<double*>(result));
  return last_error();
}

}  // namespace nnp
