// Per-fragment arithmetic shared by the C++ and CUDA rasterizers (and mirrored
// expression for expression by the NumPy twin in python/dffx/ops/_reference.py).
// Compiled without FMA contraction so every backend produces identical floats.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define DFFX_HD __host__ __device__ __forceinline__
#else
#define DFFX_HD inline
#endif

namespace dffx::detail {

struct Triangle2D {
  float x0, y0, z0, x1, y1, z1, x2, y2, z2;
  float area;  // twice the signed area: (x1-x0)(y2-y0) - (y1-y0)(x2-x0)
};

DFFX_HD Triangle2D load_triangle(const float* v, int32_t i0, int32_t i1, int32_t i2) {
  Triangle2D t;
  t.x0 = v[3 * i0]; t.y0 = v[3 * i0 + 1]; t.z0 = v[3 * i0 + 2];
  t.x1 = v[3 * i1]; t.y1 = v[3 * i1 + 1]; t.z1 = v[3 * i1 + 2];
  t.x2 = v[3 * i2]; t.y2 = v[3 * i2 + 1]; t.z2 = v[3 * i2 + 2];
  t.area = (t.x1 - t.x0) * (t.y2 - t.y0) - (t.y1 - t.y0) * (t.x2 - t.x0);
  return t;
}

/// Edge functions at pixel centre (px, py); true when the centre is covered.
/// On success fills the barycentric weights and the interpolated depth.
DFFX_HD bool shade_fragment(const Triangle2D& t, float px, float py, float* b0, float* b1, float* b2,
                            float* z) {
  const float w0 = (t.x2 - t.x1) * (py - t.y1) - (t.y2 - t.y1) * (px - t.x1);
  const float w1 = (t.x0 - t.x2) * (py - t.y2) - (t.y0 - t.y2) * (px - t.x2);
  const float w2 = (t.x1 - t.x0) * (py - t.y0) - (t.y1 - t.y0) * (px - t.x0);
  const bool inside = t.area > 0.0f ? (w0 >= 0.0f && w1 >= 0.0f && w2 >= 0.0f)
                                    : (w0 <= 0.0f && w1 <= 0.0f && w2 <= 0.0f);
  if (!inside) return false;
  *b0 = w0 / t.area;
  *b1 = w1 / t.area;
  *b2 = w2 / t.area;
  // "+ 0.0f" turns -0 into +0 so that equal depths compare equal in every backend.
  *z = ((*b0) * t.z0 + (*b1) * t.z1) + (*b2) * t.z2 + 0.0f;
  return true;
}

/// Clamp a float pixel coordinate range to [0, n-1] before converting to int
/// (huge coordinates must not overflow the conversion).
DFFX_HD void pixel_span(float lo, float hi, int64_t n, int64_t* first, int64_t* last) {
  const float top = static_cast<float>(n);
  const float a = lo < 0.0f ? 0.0f : (lo > top ? top : lo);
  const float b = hi > top - 1.0f ? top - 1.0f : (hi < -1.0f ? -1.0f : hi);
  // Pixel centres are integers: the covered ones satisfy lo <= c <= hi.
  float fa = static_cast<float>(static_cast<int64_t>(a));
  if (fa < a) fa += 1.0f;  // ceil for non-negative a
  *first = static_cast<int64_t>(fa);
  *last = b < 0.0f ? -1 : static_cast<int64_t>(b);  // floor for non-negative b
}

DFFX_HD float min3(float a, float b, float c) { return a < b ? (a < c ? a : c) : (b < c ? b : c); }
DFFX_HD float max3(float a, float b, float c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

/// True when a coordinate lies inside the image's pixel area [-0.5, n - 0.5).
DFFX_HD bool inside_image(float c, int64_t n) { return c >= -0.5f && c < static_cast<float>(n) - 0.5f; }

/// floor() for coordinates already known to lie in the image's pixel area.
DFFX_HD int64_t floor_to_int(float c) {
  const int64_t t = static_cast<int64_t>(c);  // truncates towards zero
  return static_cast<float>(t) > c ? t - 1 : t;
}

DFFX_HD int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

/// Front-most surface depth around a sub-pixel point: the minimum over the 2x2 pixel centres
/// surrounding (x, y): columns floor(x) and floor(x) + 1, rows likewise, each clamped to the image. Taking the minimum keeps a point on a steep,
/// silhouette-adjacent surface visible, while a point behind an occluder stays hidden because
/// the occluder covers all four centres. Background (-inf) makes the point visible.
DFFX_HD float front_depth_2x2(const float* depth, int64_t height, int64_t width, float x, float y) {
  const int64_t x0 = floor_to_int(x), y0 = floor_to_int(y);
  const int64_t xa = clamp_index(x0, width), xb = clamp_index(x0 + 1, width);
  const int64_t ya = clamp_index(y0, height), yb = clamp_index(y0 + 1, height);
  const float a = depth[ya * width + xa], b = depth[ya * width + xb];
  const float c = depth[yb * width + xa], d = depth[yb * width + xb];
  const float ab = a < b ? a : b, cd = c < d ? c : d;
  return ab < cd ? ab : cd;
}

}  // namespace dffx::detail
