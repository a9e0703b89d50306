// Element kinds, shared by the C++ CPU kernels, the nvcc-built launchers and
// CuPy's NVRTC: no standard headers, only built-in integer types. Every kind is
// read as unsigned bits of its width; two integer comparisons decide activity
// exactly for -0.0, denormals, infinities and NaN (see nnphases/kernels/_kinds.py).
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define NNP_HD __host__ __device__ __forceinline__
#else
#define NNP_HD inline
#endif

namespace nnp {

template <typename U, unsigned long long Inf, unsigned long long Abs>
struct Kind {
  using Bits = U;
  static constexpr U inf = static_cast<U>(Inf);
  static constexpr U abs = static_cast<U>(Abs);
  // b - 1 wraps 0 to the maximum, so one unsigned compare tests 0 < b <= inf.
  static NNP_HD bool active(U b) { return static_cast<U>(b - 1) < inf; }
  static NNP_HD bool nonfinite(U b) { return static_cast<U>(b & abs) >= inf; }
};

using KindBool = Kind<unsigned char, 0xFFull, 0x0ull>;
using KindF16 = Kind<unsigned short, 0x7C00ull, 0x7FFFull>;
using KindBF16 = Kind<unsigned short, 0x7F80ull, 0x7FFFull>;
using KindF32 = Kind<unsigned int, 0x7F800000ull, 0x7FFFFFFFull>;
using KindF64 = Kind<unsigned long long, 0x7FF0000000000000ull, 0x7FFFFFFFFFFFFFFFull>;

// Codes match Kind.code in nnphases/kernels/_kinds.py.
enum KindCode { kBool = 0, kF16 = 1, kBF16 = 2, kF32 = 3, kF64 = 4 };

}  // namespace nnp
