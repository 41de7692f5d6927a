// Entry points of raster.cpp for callers that validated their inputs already (not installed).
#pragma once
#include <cstdint>

#include "dffx/raster.hpp"

namespace dffx::detail {

/// dffx::mesh_landmark_visibility without its checks, for a caller that owns a mesh it checked
/// once (dffx::Cascade: triangle and landmark indices at load, finite vertices per face). The
/// same result bit for bit; out-of-range indices or non-finite vertices here are undefined.
void mesh_landmark_visibility_unchecked(const float* vertices, const int32_t* triangles, const int32_t* landmark_index,
                                        int64_t num_landmarks, const RasterShape& shape, float tolerance,
                                        uint8_t* visible, int num_threads);

}  // namespace dffx::detail
