// Host launcher of pack_masks for the extension; the kernel is in the .cuh.
#include "../dispatch.h"
#include "../ops.h"
#include "launch.h"
#include "pack_masks.cuh"

namespace nnp {

const char* pack_masks_cuda(uintptr_t acts, int kind, int64_t S, int64_t N, int64_t rs, uintptr_t out,
                            int64_t row_bytes, uintptr_t flags, bool check_finite, int device, uintptr_t stream_) {
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_);
  cudaGetLastError();
  if (cudaMemsetAsync(reinterpret_cast<void*>(flags), 0, sizeof(uint64_t), stream) != cudaSuccess) return last_error();
  if (S == 0 || N == 0) return "";
  const int64_t words = row_bytes / 8;
  dispatch_kind(kind, [&](auto k) {
    using K = decltype(k);
    constexpr int V = Vec16<typename K::Bits>::n;
    const int64_t rb = rs * static_cast<int64_t>(sizeof(typename K::Bits));
    const dim3 grid(static_cast<unsigned>((N + 32 * V - 1) / (32 * V)),
                    static_cast<unsigned>(std::min<int64_t>((words + 7) / 8, 65535)));
    auto* a = reinterpret_cast<const unsigned char*>(acts);
    auto* o = reinterpret_cast<unsigned long long*>(out);
    auto* f = reinterpret_cast<unsigned long long*>(flags);
    const bool vec = aligned16(acts, rb);
    if (vec && check_finite) pack_masks_kernel<K, true, true><<<grid, kBlock, 0, stream>>>(a, S, N, rb, o, words, f);
    else if (vec) pack_masks_kernel<K, true, false><<<grid, kBlock, 0, stream>>>(a, S, N, rb, o, words, f);
    else if (check_finite) pack_masks_kernel<K, false, true><<<grid, kBlock, 0, stream>>>(a, S, N, rb, o, words, f);
    else pack_masks_kernel<K, false, false><<<grid, kBlock, 0, stream>>>(a, S, N, rb, o, words, f);
  });
  return last_error();
}

}  // namespace nnp
