// Declarations of every entry point of nnphases._C. CPU kernels take raw host
// buffers; CUDA launchers take device pointers, sizes and a stream handle, so the
// extension never depends on torch's C++ ABI. Inputs are validated in Python.
#pragma once
#include <cstdint>

namespace nnp {

// out[c, d] += #{s : labels[s] == c and active(acts[s, d])}, out a dense int32 or
// int64 table (out_bytes 4 or 8) the caller zeroed or holds earlier counts in.
// Nodes are adjacent; row_stride is in elements. strategy: 0 auto, 1 direct, 2 sorted.
// Returns true when a non-finite value was seen (check_finite only).
bool class_counts_cpu(const void* acts, int kind, int64_t samples, int64_t nodes, int64_t row_stride,
                      const int32_t* labels, int64_t num_classes, void* out, int out_bytes, bool check_finite,
                      int threads, int strategy);

// out is [nodes, row_bytes] with row_bytes = ceil(samples / 64) * 8.
bool pack_masks_cpu(const void* acts, int kind, int64_t samples, int64_t nodes, int64_t row_stride,
                    uint8_t* out, int64_t row_bytes, bool check_finite, int threads);

// packed is [nodes, row_bytes]; segments as in nnphases/kernels/_segments.py.
void packed_class_counts_cpu(const uint8_t* packed, int64_t nodes, int64_t row_bytes,
                             const int64_t* class_offsets, int64_t num_classes, const int64_t* seg_word,
                             const uint64_t* seg_mask, int64_t* out, int threads);

// Two mask sets a and b of one layer, each [nodes, row_bytes]: inter[c, d] and uni[c, d] (each [num_classes,
// nodes]) are the popcounts of row d's AND and OR under class c's segments; with seg_word null, one class of
// every word, the last one under last_mask.
void mask_overlap_cpu(const uint8_t* a, const uint8_t* b, int64_t nodes, int64_t row_bytes,
                      const int64_t* class_offsets, int64_t num_classes, const int64_t* seg_word,
                      const uint64_t* seg_mask, uint64_t last_mask, int64_t* inter, int64_t* uni, int threads);

// packed [nodes, row_bytes]: out[s] (int64 [samples]) is how many rows have bit s set; padding is never read out.
// strategy: 0 auto (byte counters where the CPU has AVX-512BW, else bit-sliced), 1 bit-sliced, 2 byte counters
// (returns false, out untouched, where the CPU lacks AVX-512BW).
bool sample_popcounts_cpu(const uint8_t* packed, int64_t nodes, int64_t row_bytes, int64_t samples, int64_t* out,
                          int threads, int strategy);

// packed [nodes, row_bytes]: out[i, j] (int64 [nodes, nodes]) = popcount of rows i and j ANDed over the samples.
void coactivation_cpu(const uint8_t* packed, int64_t nodes, int64_t row_bytes, int64_t samples, int64_t* out,
                      int threads);

// packed [nodes, row_bytes], idx [m] sample indices (in range): out [m, m] int64 Hamming distances between the
// chosen samples' codes across the nodes.
void sample_agreement_cpu(const uint8_t* packed, int64_t nodes, int64_t row_bytes, const int64_t* idx, int64_t m,
                          int64_t* out, int threads);

// Benchmark yardstick: each thread popcounts data (words 64-bit words, cache-resident) repeats times; returns the sum.
uint64_t popcount_probe_cpu(const uint64_t* data, int64_t words, int64_t repeats, int threads);

// Outputs of node_metrics_cpu: arrays of [nodes] (class_fraction [classes, nodes]).
struct MetricsOut {
  double* class_fraction = nullptr;
  double* fraction = nullptr;
  double* predictability = nullptr;
  double* informativeness = nullptr;
  double* h_z_given_y = nullptr;
  double* h_y_given_z = nullptr;
  uint8_t* dead = nullptr;
  uint8_t* always_active = nullptr;
};

// Per-node sample-set metrics of one layer (nnphases/metrics.py, same arithmetic) from
// counts [classes, nodes], C-contiguous, of count_type 'B', 'H', 'I' (uint8/16/32), 'i'
// (int32) or 'q' (int64), and class sizes. For each class c with table_offset[c] >= 0,
// pairs[2 (table_offset[c] + m)] is m / |S_c| and the next double |S_c| * h(m / |S_c|);
// classes with offset -1 are computed with logarithms. hz_table, if not null, holds
// H(Zhat) for every node count 0..|S|. h_y is H(Y); log_k is log of the number of classes
// with samples, NaN when fewer than two. Returns true, with outputs undefined, when a
// count is negative or exceeds its class size (it is never used as an index).
bool node_metrics_cpu(const void* counts, char count_type, int64_t num_classes, int64_t nodes,
                      const int64_t* class_sizes, const double* pairs, const int64_t* table_offset,
                      const double* hz_table, double h_y, double log_k, const MetricsOut& out, int threads);

// One count table of layer_metrics_cpu and where its results go: sums[0] and sums[1] are
// the compensated sums over all nodes of |S| H(Zhat|Y) and of H(Zhat) (both 0 on dead and
// always-active nodes), node_counts the dead and the always-active nodes, class_sums
// [classes] each class's sum of counts over the nodes. `tables`: the entropy terms read
// from entropy[table_offset[c] + m] (the second column of node_metrics_cpu's pairs,
// contiguous), else computed with logarithms; `hz`: H(Zhat) from hz_table.
struct MetricsLayer {
  const void* counts = nullptr;  // [classes, nodes], C-contiguous
  char count_type = 'q';
  int64_t nodes = 0;
  bool tables = false;
  bool hz = false;
  double* sums = nullptr;          // 2
  int64_t* node_counts = nullptr;  // 2
  int64_t* class_sums = nullptr;   // [classes]
};

// The layer summaries of num_layers tables measured against the same class sizes, in
// one pass over each, with one team of threads for all. Returns the index of the first
// table with a count outside [0, |S_c|] (outputs then undefined), or -1.
int64_t layer_metrics_cpu(const MetricsLayer* layers, int64_t num_layers, int64_t num_classes,
                          const int64_t* class_sizes, const double* entropy, const int64_t* table_offset,
                          const double* hz_table, int threads);

// Benchmark probe: sums `bytes` (a multiple of 8) as uint64 with `threads` threads.
uint64_t stream_read_cpu(const void* data, int64_t bytes, int threads);

// Auto strategy threshold for class_counts_cpu: bytes of one thread's counter table.
constexpr int64_t kDirectTableBytes = 4 << 20;

#ifdef NNPHASES_WITH_CUDA
// Device pointers; stream is a cudaStream_t as an integer. work holds
// 2 * samples + num_classes + 1 int32, flags two uint64 (non-finite, bad labels). Returns a CUDA error
// string, empty on success. labels are int32 or int64 (label_bytes). out is a dense int32 or int64
// table (out_bytes); the counts are added into it, after zeroing it unless accumulate. device is the
// pointers' CUDA device ordinal.
const char* class_counts_cuda(uintptr_t acts, int kind, int64_t samples, int64_t nodes, int64_t row_stride,
                              uintptr_t labels, int label_bytes, int64_t num_classes, uintptr_t out, int out_bytes,
                              bool accumulate, uintptr_t work, uintptr_t flags, bool check_finite, int device,
                              uintptr_t stream);
const char* pack_masks_cuda(uintptr_t acts, int kind, int64_t samples, int64_t nodes, int64_t row_stride,
                            uintptr_t out, int64_t row_bytes, uintptr_t flags, bool check_finite,
                            int device, uintptr_t stream);
const char* packed_class_counts_cuda(uintptr_t packed, int64_t nodes, int64_t row_bytes, uintptr_t class_offsets,
                                     int64_t num_classes, uintptr_t seg_word, uintptr_t seg_mask, uintptr_t out,
                                     int device, uintptr_t stream);
// The popcount kernels on packed masks [nodes, row_bytes] (row_bytes = ceil(samples / 64) * 8), with the
// CPU kernels' semantics; padding bits are never counted. mask_overlap: out int64 [2, num_classes, nodes] (the
// AND counts, then the OR counts), per class under the segments, or with seg_word 0 whole rows, the last word
// under last_mask. sample_popcounts: out int64 [samples], zeroed here. coactivation: out int64 [nodes, nodes].
// sample_agreement: idx int64 [m] (in range), codes scratch of m * ceil(nodes / 64) uint64, out int64 [m, m].
const char* mask_overlap_cuda(uintptr_t a, uintptr_t b, int64_t nodes, int64_t row_bytes, uintptr_t class_offsets,
                              int64_t num_classes, uintptr_t seg_word, uintptr_t seg_mask, uint64_t last_mask,
                              uintptr_t out, int device, uintptr_t stream);
const char* sample_popcounts_cuda(uintptr_t packed, int64_t nodes, int64_t row_bytes, int64_t samples, uintptr_t out,
                                  int device, uintptr_t stream);
const char* coactivation_cuda(uintptr_t packed, int64_t nodes, int64_t row_bytes, int64_t samples, uintptr_t out,
                              int device, uintptr_t stream);
const char* sample_agreement_cuda(uintptr_t packed, int64_t nodes, int64_t row_bytes, uintptr_t idx, int64_t m,
                                  uintptr_t codes, uintptr_t out, int device, uintptr_t stream);
const char* cuda_device_report();
#endif

}  // namespace nnp
