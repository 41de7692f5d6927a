// CUDA depth-buffer rasterizer and landmark visibility (contract in raster.hpp).
//
// Pass 1 (one thread per triangle and image) writes, for each covered pixel, the 64-bit key
//   (order-preserving bits of depth) << 32 | (0xFFFFFFFF - triangle index)
// with atomicMax, which realises "larger depth wins, equal depth -> smaller index" exactly.
// Pass 2 (one thread per pixel) decodes the winner and recomputes its barycentrics and
// depth with the same expressions as the C++ kernel (raster_math.hpp, --fmad=false).
#include <cuda_runtime.h>
#include <math_constants.h>

#include <limits>
#include <stdexcept>
#include <string>

#include "../common/raster_math.hpp"
#include "dffx/raster.hpp"

namespace dffx::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("dffx CUDA ") + what + ": " + cudaGetErrorString(err));
}

__device__ __forceinline__ uint32_t orderable_bits(float z) {
  const uint32_t u = __float_as_uint(z);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void clear_keys(unsigned long long* keys, int64_t count) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) keys[i] = 0ull;  // 0 < every real key: background
}

__global__ void scatter_fragments(const float* __restrict__ vertices, const int32_t* __restrict__ tris,
                                  RasterShape s, unsigned long long* keys) {
  const int64_t f = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t b = blockIdx.y;
  if (f >= s.num_triangles) return;
  const float* v = vertices + b * s.num_vertices * 3;
  const detail::Triangle2D t = detail::load_triangle(v, tris[3 * f], tris[3 * f + 1], tris[3 * f + 2]);
  if (t.area == 0.0f) return;
  int64_t x_first, x_last, y_first, y_last;
  detail::pixel_span(detail::min3(t.x0, t.x1, t.x2), detail::max3(t.x0, t.x1, t.x2), s.width, &x_first, &x_last);
  detail::pixel_span(detail::min3(t.y0, t.y1, t.y2), detail::max3(t.y0, t.y1, t.y2), s.height, &y_first, &y_last);
  unsigned long long* image_keys = keys + b * s.height * s.width;
  const unsigned long long id_bits = 0xFFFFFFFFull - static_cast<unsigned long long>(f);
  for (int64_t y = y_first; y <= y_last; ++y)
    for (int64_t x = x_first; x <= x_last; ++x) {
      float b0, b1, b2, z;
      if (!detail::shade_fragment(t, static_cast<float>(x), static_cast<float>(y), &b0, &b1, &b2, &z)) continue;
      const unsigned long long key = (static_cast<unsigned long long>(orderable_bits(z)) << 32) | id_bits;
      atomicMax(image_keys + y * s.width + x, key);
    }
}

__global__ void resolve_pixels(const float* __restrict__ vertices, const int32_t* __restrict__ tris, RasterShape s,
                               const unsigned long long* __restrict__ keys, float* depth, int32_t* tri_id,
                               float* bary) {
  const int64_t pixels = s.height * s.width;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= s.batch * pixels) return;
  const unsigned long long key = keys[i];
  if (key == 0ull) {
    depth[i] = -CUDART_INF_F;
    tri_id[i] = -1;
    bary[3 * i] = bary[3 * i + 1] = bary[3 * i + 2] = 0.0f;
    return;
  }
  const int64_t b = i / pixels, p = i % pixels;
  const int32_t f = static_cast<int32_t>(0xFFFFFFFFull - (key & 0xFFFFFFFFull));
  const float* v = vertices + b * s.num_vertices * 3;
  const detail::Triangle2D t = detail::load_triangle(v, tris[3 * f], tris[3 * f + 1], tris[3 * f + 2]);
  float b0 = 0.0f, b1 = 0.0f, b2 = 0.0f, z = 0.0f;
  detail::shade_fragment(t, static_cast<float>(p % s.width), static_cast<float>(p / s.width), &b0, &b1, &b2, &z);
  depth[i] = z;
  tri_id[i] = f;
  bary[3 * i] = b0;
  bary[3 * i + 1] = b1;
  bary[3 * i + 2] = b2;
}

__global__ void visibility_kernel(const float* __restrict__ vertices, const int32_t* __restrict__ landmark_index,
                                  int64_t num_landmarks, const float* __restrict__ depth, RasterShape s,
                                  float tolerance, uint8_t* visible) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= s.batch * num_landmarks) return;
  const int64_t b = i / num_landmarks, l = i % num_landmarks;
  const float* q = vertices + (b * s.num_vertices + landmark_index[l]) * 3;
  const bool inside = detail::inside_image(q[0], s.width) && detail::inside_image(q[1], s.height);
  visible[i] = inside && q[2] + tolerance >= detail::front_depth_2x2(depth + b * s.height * s.width, s.height,
                                                                      s.width, q[0], q[1]);
}

void validate_sizes(const RasterShape& s) {
  if (s.batch <= 0 || s.num_vertices <= 0 || s.num_triangles <= 0 || s.height <= 0 || s.width <= 0)
    throw std::invalid_argument("dffx CUDA rasterize: every size must be positive");
  if (s.num_triangles > 0x7FFFFFFF) throw std::invalid_argument("dffx CUDA rasterize: too many triangles");
  if (s.batch > 65535) throw std::invalid_argument("dffx CUDA rasterize: batch must be <= 65535");
}

constexpr int kThreads = 256;
int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

}  // namespace

void rasterize(const float* vertices, const int32_t* triangles, const RasterShape& s, float* depth,
               int32_t* triangle_id, float* barycentric, void* stream_ptr) {
  validate_sizes(s);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const int64_t count = s.batch * s.height * s.width;
  unsigned long long* keys = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&keys), count * sizeof(unsigned long long), stream), "malloc");
  clear_keys<<<blocks_for(count), kThreads, 0, stream>>>(keys, count);
  const dim3 grid(static_cast<unsigned>(blocks_for(s.num_triangles)), static_cast<unsigned>(s.batch));
  scatter_fragments<<<grid, kThreads, 0, stream>>>(vertices, triangles, s, keys);
  resolve_pixels<<<blocks_for(count), kThreads, 0, stream>>>(vertices, triangles, s, keys, depth, triangle_id,
                                                             barycentric);
  check(cudaGetLastError(), "rasterize launch");
  check(cudaFreeAsync(keys, stream), "free");
}

void landmark_visibility(const float* vertices, const int32_t* landmark_index, int64_t num_landmarks,
                         const float* depth, const RasterShape& s, float tolerance, uint8_t* visible,
                         void* stream_ptr) {
  if (s.batch <= 0 || s.num_vertices <= 0 || s.height <= 0 || s.width <= 0 || num_landmarks < 0)
    throw std::invalid_argument("dffx CUDA landmark_visibility: sizes must be positive");
  if (!(tolerance >= 0.0f) || tolerance == std::numeric_limits<float>::infinity())
    throw std::invalid_argument("dffx CUDA landmark_visibility: tolerance must be finite and >= 0");
  if (num_landmarks == 0) return;
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const int64_t count = s.batch * num_landmarks;
  visibility_kernel<<<blocks_for(count), kThreads, 0, stream>>>(vertices, landmark_index, num_landmarks, depth, s,
                                                                tolerance, visible);
  check(cudaGetLastError(), "landmark_visibility launch");
}

}  // namespace dffx::cuda
