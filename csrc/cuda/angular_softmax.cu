// Fused CUDA angular-softmax loss (contract in angular_softmax.hpp). No (N, K, C) logits exist:
//
// forward   grid (pixel tiles, K). One thread per pixel keeps s * f_p in registers; the block
//           streams h_k through shared memory kClassTile classes at a time and every thread
//           runs an online (max-rescaled) log-sum-exp over the classes, tracking the first
//           arg max and the true-class logit. It writes lse_pk and the per-pixel loss; a
//           second kernel (one block per k) sums the losses in a fixed order (deterministic).
//           Hits are counted with __syncthreads_count + one integer atomicAdd per block.
// grad_f    grid (pixel tiles, segmentation groups). Same streaming of h_k; per class the
//           thread recomputes P = exp(z - lse) and accumulates (P - onehot) h_kj into a
//           register vector. With more than one group, groups are summed with atomicAdd.
// grad_h    grid (class tiles, K, pixel groups). The block keeps its kClassTile x D slice of
//           h_k in shared memory and sweeps its pixels tile by tile: the threads compute the
//           weights W = coef (P - onehot) of their pixel for the slice into shared memory,
//           then each thread accumulates sum_p W_pj f_p for its own (class, feature-range)
//           outputs in registers. Pixel groups are summed with atomicAdd when there are several.
//
// Feature dimensions are padded to a compile-time DT (16, 32 or 64). Dot products use
// __fmaf_rn explicitly: the core is compiled with --fmad=false (for the rasterizer's bitwise
// contract), which would otherwise split every multiply-add here.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "dffx/angular_softmax.hpp"

namespace dffx::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("dffx CUDA angular_softmax ") + what + ": " + cudaGetErrorString(err));
}

constexpr int kClassTile = 32;  // classes per shared-memory tile

template <int DT>
struct Config;
template <>
struct Config<16> {
  static constexpr int kPixels = 128;  // threads per block = pixels per tile
};
template <>
struct Config<32> {
  static constexpr int kPixels = 128;
};
template <>
struct Config<64> {
  static constexpr int kPixels = 64;
};

struct Sizes {
  int64_t N;
  int K, C, D;
};

// s * f_p (zero-padded to DT) into registers.
template <int DT>
__device__ __forceinline__ void load_feature(const float* __restrict__ f, int64_t p, int D, float factor,
                                             float (&fr)[DT]) {
#pragma unroll
  for (int d = 0; d < DT; ++d) fr[d] = d < D ? factor * f[p * D + d] : 0.0f;
}

// Classes [j0, j0 + kClassTile) of h_k (C, D) into shared memory (kClassTile x DT, zero-padded).
template <int DT, int THREADS>
__device__ __forceinline__ void load_class_tile(const float* __restrict__ hk, int j0, int C, int D, float* hs) {
  for (int i = threadIdx.x; i < kClassTile * DT; i += THREADS) {
    const int jj = i / DT, d = i % DT;
    hs[i] = (j0 + jj < C && d < D) ? hk[static_cast<int64_t>(j0 + jj) * D + d] : 0.0f;
  }
}

template <int DT>
__device__ __forceinline__ float dot(const float (&fr)[DT], const float* hs_row) {
  const float4* h4 = reinterpret_cast<const float4*>(hs_row);
  float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
  for (int q = 0; q < DT / 4; ++q) {
    const float4 h = h4[q];
    a0 = __fmaf_rn(fr[4 * q], h.x, a0);
    a1 = __fmaf_rn(fr[4 * q + 1], h.y, a1);
    a0 = __fmaf_rn(fr[4 * q + 2], h.z, a0);
    a1 = __fmaf_rn(fr[4 * q + 3], h.w, a1);
  }
  return a0 + a1;
}

template <int DT>
__global__ void __launch_bounds__(Config<DT>::kPixels) forward_kernel(const float* __restrict__ f,
                                                                      const int32_t* __restrict__ labels,
                                                                      const float* __restrict__ h, Sizes s,
                                                                      float scale, float* __restrict__ lse,
                                                                      float* __restrict__ nll,
                                                                      unsigned long long* __restrict__ correct) {
  constexpr int TP = Config<DT>::kPixels;
  __shared__ __align__(16) float hs[kClassTile * DT];
  const int k = blockIdx.y;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * TP + threadIdx.x;
  const bool valid = p < s.N;
  float fr[DT];
  load_feature<DT>(f, valid ? p : 0, s.D, scale, fr);
  const int label = valid ? labels[p * s.K + k] : -1;
  const float* hk = h + static_cast<int64_t>(k) * s.C * s.D;
  float m = -CUDART_INF_F, sum = 0.0f, z_label = 0.0f;
  int arg = -1;
  for (int j0 = 0; j0 < s.C; j0 += kClassTile) {
    __syncthreads();
    load_class_tile<DT, TP>(hk, j0, s.C, s.D, hs);
    __syncthreads();
    if (!valid) continue;
    const int count = min(kClassTile, s.C - j0);
    for (int jj = 0; jj < count; ++jj) {
      const float z = dot<DT>(fr, hs + jj * DT);
      if (j0 + jj == label) z_label = z;
      if (z > m) {  // new maximum: rescale the running sum (first arg max kept on ties)
        sum = __fmaf_rn(sum, expf(m - z), 1.0f);
        m = z;
        arg = j0 + jj;
      } else {
        sum += expf(z - m);
      }
    }
  }
  if (valid) {
    const float l = m + logf(sum);
    lse[static_cast<int64_t>(k) * s.N + p] = l;
    nll[static_cast<int64_t>(k) * s.N + p] = l - z_label;
  }
  const int hits = __syncthreads_count(valid && arg == label);
  if (threadIdx.x == 0 && hits > 0) atomicAdd(correct + k, static_cast<unsigned long long>(hits));
}

// loss[k] = mean_p nll[k, p], summed in double in a fixed order (one block per k).
constexpr int kReduceThreads = 256;
__global__ void __launch_bounds__(kReduceThreads) reduce_loss_kernel(const float* __restrict__ nll, int64_t N,
                                                                     float* __restrict__ loss) {
  __shared__ double part[kReduceThreads];
  const float* row = nll + static_cast<int64_t>(blockIdx.x) * N;
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += kReduceThreads) acc += row[i];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kReduceThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[blockIdx.x] = static_cast<float>(part[0] / static_cast<double>(N));
}

template <int DT>
__global__ void __launch_bounds__(Config<DT>::kPixels) grad_features_kernel(
    const float* __restrict__ f, const int32_t* __restrict__ labels, const float* __restrict__ h,
    const float* __restrict__ lse, const float* __restrict__ grad_loss, Sizes s, float scale, int groups,
    float* __restrict__ grad_f) {
  constexpr int TP = Config<DT>::kPixels;
  __shared__ __align__(16) float hs[kClassTile * DT];
  const int64_t p = static_cast<int64_t>(blockIdx.x) * TP + threadIdx.x;
  const bool valid = p < s.N;
  float fr[DT], gf[DT];
  load_feature<DT>(f, valid ? p : 0, s.D, scale, fr);
#pragma unroll
  for (int d = 0; d < DT; ++d) gf[d] = 0.0f;
  for (int k = blockIdx.y; k < s.K; k += groups) {
    const float coef = grad_loss[k] * scale / static_cast<float>(s.N);
    const int label = valid ? labels[p * s.K + k] : -1;
    const float l = valid ? lse[static_cast<int64_t>(k) * s.N + p] : 0.0f;
    const float* hk = h + static_cast<int64_t>(k) * s.C * s.D;
    for (int j0 = 0; j0 < s.C; j0 += kClassTile) {
      __syncthreads();
      load_class_tile<DT, TP>(hk, j0, s.C, s.D, hs);
      __syncthreads();
      if (!valid) continue;
      const int count = min(kClassTile, s.C - j0);
      for (int jj = 0; jj < count; ++jj) {
        const float* row = hs + jj * DT;
        const float w = coef * (expf(dot<DT>(fr, row) - l) - (j0 + jj == label ? 1.0f : 0.0f));
        const float4* h4 = reinterpret_cast<const float4*>(row);
#pragma unroll
        for (int q = 0; q < DT / 4; ++q) {
          const float4 hv = h4[q];
          gf[4 * q] = __fmaf_rn(w, hv.x, gf[4 * q]);
          gf[4 * q + 1] = __fmaf_rn(w, hv.y, gf[4 * q + 1]);
          gf[4 * q + 2] = __fmaf_rn(w, hv.z, gf[4 * q + 2]);
          gf[4 * q + 3] = __fmaf_rn(w, hv.w, gf[4 * q + 3]);
        }
      }
    }
  }
  if (!valid) return;
#pragma unroll
  for (int d = 0; d < DT; ++d) {
    if (d >= s.D) break;
    if (groups == 1)
      grad_f[p * s.D + d] = gf[d];
    else
      atomicAdd(grad_f + p * s.D + d, gf[d]);
  }
}

template <int DT>
__global__ void __launch_bounds__(Config<DT>::kPixels) grad_class_vectors_kernel(
    const float* __restrict__ f, const int32_t* __restrict__ labels, const float* __restrict__ h,
    const float* __restrict__ lse, const float* __restrict__ grad_loss, Sizes s, float scale,
    int64_t pixels_per_group, float* __restrict__ grad_h) {
  constexpr int TP = Config<DT>::kPixels;
  constexpr int kSlices = TP / kClassTile;  // feature ranges per class
  constexpr int kWidth = DT / kSlices;      // outputs per thread
  static_assert(TP % kClassTile == 0 && DT % kSlices == 0, "bad tile configuration");
  __shared__ __align__(16) float hs[kClassTile * DT];
  __shared__ __align__(16) float fs[TP * DT];
  __shared__ float ws[TP * (kClassTile + 1)];  // +1: conflict-free column writes
  const int k = blockIdx.y, j0 = blockIdx.x * kClassTile;
  const float* hk = h + static_cast<int64_t>(k) * s.C * s.D;
  load_class_tile<DT, TP>(hk, j0, s.C, s.D, hs);
  const float coef = grad_loss[k] * scale / static_cast<float>(s.N);
  const int my_class = threadIdx.x % kClassTile, my_slice = threadIdx.x / kClassTile;
  float acc[kWidth];
#pragma unroll
  for (int q = 0; q < kWidth; ++q) acc[q] = 0.0f;
  const int64_t p_begin = static_cast<int64_t>(blockIdx.z) * pixels_per_group;
  const int64_t p_end = p_begin + pixels_per_group < s.N ? p_begin + pixels_per_group : s.N;
  for (int64_t p0 = p_begin; p0 < p_end; p0 += TP) {
    __syncthreads();  // previous tile's fs / ws fully consumed (and hs loaded, first time)
    for (int i = threadIdx.x; i < TP * DT; i += TP) {
      const int64_t pp = p0 + i / DT;
      const int d = i % DT;
      fs[i] = (pp < p_end && d < s.D) ? f[pp * s.D + d] : 0.0f;
    }
    const int64_t p = p0 + threadIdx.x;
    float* w = ws + threadIdx.x * (kClassTile + 1);
    if (p < p_end) {
      float fr[DT];
      load_feature<DT>(f, p, s.D, scale, fr);
      const int label = labels[p * s.K + k];
      const float l = lse[static_cast<int64_t>(k) * s.N + p];
#pragma unroll 4
      for (int jj = 0; jj < kClassTile; ++jj) {
        const int j = j0 + jj;
        w[jj] = j < s.C ? coef * (expf(dot<DT>(fr, hs + jj * DT) - l) - (j == label ? 1.0f : 0.0f)) : 0.0f;
      }
    } else {
      for (int jj = 0; jj < kClassTile; ++jj) w[jj] = 0.0f;
    }
    __syncthreads();
    const int rows = static_cast<int>(p_end - p0 < TP ? p_end - p0 : TP);
    for (int i = 0; i < rows; ++i) {
      const float wv = ws[i * (kClassTile + 1) + my_class];
      const float* fi = fs + i * DT + my_slice * kWidth;
#pragma unroll
      for (int q = 0; q < kWidth; ++q) acc[q] = __fmaf_rn(wv, fi[q], acc[q]);
    }
  }
  const int j = j0 + my_class;
  if (j >= s.C) return;
  const bool single = pixels_per_group >= s.N;
#pragma unroll
  for (int q = 0; q < kWidth; ++q) {
    const int d = my_slice * kWidth + q;
    if (d >= s.D) break;
    float* out = grad_h + (static_cast<int64_t>(k) * s.C + j) * s.D + d;
    if (single)
      *out = acc[q];
    else
      atomicAdd(out, acc[q]);
  }
}

void validate(const AngularSoftmaxShape& shape, float scale, const char* who) {
  const std::string w = std::string("dffx CUDA ") + who;
  if (shape.num_pixels <= 0 || shape.num_segmentations <= 0 || shape.num_classes <= 0 || shape.dim <= 0)
    throw std::invalid_argument(w + ": every size must be positive");
  if (shape.dim > 64) throw std::invalid_argument(w + ": the CUDA kernel supports D <= 64, got " +
                                                  std::to_string(shape.dim));
  if (shape.num_segmentations > 65535) throw std::invalid_argument(w + ": K must be <= 65535");
  if (shape.num_classes > (1 << 30)) throw std::invalid_argument(w + ": too many classes");
  if (shape.num_pixels > static_cast<int64_t>(0x7FFFFFFF) * 64)
    throw std::invalid_argument(w + ": too many pixels");
  if (!(std::isfinite(scale) && scale > 0.0f)) throw std::invalid_argument(w + ": scale must be finite and > 0");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks worth launching to fill the device (a few per SM).
int64_t target_blocks() {
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  return 4 * static_cast<int64_t>(std::max(sms, 1));
}

template <int DT>
void forward_impl(const float* f, const int32_t* labels, const float* h, const Sizes& s, float scale, float* loss,
                  int64_t* correct, float* lse, cudaStream_t stream) {
  constexpr int TP = Config<DT>::kPixels;
  float* nll = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&nll), sizeof(float) * s.N * s.K, stream), "malloc");
  check(cudaMemsetAsync(correct, 0, sizeof(int64_t) * s.K, stream), "memset");
  const dim3 grid(static_cast<unsigned>(ceil_div(s.N, TP)), static_cast<unsigned>(s.K));
  forward_kernel<DT><<<grid, TP, 0, stream>>>(f, labels, h, s, scale, lse, nll,
                                              reinterpret_cast<unsigned long long*>(correct));
  reduce_loss_kernel<<<static_cast<unsigned>(s.K), kReduceThreads, 0, stream>>>(nll, s.N, loss);
  const cudaError_t launch = cudaGetLastError();
  check(cudaFreeAsync(nll, stream), "free");
  check(launch, "forward launch");
}

template <int DT>
void backward_impl(const float* f, const int32_t* labels, const float* h, const float* lse, const float* grad_loss,
                   const Sizes& s, float scale, float* grad_f, float* grad_h, cudaStream_t stream) {
  constexpr int TP = Config<DT>::kPixels;
  const int64_t want = target_blocks();
  const int64_t pixel_tiles = ceil_div(s.N, TP);
  if (grad_f) {
    const int groups = static_cast<int>(std::clamp<int64_t>(ceil_div(want, pixel_tiles), 1, s.K));
    if (groups > 1) check(cudaMemsetAsync(grad_f, 0, sizeof(float) * s.N * s.D, stream), "memset");
    const dim3 grid(static_cast<unsigned>(pixel_tiles), static_cast<unsigned>(groups));
    grad_features_kernel<DT><<<grid, TP, 0, stream>>>(f, labels, h, lse, grad_loss, s, scale, groups, grad_f);
    check(cudaGetLastError(), "grad_features launch");
  }
  if (grad_h) {
    const int64_t class_tiles = ceil_div(s.C, kClassTile);
    const int64_t groups = std::clamp<int64_t>(ceil_div(want, class_tiles * s.K), 1, std::min<int64_t>(pixel_tiles, 65535));
    const int64_t per_group = ceil_div(pixel_tiles, groups) * TP;
    const int64_t used = ceil_div(s.N, per_group);
    if (used > 1) check(cudaMemsetAsync(grad_h, 0, sizeof(float) * s.K * s.C * s.D, stream), "memset");
    const dim3 grid(static_cast<unsigned>(class_tiles), static_cast<unsigned>(s.K), static_cast<unsigned>(used));
    grad_class_vectors_kernel<DT><<<grid, TP, 0, stream>>>(f, labels, h, lse, grad_loss, s, scale, per_group,
                                                           grad_h);
    check(cudaGetLastError(), "grad_class_vectors launch");
  }
}

Sizes sizes_of(const AngularSoftmaxShape& shape) {
  return {shape.num_pixels, static_cast<int>(shape.num_segmentations), static_cast<int>(shape.num_classes),
          static_cast<int>(shape.dim)};
}

}  // namespace

void angular_softmax_forward(const float* features, const int32_t* labels, const float* class_vectors,
                             const AngularSoftmaxShape& shape, float scale, float* loss, int64_t* correct,
                             float* log_sum_exp, void* stream_ptr) {
  validate(shape, scale, "angular_softmax_forward");
  if (!features || !labels || !class_vectors || !loss || !correct || !log_sum_exp)
    throw std::invalid_argument("dffx CUDA angular_softmax_forward: null pointer");
  const Sizes s = sizes_of(shape);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (s.D <= 16)
    forward_impl<16>(features, labels, class_vectors, s, scale, loss, correct, log_sum_exp, stream);
  else if (s.D <= 32)
    forward_impl<32>(features, labels, class_vectors, s, scale, loss, correct, log_sum_exp, stream);
  else
    forward_impl<64>(features, labels, class_vectors, s, scale, loss, correct, log_sum_exp, stream);
}

void angular_softmax_backward(const float* features, const int32_t* labels, const float* class_vectors,
                              const float* log_sum_exp, const float* grad_loss, const AngularSoftmaxShape& shape,
                              float scale, float* grad_features, float* grad_class_vectors, void* stream_ptr) {
  validate(shape, scale, "angular_softmax_backward");
  if (!features || !labels || !class_vectors || !log_sum_exp || !grad_loss)
    throw std::invalid_argument("dffx CUDA angular_softmax_backward: null input pointer");
  if (!grad_features && !grad_class_vectors) return;
  const Sizes s = sizes_of(shape);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (s.D <= 16)
    backward_impl<16>(features, labels, class_vectors, log_sum_exp, grad_loss, s, scale, grad_features,
                      grad_class_vectors, stream);
  else if (s.D <= 32)
    backward_impl<32>(features, labels, class_vectors, log_sum_exp, grad_loss, s, scale, grad_features,
                      grad_class_vectors, stream);
  else
    backward_impl<64>(features, labels, class_vectors, log_sum_exp, grad_loss, s, scale, grad_features,
                      grad_class_vectors, stream);
}

}  // namespace dffx::cuda
