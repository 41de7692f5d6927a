// The cascade's inner loops (dffx::Cascade::run: the mesh, the direction products, the visibility
// test's triangle pre-test), built for several x86 vector widths and picked once per process by
// the CPU (cascade_kernels.cpp says how).
#pragma once
#include <cstdint>

namespace dffx::detail {

// shape[i] += sum_j params[j] * rows[j * stride + i] for i < count, j < m, each coordinate's sum
// taken over j in order (eq. 3: the mesh mean + B p, a block of it at a time).
void accumulate_basis_rows(const float* params, const float* rows, int64_t m, int64_t stride, int64_t count,
                           float* shape);

// accumulate_basis_rows for `faces` faces: shapes[f][i] += sum_j params[f][j] * rows[j * stride + i],
// each face's values bit for bit those of one call per face; each basis row is read once per
// group of faces (a batch's meshes).
void accumulate_basis_rows_faces(const float* const* params, const float* rows, int64_t m, int64_t stride,
                                 int64_t count, float* const* shapes, int64_t faces);

// out[c] += share * sum_r z[r] * matrix[r * cols + c] for c < cols, r < rows, each column's sum
// taken over r in order (a stage's [F, 1] R of eq. 9-10, a row range of it at a time).
void accumulate_transposed_product(const float* z, const float* matrix, int64_t rows, int64_t cols, float share,
                                   float* out);

// accumulate_transposed_product for `faces` faces that share one matrix: out[f][c] += share[f] *
// sum_r z[f][r] * matrix[r * cols + c], each face's values bit for bit those of one call per face;
// the matrix is read once per group of faces instead of once per face (a batch's stage products).
void accumulate_transposed_products(const float* const* z, const float* matrix, int64_t rows, int64_t cols,
                                    const float* share, float* const* out, int64_t faces);

// The centres' count table of the landmark visibility test (raster.cpp's CentreSlots): counts
// (row = box width + 1 entries per row) holds, at [(y + 1) * row + x + 1], the number of centres
// in box columns <= x and rows <= y of the box [x_lo, x_hi] x [y_lo, y_hi]; null when there is no
// table (every clipped box then counts as holding a centre).
struct CentreCounts {
  const int32_t* counts;
  int32_t row, x_lo, x_hi, y_lo, y_hi;
  // Whether a centre lies in columns [x0, x1] and rows [y0, y1] (inside the box).
  bool any_in(int32_t x0, int32_t x1, int32_t y0, int32_t y1) const {
    x0 -= x_lo, x1 -= x_lo - 1, y0 -= y_lo, y1 -= y_lo - 1;
    return counts[y1 * row + x1] - counts[y0 * row + x1] - counts[y1 * row + x0] + counts[y0 * row + x0] > 0;
  }
};

// The triangles f in [first, last) (triangles: (T, 3) vertex indices into vertices (N, 3), the
// image width x height) that can cover a centre, their indices written in order to candidates
// (room for last - first), their count returned: those whose pixel-centre span (the span their
// shading visits, raster_math's pixel_span), clipped to the centres' box, holds a centre by the
// table. A triangle that covers a centre is always among them; every build gives the same list.
int64_t triangles_near_centres(const int32_t* triangles, int64_t first, int64_t last, const float* vertices,
                               int64_t width, int64_t height, const CentreCounts& table, int32_t* candidates);

// Which build of the two loops this process runs: "avx512f", "avx2+fma" or "baseline".
const char* cascade_kernel_isa();

}  // namespace dffx::detail
