// Device helpers shared by the kernels: 16-byte loads of V elements and the
// warp-wide OR of the non-finite flag. Compiled by nvcc and by NVRTC (CuPy).
#pragma once
#include "kinds.h"

namespace nnp {

template <typename U>
struct Vec16 {
  static constexpr int n = 16 / sizeof(U);
  union {
    uint4 q;
    U e[16 / sizeof(U)];
  };
};

// Loads this lane's V elements starting at column d0 of row. Vectorised only
// when the caller proved 16-byte alignment of every row; the tail is scalar.
template <typename U, bool Vec>
__device__ __forceinline__ void load_elems(const unsigned char* row, long long d0, long long n, Vec16<U>& out) {
  const U* p = reinterpret_cast<const U*>(row) + d0;
  if (Vec && d0 + Vec16<U>::n <= n) {
    out.q = __ldcs(reinterpret_cast<const uint4*>(p));
  } else {
#pragma unroll
    for (int v = 0; v < Vec16<U>::n; ++v) out.e[v] = d0 + v < n ? p[v] : U(0);
  }
}

__device__ __forceinline__ void report_nonfinite(bool bad, unsigned long long* flags) {
  if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) atomicAdd(flags, 1ull);
}

}  // namespace nnp
