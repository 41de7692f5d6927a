// CUDA runtime queries for dffx::cuda_device_count (never throws: no driver -> 0).
#include <cuda_runtime.h>

#include "dffx/version.hpp"

namespace dffx {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return count;
}

}  // namespace dffx
