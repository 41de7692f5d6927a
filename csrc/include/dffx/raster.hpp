// Depth-buffer rasterizer (orthographic, screen space) and landmark visibility.
//
// Input vertices are already in screen space: (x, y) in pixels with pixel centres at
// integer coordinates (0-based, y down), z a depth where LARGER means CLOSER to the viewer
// (what project_weak_perspective produces). No back-face culling: both windings are drawn.
//
// Coverage: a pixel centre belongs to a triangle when all three edge functions have the
// sign of the triangle's signed area or are zero (so shared edges are covered by both
// triangles); zero-area triangles are skipped.
// Depth test and ties: the fragment with the larger depth wins; on exactly equal depth the
// triangle with the SMALLER index wins. Every backend applies this total order, so the
// result does not depend on thread or triangle scheduling.
// All arithmetic is float32 without FMA contraction; the C++, CUDA and NumPy reference
// implementations evaluate the same expressions in the same order.
#pragma once
#include <cstdint>

namespace dffx {

/// Largest image side (rows or columns) the rasterization functions accept: far beyond any
/// photo, and small enough that no pixel index or buffer size can overflow int64.
constexpr int64_t kMaxImageSide = int64_t{1} << 24;

/// Sizes of one rasterization call.
struct RasterShape {
  int64_t batch = 0;          ///< B, number of meshes (one image each)
  int64_t num_vertices = 0;   ///< N, vertices per mesh
  int64_t num_triangles = 0;  ///< F, triangles shared by all meshes
  int64_t height = 0;         ///< H, image rows
  int64_t width = 0;          ///< W, image columns
};

/// Rasterize B meshes on the CPU (multi-threaded).
///
/// vertices (B, N, 3) float32 screen space; triangles (F, 3) int32 vertex indices.
/// Outputs (all written fully): depth (B, H, W) float32, -inf where no triangle covers the
/// pixel; triangle_id (B, H, W) int32, -1 for background; barycentric (B, H, W, 3) float32
/// weights of the triangle's three vertices at the pixel centre (0 for background).
/// num_threads <= 0 uses std::thread::hardware_concurrency().
/// Throws std::invalid_argument for non-positive sizes, an image side over kMaxImageSide, more
/// than 2^31 triangles or 2^31 / 3 vertices, non-finite vertices or triangle indices outside [0, N).
void rasterize(const float* vertices, const int32_t* triangles, const RasterShape& shape,
               float* depth, int32_t* triangle_id, float* barycentric, int num_threads = 0);

/// Landmark visibility from a depth buffer.
///
/// A landmark (vertex index l of mesh b) at screen point (x, y, z) is visible when (x, y) lies
/// inside the image, x, y in [-0.5, size - 0.5), and z + tolerance >= the minimum depth over the
/// 2x2 pixel centres around (x, y) (floor/floor+1, clamped to the image; background = -inf
/// counts as visible). The minimum keeps points on steep surfaces next to a silhouette visible
/// while points behind an occluder stay hidden. tolerance is in screen-depth units (pixels).
/// vertices (B, N, 3), landmark_index (L,) int32, depth (B, H, W) -> visible (B, L) uint8.
/// Throws std::invalid_argument for bad sizes, indices outside [0, N), negative or
/// non-finite tolerance.
void landmark_visibility(const float* vertices, const int32_t* landmark_index, int64_t num_landmarks,
                         const float* depth, const RasterShape& shape, float tolerance,
                         uint8_t* visible);

/// Landmark visibility straight from the mesh (CPU): rasterize followed by landmark_visibility,
/// bit for bit, without the full depth buffer. Only the (at most 4 L) pixel centres the
/// visibility test reads get a depth, so the fragments elsewhere are never shaded: the
/// alignment cascade needs the 160 landmarks' visibility, not the image. Memory scales with
/// the landmarks, not with H x W (any size up to kMaxImageSide).
/// vertices (B, N, 3), triangles (F, 3), landmark_index (L,) -> visible (B, L) uint8.
/// num_threads <= 0 uses std::thread::hardware_concurrency(); the triangles of one mesh are
/// split between threads (the depth is a maximum, so the order does not matter).
/// Throws like rasterize and landmark_visibility.
void mesh_landmark_visibility(const float* vertices, const int32_t* triangles, const int32_t* landmark_index,
                              int64_t num_landmarks, const RasterShape& shape, float tolerance, uint8_t* visible,
                              int num_threads = 0);

namespace cuda {
/// CUDA versions of rasterize and landmark_visibility. Every pointer is a device pointer; stream is a cudaStream_t
/// (nullptr = default stream). The call is asynchronous on that stream. Inputs are
/// validated on the host only for sizes: indices and finiteness must be checked by the
/// caller (the Python wrapper does). Throws std::runtime_error when the core was built
/// without CUDA or a CUDA call fails.
void rasterize(const float* vertices, const int32_t* triangles, const RasterShape& shape,
               float* depth, int32_t* triangle_id, float* barycentric, void* stream = nullptr);
void landmark_visibility(const float* vertices, const int32_t* landmark_index, int64_t num_landmarks,
                         const float* depth, const RasterShape& shape, float tolerance,
                         uint8_t* visible, void* stream = nullptr);
}  // namespace cuda

}  // namespace dffx
