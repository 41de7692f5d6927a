// Bilinear tap selection of the landmark feature sampling, shared by the C++ and CUDA kernels
// (csrc/cpu/sampling.cpp, csrc/cuda/sampling.cu) and mirrored by the NumPy twin
// sample_landmark_features_reference in python/dffx/ops/_reference.py.
#pragma once
#include <cstdint>

#ifndef DFFX_HD
#if defined(__CUDACC__)
#define DFFX_HD __host__ __device__ __forceinline__
#else
#define DFFX_HD inline
#endif
#endif

namespace dffx::detail {

// The four bilinear taps of one landmark: offsets inside a (H, W) plane and the weights' inputs.
struct Taps {
  int64_t i00, i01, i10, i11;  // (y0, x0), (y0, x1), (y1, x0), (y1, x1)
  float ax, ay;                // fractional offsets towards x1 / y1
};

// False when the landmark is hidden (flag off or outside the pixel area [-0.5, n - 0.5)).
// Non-finite points fail the range test, so they count as hidden. Points are clamped to the
// pixel centres [0, n - 1] before the taps are chosen.
DFFX_HD bool landmark_taps(const float* p, uint8_t visible, int64_t H, int64_t W, Taps* t) {
  const float x = p[0], y = p[1];
  if (!visible) return false;
  if (!(x >= -0.5f && x < static_cast<float>(W) - 0.5f && y >= -0.5f && y < static_cast<float>(H) - 0.5f))
    return false;
  const float w1 = static_cast<float>(W - 1), h1 = static_cast<float>(H - 1);
  const float xc = x < 0.0f ? 0.0f : (x > w1 ? w1 : x);
  const float yc = y < 0.0f ? 0.0f : (y > h1 ? h1 : y);
  const int64_t x0 = static_cast<int64_t>(xc), y0 = static_cast<int64_t>(yc);  // floor: xc, yc >= 0
  const int64_t x1 = x0 + 1 < W ? x0 + 1 : W - 1, y1 = y0 + 1 < H ? y0 + 1 : H - 1;
  t->ax = xc - static_cast<float>(x0);
  t->ay = yc - static_cast<float>(y0);
  t->i00 = y0 * W + x0;
  t->i01 = y0 * W + x1;
  t->i10 = y1 * W + x0;
  t->i11 = y1 * W + x1;
  return true;
}

}  // namespace dffx::detail
