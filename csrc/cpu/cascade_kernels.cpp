// The cascade's inner loops (contract in cascade_kernels.hpp), each written once as a plain loop
// and compiled three times: for AVX-512, for AVX2 with FMA, and for the baseline x86-64 (SSE2) that
// every other file is built for. The first call picks the widest build this CPU runs
// (__builtin_cpu_supports); DFFX_CPU_KERNELS=baseline|avx2|avx512 narrows the choice (tests compare
// the builds). One build serves every thread of a process, so a face's result does not depend on
// the thread count or the batch. The vector builds contract a * b + c into FMAs, so their sums
// differ from the baseline's in the last bits (the cascade's tests bound the difference).
#include "cascade_kernels.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

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

// Columns in blocks the accumulator holds in L1 (a stage's 136 landmark columns in one block),
// rows streamed once per block.
constexpr int64_t kProductColumns = 144;

DFFX_INLINE void product_body(const float* z, const float* matrix, int64_t rows, int64_t cols, float share,
                              float* out) {
  for (int64_t c0 = 0; c0 < cols; c0 += kProductColumns) {
    const int64_t width = std::min(kProductColumns, cols - c0);
    alignas(64) float sum[kProductColumns] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float zr = z[r];
      const float* __restrict row = matrix + r * cols + c0;
      for (int64_t c = 0; c < width; ++c) sum[c] += zr * row[c];
    }
    for (int64_t c = 0; c < width; ++c) out[c0 + c] += share * sum[c];
  }
}

void basis_rows_baseline(const float* p, const float* rows, int64_t m, int64_t stride, int64_t count, float* shape) {
  basis_rows_body(p, rows, m, stride, count, shape);
}
void product_baseline(const float* z, const float* matrix, int64_t rows, int64_t cols, float share, float* out) {
  product_body(z, matrix, rows, cols, share, out);
}

#if DFFX_X86_DISPATCH
DFFX_TARGET_AVX2 void basis_rows_avx2(const float* p, const float* rows, int64_t m, int64_t stride, int64_t count,
                                      float* shape) {
  basis_rows_body(p, rows, m, stride, count, shape);
}
DFFX_TARGET_AVX2 void product_avx2(const float* z, const float* matrix, int64_t rows, int64_t cols, float share,
                                   float* out) {
  product_body(z, matrix, rows, cols, share, out);
}
DFFX_TARGET_AVX512 void basis_rows_avx512(const float* p, const float* rows, int64_t m, int64_t stride,
                                          int64_t count, float* shape) {
  basis_rows_body(p, rows, m, stride, count, shape);
}
DFFX_TARGET_AVX512 void product_avx512(const float* z, const float* matrix, int64_t rows, int64_t cols, float share,
                                       float* out) {
  product_body(z, matrix, rows, cols, share, out);
}
#endif

struct Kernels {
  decltype(&basis_rows_baseline) basis_rows;
  decltype(&product_baseline) product;
  const char* isa;
};

Kernels pick_kernels() {
  const Kernels baseline{basis_rows_baseline, product_baseline, "baseline"};
#if DFFX_X86_DISPATCH
  const char* wanted = std::getenv("DFFX_CPU_KERNELS");
  const bool any = !wanted || !*wanted;
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 && (any || std::strcmp(wanted, "avx512") == 0)) return {basis_rows_avx512, product_avx512, "avx512f"};
  if (avx2 && (any || std::strcmp(wanted, "avx512") == 0 || std::strcmp(wanted, "avx2") == 0))
    return {basis_rows_avx2, product_avx2, "avx2+fma"};
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
  kernels().basis_rows(params, rows, m, stride, count, shape);
}

void accumulate_transposed_product(const float* z, const float* matrix, int64_t rows, int64_t cols, float share,
                                   float* out) {
  kernels().product(z, matrix, rows, cols, share, out);
}

const char* cascade_kernel_isa() { return kernels().isa; }

}  // namespace dffx::detail
