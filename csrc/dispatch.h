// Host-side switch from a kind code to its type: the only place a run-time kind
// becomes a template argument, for the CPU kernels and the CUDA launchers alike.
#pragma once
#include "kinds.h"

namespace nnp {

template <typename Fn>
decltype(auto) dispatch_kind(int kind, Fn&& fn) {
  switch (kind) {
    case kBool: return fn(KindBool{});
    case kF16: return fn(KindF16{});
    case kBF16: return fn(KindBF16{});
    case kF32: return fn(KindF32{});
    default: return fn(KindF64{});
  }
}

}  // namespace nnp
