// Host helpers for the launchers: device facts, alignment, error strings.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace nnp {

inline int sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 132;
  return sms;
}

inline bool aligned16(uintptr_t ptr, int64_t row_bytes) { return ptr % 16 == 0 && row_bytes % 16 == 0; }

inline const char* last_error() {
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}

// Makes `device` current for the launch and restores the caller's device: the
// extension's static cudart keeps its own notion of the current device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&prev_) != cudaSuccess) prev_ = -1;
    if (prev_ != device) cudaSetDevice(device);
  }
  ~DeviceGuard() {
    if (prev_ >= 0) cudaSetDevice(prev_);
  }

 private:
  int prev_ = -1;
};

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

constexpr int kBlock = 256;  // 8 warps

// Rows per warp for class_counts: one grid row of warps per segment of the
// class-sorted samples; enough segments for about two full waves of the GPU,
// each at least one 32-row batch and fewer than 65536 rows (16-bit counters),
// grid.y within its limit.
inline int64_t rows_per_warp(int64_t samples, int64_t warps_per_segment) {
  const int64_t warps = static_cast<int64_t>(sm_count()) * 64 * 2;
  const int64_t segments = (warps + warps_per_segment - 1) / warps_per_segment;
  int64_t r = (samples + segments - 1) / segments;
  const int64_t floor_rows = (samples + 65534) / 65535;
  r = r > floor_rows ? r : floor_rows;
  r = (r + 31) / 32 * 32;
  return r > 32 ? r : 32;
}

// Lanes per node row of mask_overlap without labels: a power of two as wide as the row has words, at most a
// warp, so short rows do not leave most of a warp idle.
inline int overlap_lanes(int64_t words) {
  int lanes = 1;
  while (lanes < 32 && lanes < words) lanes *= 2;
  return lanes;
}

// Rows per chunk of sample_popcounts: enough chunks for about two full waves of warps over the word columns,
// each at least 128 rows (the counters' read-out and atomics stay a small part of a chunk's work) and at most
// kPopChunkMax (255, what eight counter planes hold).
inline int64_t popcount_chunk_rows(int64_t nodes, int64_t words) {
  const int64_t columns = words > 32 ? (words + 31) / 32 : 1;
  const int64_t warps = static_cast<int64_t>(sm_count()) * 64 * 2;
  const int64_t chunks = (warps + columns - 1) / columns;
  const int64_t r = (nodes + chunks - 1) / chunks;
  return r < 128 ? 128 : (r > 255 ? 255 : r);
}

}  // namespace nnp
