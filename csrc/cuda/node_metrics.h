// The CUDA launcher of node_metrics (csrc/cuda/node_metrics.cu), declared apart from
// ops.h. Pointers are device addresses as integers and stream a cudaStream_t as an
// integer, so neither the extension nor its callers depend on torch's C++ ABI.
#pragma once
#include <cstdint>

namespace nnp {

// Element types of the counts the kernels read as they are; nnphases/kernels/cuda.py mirrors these codes.
enum MetricsCount { kCountInt32 = 0, kCountInt64 = 1, kCountUInt8 = 2, kCountUInt16 = 3, kCountUInt32 = 4 };

// Node outputs of node_metrics_cuda: all null (layer summaries only) or all set, except class_fraction
// ([classes, nodes]), which may be null on its own. dead and always_active are one byte a node (bool).
struct MetricsCudaOut {
  uintptr_t class_fraction = 0;
  uintptr_t fraction = 0;
  uintptr_t predictability = 0;
  uintptr_t informativeness = 0;
  uintptr_t h_z_given_y = 0;
  uintptr_t h_y_given_z = 0;
  uintptr_t dead = 0;
  uintptr_t always_active = 0;
};

// Blocks of partials node_metrics_cuda needs: one per 256 nodes.
int64_t node_metrics_blocks(int64_t nodes);

// Sample-set metrics of one layer (nnphases/metrics.py) from counts [classes, nodes], C-contiguous, of type
// count_code, and class_sizes (int64 [classes], on the device). The host passes total = |S|, present = the
// number of classes with samples, h_y = H(Y), log_k = log(present) (NaN below two), and pair_terms: whether
// NumPy would add each class's two entropy terms together (its table rule). partials holds
// 9 * node_metrics_blocks(nodes) doubles of scratch; result receives 9 doubles: the sums of f over nodes
// that are not dead, of the defined p and of the defined u, then how many of each, the dead and the
// always-active nodes, and the number of counts outside [0, class_sizes[c]] (the outputs are meaningless
// when it is not 0). Returns a CUDA error string, empty on success.
const char* node_metrics_cuda(uintptr_t counts, int count_code, int64_t classes, int64_t nodes, uintptr_t class_sizes,
                              int64_t total, double present, double h_y, double log_k, bool pair_terms,
                              const MetricsCudaOut& out, uintptr_t partials, uintptr_t result, int device,
                              uintptr_t stream);

}  // namespace nnp
