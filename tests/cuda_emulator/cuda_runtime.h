// Stand-in for <cuda_runtime.h> that lets dffx's .cu files compile as C++ and run on the CPU
// under the emulator in emulator.cpp (tests only; see README.md beside this file).
//
// It covers what csrc/cuda uses and nothing more: the kernel qualifiers, dim3 and the thread
// and block indices, __syncthreads / __syncthreads_count, __shfl_xor_sync, the atomics, a few
// intrinsics, and the runtime calls the host code makes. A kernel launch `k<<<g, b, m, s>>>(a)`
// is rewritten by build.py into `::dffx_emu::Launch(g, b, m, s).run(k, a)` before compiling.
#pragma once

#include <math.h>  // expf, logf, sqrtf in the global namespace, as in device code

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>

// ------------------------------------------------------------------ qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One OS thread runs every thread of a block (as fibers) and blocks run one after another, so a
// function-static variable is exactly one copy per block, as __shared__ memory is.
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

// ------------------------------------------------------------------ index types
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;
struct float4 {
  float x, y, z, w;
};

// Set by the emulator before it resumes a thread.
extern dim3 threadIdx, blockIdx, blockDim, gridDim;

// ------------------------------------------------------------------ runtime API subset
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
struct CUstream_st;
using cudaStream_t = CUstream_st*;

cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream);

// ------------------------------------------------------------------ device functions
void __syncthreads();
int __syncthreads_count(int predicate);
float __shfl_xor_sync(unsigned mask, float value, int lane_mask, int width = 32);

// Atomics: only one emulated thread runs at a time, so a read-modify-write is atomic.
inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  const unsigned long long old = *address;
  *address = old + value;
  return old;
}
inline unsigned long long atomicMax(unsigned long long* address, unsigned long long value) {
  const unsigned long long old = *address;
  if (value > old) *address = value;
  return old;
}

inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// ------------------------------------------------------------------ launches
namespace dffx_emu {

// Fills a __shared__ array with 0xFF bytes the first time a thread of the running block reaches
// its declaration (build.py inserts the call after each one): shared memory is undefined when a
// block starts, and a NaN shows a read before the first write.
void poison_shared(void* array, size_t bytes);

// Runs body() once per thread of every block of `grid` (blocks in order, the threads of a
// block as fibers that switch only at __syncthreads / warp shuffles). Returns the error a real
// launch would report for this configuration (cudaErrorInvalidConfiguration) without running.
cudaError_t launch(dim3 grid, dim3 block, void (*body)(void*), void* context);

class Launch {
 public:
  Launch(dim3 grid, dim3 block, size_t dynamic_shared = 0, cudaStream_t stream = nullptr)
      : grid_(grid), block_(block), dynamic_shared_(dynamic_shared) {
    (void)stream;  // the emulator runs every launch synchronously
  }

  // Arguments are converted to the kernel's parameter types and copied, as CUDA passes them.
  template <typename... Params, typename... Args>
  void run(void (*kernel)(Params...), Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args), "kernel launched with the wrong number of arguments");
    struct Context {
      void (*kernel)(Params...);
      std::tuple<std::decay_t<Params>...> params;
    } context{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
    auto body = [](void* c) {
      auto* ctx = static_cast<Context*>(c);
      std::apply(ctx->kernel, ctx->params);
    };
    if (dynamic_shared_ != 0) throw std::logic_error("emulator: dynamic shared memory is not emulated");
    record(launch(grid_, block_, body, &context));
  }

 private:
  static void record(cudaError_t err);
  dim3 grid_, block_;
  size_t dynamic_shared_;
};

}  // namespace dffx_emu
