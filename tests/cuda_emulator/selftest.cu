// Small kernels, right and deliberately wrong, that show what the emulator does with them
// (tests/test_cuda_emulated.py). Compiled with dffx's kernels by build.py.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace {

// Right: out[w] = sum over the warp's lanes of (lane + 1), by an xor-shuffle tree.
__global__ void warp_sums(float* out) {
  float v = static_cast<float>(threadIdx.x % 32 + 1);
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  if (threadIdx.x % 32 == 0) out[blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32] = v;
}

// Right: every thread of the block gets the number of threads with a multiple-of-3 index.
__global__ void count_multiples_of_three(float* out) {
  const int n = __syncthreads_count(threadIdx.x % 3 == 0);
  out[blockIdx.x * blockDim.x + threadIdx.x] = static_cast<float>(n);
}

// Right: a shared-memory block reversal, with the barrier between the writes and the reads.
__global__ void reverse_block(const float* in, float* out, bool barrier) {
  __shared__ float tile[256];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  tile[threadIdx.x] = in[i];
  if (barrier) __syncthreads();  // without it (barrier = false) the kernel races
  out[i] = tile[blockDim.x - 1 - threadIdx.x];
}

// Right with `initialise`: every block counts its threads into one shared total. Without it the
// total starts from whatever shared memory held (on a GPU: anything; here: NaN in every block).
__global__ void count_into_shared(float* out, bool initialise) {
  __shared__ float total[1];
  if (initialise && threadIdx.x == 0) total[0] = 0.0f;
  __syncthreads();
  atomicAdd(total, 1.0f);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = total[0];
}

// Wrong: half the block leaves before a barrier the other half waits at.
__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 16) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Wrong: a full-mask shuffle in a block whose second warp has only 16 lanes.
__global__ void partial_warp_shuffle(float* out) {
  out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, 1.0f, 1);
}

void launched(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace

// Runs self-test `which` writing into out (at least 512 floats). 0 on success, 2 on an error
// (message in *error, valid until the next call).
extern "C" int dffx_emu_selftest(int which, const float* in, float* out, const char** error) {
  static std::string message;
  try {
    switch (which) {
      case 0: warp_sums<<<2, 64>>>(out); break;
      case 1: count_multiples_of_three<<<2, 100>>>(out); break;
      case 2: reverse_block<<<2, 256>>>(in, out, true); break;
      case 3: reverse_block<<<2, 256>>>(in, out, false); break;
      case 4: divergent_barrier<<<1, 64>>>(out); break;
      case 5: partial_warp_shuffle<<<1, 48>>>(out); break;
      case 6: warp_sums<<<1, 2048>>>(out); break;  // more threads than a block may have
      case 7: count_into_shared<<<3, 64>>>(out, true); break;
      case 8: count_into_shared<<<3, 64>>>(out, false); break;
      default: throw std::invalid_argument("no such self-test");
    }
    launched("launch");
    return 0;
  } catch (const std::exception& e) {
    message = e.what();
    *error = message.c_str();
    return 2;
  }
}
