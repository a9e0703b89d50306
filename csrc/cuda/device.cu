// Reports whether a usable CUDA device is present, without crashing when no
// driver is installed (static cudart answers cudaErrorInsufficientDriver).
#include <cstdio>

#include "../ops.h"
#include "launch.h"

namespace nnp {

const char* cuda_device_report() {
  static char buf[256];
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    std::snprintf(buf, sizeof(buf), "no usable CUDA device: %s", cudaGetErrorString(e));
    cudaGetLastError();
  } else if (n == 0) {
    std::snprintf(buf, sizeof(buf), "no CUDA device found");
  } else {
    buf[0] = '\0';
  }
  return buf;
}

}  // namespace nnp
