// The cascade's two memory-bound inner loops (dffx::Cascade::run), built for several x86 vector
// widths and picked once per process by the CPU (cascade_kernels.cpp says how).
#pragma once
#include <cstdint>

namespace dffx::detail {

// shape[i] += sum_j params[j] * rows[j * stride + i] for i < count, j < m, each coordinate's sum
// taken over j in order (eq. 3: the mesh mean + B p, a block of it at a time).
void accumulate_basis_rows(const float* params, const float* rows, int64_t m, int64_t stride, int64_t count,
                           float* shape);

// out[c] += share * sum_r z[r] * matrix[r * cols + c] for c < cols, r < rows, each column's sum
// taken over r in order (a stage's [F, 1] R of eq. 9-10, a row range of it at a time).
void accumulate_transposed_product(const float* z, const float* matrix, int64_t rows, int64_t cols, float share,
                                   float* out);

// Which build of the two loops this process runs: "avx512f", "avx2+fma" or "baseline".
const char* cascade_kernel_isa();

}  // namespace dffx::detail
