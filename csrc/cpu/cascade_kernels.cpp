// The cascade's inner loops (contract in cascade_kernels.hpp), each written once as a plain loop
// (or with GCC vector types) and compiled three times: for AVX-512, for AVX2 with FMA, and for the
// baseline x86-64 (SSE2) that every other file is built for; the visibility pre-test's AVX-512
// build alone is written with intrinsics (gathers, compress-store). The first call picks the
// widest build this CPU runs (__builtin_cpu_supports); DFFX_CPU_KERNELS=baseline|avx2|avx512
// narrows the choice (tests compare the builds). One build serves every thread of a process, so a
// face's result does not depend on the thread count or the batch. The vector builds contract
// a * b + c into FMAs, so their sums differ from the baseline's in the last bits (the cascade's
// tests bound the difference).
#include "cascade_kernels.hpp"

#include "../common/raster_math.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#include <immintrin.h>
#endif

namespace dffx::detail {
namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define DFFX_X86_DISPATCH 1
#define DFFX_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
#define DFFX_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define DFFX_X86_DISPATCH 0
#endif
#define DFFX_INLINE inline __attribute__((always_inline))

// Four basis rows per pass over the block: a coordinate is loaded and stored once per four rows
// instead of once per row, and its sum still runs over j in order.
DFFX_INLINE void basis_rows_body(const float* params, const float* rows, int64_t m, int64_t stride, int64_t count,
                                 float* __restrict shape) {
  int64_t j = 0;
  for (; j + 4 <= m; j += 4) {
    const float p0 = params[j], p1 = params[j + 1], p2 = params[j + 2], p3 = params[j + 3];
    const float* __restrict r0 = rows + j * stride;
    const float* __restrict r1 = r0 + stride;
    const float* __restrict r2 = r1 + stride;
    const float* __restrict r3 = r2 + stride;
    for (int64_t i = 0; i < count; ++i) {
      float s = shape[i];
      s += p0 * r0[i];
      s += p1 * r1[i];
      s += p2 * r2[i];
      s += p3 * r3[i];
      shape[i] = s;
    }
  }
  for (; j < m; ++j) {
    const float pj = params[j];
    const float* __restrict r = rows + j * stride;
    for (int64_t i = 0; i < count; ++i) shape[i] += pj * r[i];
  }
}

// The same sums for a group of Faces faces, Vectors x 16 coordinates at a time with every face's
// partial sums in registers for all m rows: each basis row is loaded once per group instead of
// once per face (a batch's meshes), each parameter once per Vectors x 16 coordinates, and each
// coordinate's sum is the same chain of multiply-adds over j in order as basis_rows_body's, so
// every face gets its values bit for bit. The tile fits each build's registers (below).
constexpr int64_t kMeshLanes = 16;
// 16 coordinates (GCC vector extension: one zmm, two ymm or four xmm registers); its multiply-add
// contracts into FMAs where basis_rows_body's does.
typedef float MeshLanes __attribute__((vector_size(kMeshLanes * sizeof(float))));

template <int Vectors, int Faces>
DFFX_INLINE void basis_rows_faces_body(const float* const* params, const float* rows, int64_t m, int64_t stride,
                                       int64_t count, float* const* shapes, int64_t faces) {
  constexpr int64_t kTile = Vectors * kMeshLanes;
  int64_t f0 = 0;
  for (; f0 + Faces <= faces; f0 += Faces) {
    int64_t i0 = 0;
    for (; i0 + kTile <= count; i0 += kTile) {
      MeshLanes acc[Faces][Vectors];
#pragma GCC unroll 8
      for (int f = 0; f < Faces; ++f)
#pragma GCC unroll 4
        for (int v = 0; v < Vectors; ++v)
          std::memcpy(&acc[f][v], shapes[f0 + f] + i0 + v * kMeshLanes, sizeof(MeshLanes));
      for (int64_t j = 0; j < m; ++j) {
        const float* row = rows + j * stride + i0;
        MeshLanes r[Vectors];
#pragma GCC unroll 4
        for (int v = 0; v < Vectors; ++v) std::memcpy(&r[v], row + v * kMeshLanes, sizeof(MeshLanes));
#pragma GCC unroll 8
        for (int f = 0; f < Faces; ++f) {
          const float pj = params[f0 + f][j];
#pragma GCC unroll 4
          for (int v = 0; v < Vectors; ++v) acc[f][v] += pj * r[v];
        }
      }
#pragma GCC unroll 8
      for (int f = 0; f < Faces; ++f)
#pragma GCC unroll 4
        for (int v = 0; v < Vectors; ++v)
          std::memcpy(shapes[f0 + f] + i0 + v * kMeshLanes, &acc[f][v], sizeof(MeshLanes));
    }
    for (int f = 0; f < Faces && i0 < count; ++f)
      basis_rows_body(params[f0 + f], rows + i0, m, stride, count - i0, shapes[f0 + f] + i0);
  }
  for (; f0 < faces; ++f0) basis_rows_body(params[f0], rows, m, stride, count, shapes[f0]);
}

// Columns in blocks the accumulator holds in L1 (a stage's 136 landmark columns in one block),
// rows streamed once per block.
constexpr int64_t kProductColumns = 144;

// out[g][c] += share[g] * sum_r z[g][r] * matrix[r * cols + c] for a group of faces that share one
// matrix (one face alone is a group of one): each row of a column block is read once for the whole
// group, and each face's column sums run over r in order, whatever the group, so a face gets the
// same values bit for bit in any group.
constexpr int64_t kProductFaces = 16;

DFFX_INLINE void products_body(const float* const* z, const float* matrix, int64_t rows, int64_t cols,
                               const float* share, float* const* out, int64_t faces) {
  for (int64_t f0 = 0; f0 < faces; f0 += kProductFaces) {
    const int64_t group = std::min(kProductFaces, faces - f0);
    for (int64_t c0 = 0; c0 < cols; c0 += kProductColumns) {
      const int64_t width = std::min(kProductColumns, cols - c0);
      alignas(64) float sum[kProductFaces][kProductColumns];
      for (int64_t g = 0; g < group; ++g) std::fill(sum[g], sum[g] + width, 0.0f);
      for (int64_t r = 0; r < rows; ++r) {
        const float* __restrict row = matrix + r * cols + c0;
        for (int64_t g = 0; g < group; ++g) {
          const float zr = z[f0 + g][r];
          float* __restrict s = sum[g];
          for (int64_t c = 0; c < width; ++c) s[c] += zr * row[c];
        }
      }
      for (int64_t g = 0; g < group; ++g)
        for (int64_t c = 0; c < width; ++c) out[f0 + g][c0 + c] += share[f0 + g] * sum[g][c];
    }
  }
}

// products_body for a matrix of W columns (W a multiple of 8, at most 144: a stage's 136 landmark
// columns), two faces per pass over the rows with both faces' sums in registers (AVX-512 has the
// 19 vector registers this takes): each row is loaded once per pair, and the sums are not loaded
// and stored per row. Each column's sum is the same chain of multiply-adds over r in order.
template <int64_t W>
DFFX_INLINE void products_in_registers(const float* const* z, const float* matrix, int64_t rows, const float* share,
                                       float* const* out, int64_t faces) {
  static_assert(W % 8 == 0 && W <= kProductColumns, "whole 8-lane vectors within one column block");
  typedef float Lanes16 __attribute__((vector_size(16 * sizeof(float))));
  typedef float Lanes8 __attribute__((vector_size(8 * sizeof(float))));
  constexpr int64_t kWide = W / 16;
  constexpr bool kHalf = W % 16 == 8;
  int64_t f = 0;
  for (; f + 2 <= faces; f += 2) {
    Lanes16 sum0[kWide] = {}, sum1[kWide] = {};
    Lanes8 half0 = {}, half1 = {};
    const float* z0 = z[f];
    const float* z1 = z[f + 1];
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = matrix + r * W;
      const float q0 = z0[r], q1 = z1[r];
#pragma GCC unroll 16
      for (int64_t k = 0; k < kWide; ++k) {
        Lanes16 x;
        std::memcpy(&x, row + 16 * k, sizeof x);
        sum0[k] += q0 * x;
        sum1[k] += q1 * x;
      }
      if constexpr (kHalf) {
        Lanes8 x;
        std::memcpy(&x, row + 16 * kWide, sizeof x);
        half0 += q0 * x;
        half1 += q1 * x;
      }
    }
    alignas(64) float total[2][kProductColumns];
    for (int64_t k = 0; k < kWide; ++k) {
      std::memcpy(total[0] + 16 * k, &sum0[k], sizeof(Lanes16));
      std::memcpy(total[1] + 16 * k, &sum1[k], sizeof(Lanes16));
    }
    if constexpr (kHalf) {
      std::memcpy(total[0] + 16 * kWide, &half0, sizeof(Lanes8));
      std::memcpy(total[1] + 16 * kWide, &half1, sizeof(Lanes8));
    }
    for (int g = 0; g < 2; ++g)
      for (int64_t c = 0; c < W; ++c) out[f + g][c] += share[f + g] * total[g][c];
  }
  if (f < faces) products_body(z + f, matrix, rows, W, share + f, out + f, 1);
}

// The landmark columns of a stage's update (2 x 68).
constexpr int64_t kLandmarkColumns = 136;


void basis_rows_faces_baseline(const float* const* p, const float* rows, int64_t m, int64_t stride, int64_t count,
                               float* const* shapes, int64_t faces) {
  basis_rows_faces_body<1, 2>(p, rows, m, stride, count, shapes, faces);
}
void products_baseline(const float* const* z, const float* matrix, int64_t rows, int64_t cols, const float* share,
                       float* const* out, int64_t faces) {
  products_body(z, matrix, rows, cols, share, out, faces);
}

#if DFFX_X86_DISPATCH
DFFX_TARGET_AVX2 void basis_rows_faces_avx2(const float* const* p, const float* rows, int64_t m, int64_t stride,
                                            int64_t count, float* const* shapes, int64_t faces) {
  basis_rows_faces_body<1, 4>(p, rows, m, stride, count, shapes, faces);
}
DFFX_TARGET_AVX2 void products_avx2(const float* const* z, const float* matrix, int64_t rows, int64_t cols,
                                    const float* share, float* const* out, int64_t faces) {
  products_body(z, matrix, rows, cols, share, out, faces);
}
DFFX_TARGET_AVX512 void basis_rows_faces_avx512(const float* const* p, const float* rows, int64_t m,
                                                int64_t stride, int64_t count, float* const* shapes, int64_t faces) {
  basis_rows_faces_body<3, 8>(p, rows, m, stride, count, shapes, faces);
}
DFFX_TARGET_AVX512 void products_avx512(const float* const* z, const float* matrix, int64_t rows, int64_t cols,
                                        const float* share, float* const* out, int64_t faces) {
  if (cols == kLandmarkColumns)
    products_in_registers<kLandmarkColumns>(z, matrix, rows, share, out, faces);
  else
    products_body(z, matrix, rows, cols, share, out, faces);
}
#endif


// Triangle f can cover a centre only if a centre lies among the pixel centres its shading visits
// (raster_math's pixel_span of its bounding box), clipped to the centres' box: the count table
// answers (CentreCounts::any_in).
DFFX_INLINE int64_t near_centres_body(const int32_t* tris, int64_t first, int64_t last, const float* v,
                                      int64_t width, int64_t height, const CentreCounts& t, int32_t* candidates) {
  int64_t n = 0;
  for (int64_t f = first; f < last; ++f) {
    const float* a = v + 3 * int64_t{tris[3 * f]};
    const float* b = v + 3 * int64_t{tris[3 * f + 1]};
    const float* e = v + 3 * int64_t{tris[3 * f + 2]};
    int64_t x0, x1, y0, y1;
    pixel_span(min3(a[0], b[0], e[0]), max3(a[0], b[0], e[0]), width, &x0, &x1);
    pixel_span(min3(a[1], b[1], e[1]), max3(a[1], b[1], e[1]), height, &y0, &y1);
    x0 = std::max<int64_t>(x0, t.x_lo), x1 = std::min<int64_t>(x1, t.x_hi);
    y0 = std::max<int64_t>(y0, t.y_lo), y1 = std::min<int64_t>(y1, t.y_hi);
    if (x0 > x1 || y0 > y1) continue;
    if (t.counts && !t.any_in(static_cast<int32_t>(x0), static_cast<int32_t>(x1), static_cast<int32_t>(y0),
                              static_cast<int32_t>(y1)))
      continue;
    candidates[n++] = static_cast<int32_t>(f);
  }
  return n;
}

int64_t near_centres_baseline(const int32_t* tris, int64_t first, int64_t last, const float* vertices,
                              int64_t width, int64_t height, const CentreCounts& t, int32_t* candidates) {
  return near_centres_body(tris, first, last, vertices, width, height, t, candidates);
}

#if DFFX_X86_DISPATCH

// near_centres_body for 16 triangles at a time: the same span (ceil of the bounding box's minimum
// to floor of its maximum per axis, the coordinates clamped first so that the conversion to
// integers cannot overflow; clipped to the centres' box, the same as pixel_span's), from gathers of
// the vertex indices, their x and y and the four count-table corners (masked where the span is
// empty); the survivors compressed into `candidates` in order.
DFFX_TARGET_AVX512 int64_t near_centres_avx512(const int32_t* tris, int64_t first, int64_t last,
                                               const float* vertices, int64_t width, int64_t height,
                                               const CentreCounts& t, int32_t* candidates) {
  if (!t.counts) return near_centres_body(tris, first, last, vertices, width, height, t, candidates);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i three = _mm512_set1_epi32(3);
  const __m512i stride3 = _mm512_mullo_epi32(lane, three);
  const __m512i x_lo = _mm512_set1_epi32(t.x_lo), x_hi = _mm512_set1_epi32(t.x_hi);
  const __m512i y_lo = _mm512_set1_epi32(t.y_lo), y_hi = _mm512_set1_epi32(t.y_hi);
  const __m512i row = _mm512_set1_epi32(t.row), one = _mm512_set1_epi32(1), zero = _mm512_setzero_si512();
  // coordinates clamped to the image's border pixels +- 2 before rounding to integers (no overflow)
  const __m512 low = _mm512_set1_ps(-2.0f);
  const __m512 x_top = _mm512_set1_ps(static_cast<float>(width) + 1.0f);
  const __m512 y_top = _mm512_set1_ps(static_cast<float>(height) + 1.0f);
  constexpr int kFloor = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC, kCeil = _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC;
  int64_t n = 0, f = first;
  for (; f + 16 <= last; f += 16) {
    const int32_t* base = tris + 3 * f;
    __m512 xs[3], ys[3];
    for (int k = 0; k < 3; ++k) {
      const __m512i at = _mm512_mullo_epi32(_mm512_i32gather_epi32(stride3, base + k, 4), three);  // 3 v
      xs[k] = _mm512_i32gather_ps(at, vertices, 4);
      ys[k] = _mm512_i32gather_ps(at, vertices + 1, 4);
    }
    const __m512 min_x = _mm512_min_ps(_mm512_min_ps(xs[0], xs[1]), xs[2]);
    const __m512 max_x = _mm512_max_ps(_mm512_max_ps(xs[0], xs[1]), xs[2]);
    const __m512 min_y = _mm512_min_ps(_mm512_min_ps(ys[0], ys[1]), ys[2]);
    const __m512 max_y = _mm512_max_ps(_mm512_max_ps(ys[0], ys[1]), ys[2]);
    const __m512i x0 = _mm512_max_epi32(
        _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_min_ps(_mm512_max_ps(min_x, low), x_top), kCeil)), x_lo);
    const __m512i x1 = _mm512_min_epi32(
        _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_min_ps(_mm512_max_ps(max_x, low), x_top), kFloor)), x_hi);
    const __m512i y0 = _mm512_max_epi32(
        _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_min_ps(_mm512_max_ps(min_y, low), y_top), kCeil)), y_lo);
    const __m512i y1 = _mm512_min_epi32(
        _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_min_ps(_mm512_max_ps(max_y, low), y_top), kFloor)), y_hi);
    const __mmask16 open = _mm512_cmple_epi32_mask(x0, x1) & _mm512_cmple_epi32_mask(y0, y1);
    // any_in: rows y0 - y_lo and y1 - y_lo + 1, columns x0 - x_lo and x1 - x_lo + 1 of the table
    const __m512i c0 = _mm512_sub_epi32(x0, x_lo), c1 = _mm512_add_epi32(_mm512_sub_epi32(x1, x_lo), one);
    const __m512i r0 = _mm512_mullo_epi32(_mm512_sub_epi32(y0, y_lo), row);
    const __m512i r1 = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_sub_epi32(y1, y_lo), one), row);
    // (a lambda would not inherit the function's target, so the four corners are written out)
    const __m512i n11 = _mm512_mask_i32gather_epi32(zero, open, _mm512_add_epi32(r1, c1), t.counts, 4);
    const __m512i n01 = _mm512_mask_i32gather_epi32(zero, open, _mm512_add_epi32(r0, c1), t.counts, 4);
    const __m512i n10 = _mm512_mask_i32gather_epi32(zero, open, _mm512_add_epi32(r1, c0), t.counts, 4);
    const __m512i n00 = _mm512_mask_i32gather_epi32(zero, open, _mm512_add_epi32(r0, c0), t.counts, 4);
    const __m512i inside = _mm512_add_epi32(_mm512_sub_epi32(_mm512_sub_epi32(n11, n01), n10), n00);
    const __mmask16 keep = open & _mm512_cmpgt_epi32_mask(inside, zero);
    const __m512i index = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(f)), lane);
    _mm512_mask_compressstoreu_epi32(candidates + n, keep, index);
    n += __builtin_popcount(keep);
  }
  return n + near_centres_body(tris, f, last, vertices, width, height, t, candidates + n);
}
#endif

struct Kernels {
  decltype(&products_baseline) products;
  decltype(&basis_rows_faces_baseline) basis_rows_faces;
  decltype(&near_centres_baseline) near_centres;
  const char* isa;
};

Kernels pick_kernels() {
  const Kernels baseline{products_baseline, basis_rows_faces_baseline, near_centres_baseline, "baseline"};
#if DFFX_X86_DISPATCH
  const char* wanted = std::getenv("DFFX_CPU_KERNELS");
  const bool any = !wanted || !*wanted;
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 && (any || std::strcmp(wanted, "avx512") == 0))
    return {products_avx512, basis_rows_faces_avx512, near_centres_avx512, "avx512f"};
  if (avx2 && (any || std::strcmp(wanted, "avx512") == 0 || std::strcmp(wanted, "avx2") == 0))
    return {products_avx2, basis_rows_faces_avx2, near_centres_baseline, "avx2+fma"};
#endif
  return baseline;
}

const Kernels& kernels() {
  static const Kernels chosen = pick_kernels();
  return chosen;
}

}  // namespace

void accumulate_basis_rows(const float* params, const float* rows, int64_t m, int64_t stride, int64_t count,
                           float* shape) {
  kernels().basis_rows_faces(&params, rows, m, stride, count, &shape, 1);  // a group of one face
}

void accumulate_basis_rows_faces(const float* const* params, const float* rows, int64_t m, int64_t stride,
                                 int64_t count, float* const* shapes, int64_t faces) {
  kernels().basis_rows_faces(params, rows, m, stride, count, shapes, faces);
}

void accumulate_transposed_product(const float* z, const float* matrix, int64_t rows, int64_t cols, float share,
                                   float* out) {
  kernels().products(&z, matrix, rows, cols, &share, &out, 1);  // a group of one face
}

void accumulate_transposed_products(const float* const* z, const float* matrix, int64_t rows, int64_t cols,
                                    const float* share, float* const* out, int64_t faces) {
  kernels().products(z, matrix, rows, cols, share, out, faces);
}

int64_t triangles_near_centres(const int32_t* triangles, int64_t first, int64_t last, const float* vertices,
                               int64_t width, int64_t height, const CentreCounts& table, int32_t* candidates) {
  return kernels().near_centres(triangles, first, last, vertices, width, height, table, candidates);
}

const char* cascade_kernel_isa() { return kernels().isa; }

}  // namespace dffx::detail
