// CUDA landmark feature sampling, forward and backward (contract in sampling.hpp).
//
// One warp per landmark: lane k handles channels k, k + 32, ...; the squared norm (and, in the
// backward pass, f . g) is reduced with warp shuffles. The forward pass writes the unnormalised
// v to the output first and rescales its own entries after the reduction, so each lane only
// reads back what it wrote. Output writes are coalesced (landmark-major layout); the map reads
// stride over channel planes. The backward pass scatters with atomicAdd into dL/dmaps.
// Built with --fmad=false (the target's flag), so v matches the C++ kernel bit for bit; the
// norm's summation order differs (tree vs. sequential), hence float-rounding differences.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "dffx/sampling.hpp"

#include "../common/sampling_math.hpp"

namespace dffx::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("dffx CUDA ") + what + ": " + cudaGetErrorString(err));
}

constexpr int kThreads = 256;  // 8 warps = 8 landmarks per block
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

using detail::landmark_taps;
using detail::Taps;

__device__ __forceinline__ float bilinear(const float* __restrict__ plane, const Taps& t) {
  const float bx = 1.0f - t.ax, by = 1.0f - t.ay;
  return by * (bx * __ldg(plane + t.i00) + t.ax * __ldg(plane + t.i01)) +
         t.ay * (bx * __ldg(plane + t.i10) + t.ax * __ldg(plane + t.i11));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__global__ void sample_forward(const float* __restrict__ maps, const float* __restrict__ points,
                               const uint8_t* __restrict__ visible, SamplingShape s, float* __restrict__ features) {
  // The landmark index is uniform across a warp, so whole warps leave together (shuffles stay legal).
  const int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;  // b * L + l
  const int lane = threadIdx.x % kWarp;
  if (i >= s.batch * s.num_landmarks) return;
  const int64_t C = s.channels, plane = s.height * s.width;
  float* out = features + i * C;
  Taps t;
  if (!landmark_taps(points + 2 * i, visible[i], s.height, s.width, &t)) {
    for (int64_t c = lane; c < C; c += kWarp) out[c] = 0.0f;
    return;
  }
  const float* m = maps + (i / s.num_landmarks) * C * plane;
  float ss = 0.0f;
  for (int64_t c = lane; c < C; c += kWarp) {
    const float v = bilinear(m + c * plane, t);
    out[c] = v;
    ss += v * v;
  }
  const float n = sqrtf(warp_sum(ss));
  const bool zero = n < kSamplingMinNorm;
  for (int64_t c = lane; c < C; c += kWarp) out[c] = zero ? 0.0f : out[c] / n;
}

__global__ void sample_backward(const float* __restrict__ maps, const float* __restrict__ points,
                                const uint8_t* __restrict__ visible, const float* __restrict__ grad_features,
                                SamplingShape s, float* grad_maps) {
  const int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (i >= s.batch * s.num_landmarks) return;
  Taps t;
  if (!landmark_taps(points + 2 * i, visible[i], s.height, s.width, &t)) return;
  const int64_t C = s.channels, plane = s.height * s.width, b = i / s.num_landmarks;
  const float* m = maps + b * C * plane;
  const float* g = grad_features + i * C;
  float ss = 0.0f;
  for (int64_t c = lane; c < C; c += kWarp) {
    const float v = bilinear(m + c * plane, t);
    ss += v * v;
  }
  const float n = sqrtf(warp_sum(ss));
  if (n < kSamplingMinNorm) return;  // uniform across the warp
  float dot = 0.0f;
  for (int64_t c = lane; c < C; c += kWarp) dot += (bilinear(m + c * plane, t) / n) * g[c];
  dot = warp_sum(dot);
  const float bx = 1.0f - t.ax, by = 1.0f - t.ay;
  const float w00 = by * bx, w01 = by * t.ax, w10 = t.ay * bx, w11 = t.ay * t.ax;
  for (int64_t c = lane; c < C; c += kWarp) {
    const float f = bilinear(m + c * plane, t) / n;
    const float gv = (g[c] - f * dot) / n;
    float* out = grad_maps + (b * C + c) * plane;
    atomicAdd(out + t.i00, w00 * gv);
    atomicAdd(out + t.i01, w01 * gv);
    atomicAdd(out + t.i10, w10 * gv);
    atomicAdd(out + t.i11, w11 * gv);
  }
}

void validate_sizes(const SamplingShape& s, const char* who) {
  if (s.batch <= 0 || s.channels <= 0 || s.height <= 0 || s.width <= 0 || s.num_landmarks < 0)
    throw std::invalid_argument(std::string("dffx CUDA ") + who + ": B, C, H, W must be positive and L >= 0");
  if (s.channels_last)
    throw std::invalid_argument(std::string("dffx CUDA ") + who + ": needs (B, C, H, W) maps, not channels_last");
}

unsigned blocks_for_landmarks(int64_t count) {
  const int64_t per_block = kThreads / kWarp;
  const int64_t blocks = (count + per_block - 1) / per_block;
  if (blocks > 0x7FFFFFFF) throw std::invalid_argument("dffx CUDA sample_landmark_features: too many landmarks");
  return static_cast<unsigned>(blocks);
}

}  // namespace

void sample_landmark_features(const float* maps, const float* points, const uint8_t* visible,
                              const SamplingShape& s, float* features, void* stream_ptr) {
  validate_sizes(s, "sample_landmark_features");
  const int64_t count = s.batch * s.num_landmarks;
  if (count == 0) return;
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  sample_forward<<<blocks_for_landmarks(count), kThreads, 0, stream>>>(maps, points, visible, s, features);
  check(cudaGetLastError(), "sample_landmark_features launch");
}

void sample_landmark_features_backward(const float* maps, const float* points, const uint8_t* visible,
                                       const float* grad_features, const SamplingShape& s, float* grad_maps,
                                       void* stream_ptr) {
  validate_sizes(s, "sample_landmark_features_backward");
  const int64_t count = s.batch * s.num_landmarks;
  if (count == 0) return;
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  sample_backward<<<blocks_for_landmarks(count), kThreads, 0, stream>>>(maps, points, visible, grad_features, s,
                                                                        grad_maps);
  check(cudaGetLastError(), "sample_landmark_features_backward launch");
}

}  // namespace dffx::cuda
