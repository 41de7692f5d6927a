// CPU depth-buffer rasterizer and landmark visibility (contract in raster.hpp).
#include "dffx/raster.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../common/raster_math.hpp"
#include "cascade_kernels.hpp"
#include "internal.hpp"
#include "raster_internal.hpp"

namespace dffx {
namespace {

// The mesh arguments of rasterize and mesh_landmark_visibility; `who` names the caller in messages.
void validate(const float* vertices, const int32_t* triangles, const RasterShape& s, const std::string& who) {
  detail::require(s.batch > 0, who + ": batch must be positive, got " + std::to_string(s.batch));
  detail::require(s.num_vertices > 0, who + ": the mesh has no vertices");
  detail::require(s.num_triangles > 0, who + ": the mesh has no triangles");
  detail::require(s.height > 0 && s.width > 0 && s.height <= kMaxImageSide && s.width <= kMaxImageSide,
                  who + ": image size must be positive and at most " + std::to_string(kMaxImageSide) +
                      " per side, got " + std::to_string(s.height) + "x" + std::to_string(s.width));
  detail::require(vertices && triangles, who + ": null input pointer");
  // int32 indices throughout (the triangles' own, and the visibility test's lists and gathers)
  detail::require(s.num_triangles <= INT32_MAX && s.num_vertices <= INT32_MAX / 3,
                  who + ": more than 2^31 triangles or 2^31 / 3 vertices");
  for (int64_t i = 0; i < s.num_triangles * 3; ++i)
    if (triangles[i] < 0 || triangles[i] >= s.num_vertices)
      detail::fail(who + ": triangle " + std::to_string(i / 3) + " has vertex index " +
                   std::to_string(triangles[i]) + " outside [0, " + std::to_string(s.num_vertices) + ")");
  detail::require_finite(vertices, s.batch * s.num_vertices * 3, (who + ": vertices").c_str());
}

// The landmark arguments of landmark_visibility and mesh_landmark_visibility.
void validate_landmarks(const int32_t* landmark_index, int64_t num_landmarks, int64_t num_vertices, float tolerance,
                        const uint8_t* visible, const std::string& who) {
  detail::require(num_landmarks >= 0, who + ": negative landmark count");
  detail::require(visible && (landmark_index || num_landmarks == 0), who + ": null pointer");
  detail::require(std::isfinite(tolerance) && tolerance >= 0.0f, who + ": tolerance must be finite and >= 0");
  for (int64_t l = 0; l < num_landmarks; ++l)
    if (landmark_index[l] < 0 || landmark_index[l] >= num_vertices)
      detail::fail(who + ": landmark " + std::to_string(l) + " has vertex index " + std::to_string(landmark_index[l]) +
                   " outside [0, " + std::to_string(num_vertices) + ")");
}

// Rasterize rows [row_begin, row_end) of one image.
void rasterize_rows(const float* v, const int32_t* tris, const RasterShape& s, int64_t row_begin,
                    int64_t row_end, float* depth, int32_t* tri_id, float* bary) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t y = row_begin; y < row_end; ++y)
    for (int64_t x = 0; x < s.width; ++x) {
      depth[y * s.width + x] = neg_inf;
      tri_id[y * s.width + x] = -1;
    }
  for (int64_t f = 0; f < s.num_triangles; ++f) {
    const detail::Triangle2D t = detail::load_triangle(v, tris[3 * f], tris[3 * f + 1], tris[3 * f + 2]);
    if (t.area == 0.0f) continue;
    int64_t x_first, x_last, y_first, y_last;
    detail::pixel_span(detail::min3(t.x0, t.x1, t.x2), detail::max3(t.x0, t.x1, t.x2), s.width, &x_first, &x_last);
    detail::pixel_span(detail::min3(t.y0, t.y1, t.y2), detail::max3(t.y0, t.y1, t.y2), s.height, &y_first, &y_last);
    y_first = std::max(y_first, row_begin);
    y_last = std::min(y_last, row_end - 1);
    for (int64_t y = y_first; y <= y_last; ++y)
      for (int64_t x = x_first; x <= x_last; ++x) {
        float b0, b1, b2, z;
        if (!detail::shade_fragment(t, static_cast<float>(x), static_cast<float>(y), &b0, &b1, &b2, &z)) continue;
        const int64_t p = y * s.width + x;
        // Larger depth wins; equal depth keeps the smaller triangle index (f grows, so keep the old one).
        if (z > depth[p]) {
          depth[p] = z;
          tri_id[p] = static_cast<int32_t>(f);
          bary[3 * p] = b0;
          bary[3 * p + 1] = b1;
          bary[3 * p + 2] = b2;
        }
      }
  }
  for (int64_t y = row_begin; y < row_end; ++y)
    for (int64_t x = 0; x < s.width; ++x) {
      const int64_t p = y * s.width + x;
      if (tri_id[p] < 0) bary[3 * p] = bary[3 * p + 1] = bary[3 * p + 2] = 0.0f;
    }
}

}  // namespace

void rasterize(const float* vertices, const int32_t* triangles, const RasterShape& s, float* depth,
               int32_t* triangle_id, float* barycentric, int num_threads) {
  validate(vertices, triangles, s, "rasterize");
  detail::require(depth && triangle_id && barycentric, "rasterize: null output pointer");
  // Work items are (image, band of rows). Every band scans all triangles, so use just enough
  // bands to keep the threads busy: one per image for large batches, several for a single image.
  const int threads = detail::resolve_threads(num_threads, s.batch * s.height);
  const int64_t bands_per_image = std::clamp<int64_t>((threads + s.batch - 1) / s.batch, 1, s.height);
  const int64_t rows_per_band = (s.height + bands_per_image - 1) / bands_per_image;
  const int64_t pixels = s.height * s.width;
  detail::parallel_for(s.batch * bands_per_image, threads, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / bands_per_image, band = item % bands_per_image;
      const int64_t r0 = band * rows_per_band, r1 = std::min(s.height, r0 + rows_per_band);
      if (r0 >= r1) continue;
      rasterize_rows(vertices + b * s.num_vertices * 3, triangles, s, r0, r1, depth + b * pixels,
                     triangle_id + b * pixels, barycentric + b * pixels * 3);
    }
  });
}

void landmark_visibility(const float* vertices, const int32_t* landmark_index, int64_t num_landmarks,
                         const float* depth, const RasterShape& s, float tolerance, uint8_t* visible) {
  detail::require(s.batch > 0 && s.num_vertices > 0 && s.height > 0 && s.width > 0,
                  "landmark_visibility: sizes must be positive");
  detail::require(vertices && depth, "landmark_visibility: null pointer");
  validate_landmarks(landmark_index, num_landmarks, s.num_vertices, tolerance, visible, "landmark_visibility");
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t l = 0; l < num_landmarks; ++l) {
      const float* q = vertices + (b * s.num_vertices + landmark_index[l]) * 3;
      // Only the landmark vertices are read, so only they must be finite.
      detail::require_finite(q, 3, "landmark_visibility: landmark vertex");
      const bool inside = detail::inside_image(q[0], s.width) && detail::inside_image(q[1], s.height);
      visible[b * num_landmarks + l] =
          inside && q[2] + tolerance >= detail::front_depth_2x2(depth + b * s.height * s.width, s.height, s.width,
                                                                  q[0], q[1]);
    }
}

namespace {

// The 2x2 pixel centres around landmarks (front_depth_2x2's), numbered. Memory scales with the
// landmarks, never with H * W: a grid over the centres' bounding box when it is small (a face),
// else a sorted list searched per lookup (landmarks spread over a huge image). With the grid
// comes a count table, so that a triangle whose pixel span holds no centre (most of a face's
// triangles: 160 landmarks touch a few hundred of its pixels) is dropped in O(1).
class CentreSlots {
 public:
  static constexpr int64_t kMaxGridCells = int64_t{1} << 22;

  CentreSlots(std::vector<int64_t> keys, int64_t width, int64_t x_lo, int64_t x_hi, int64_t y_lo, int64_t y_hi)
      : width_(width), x_lo_(x_lo), x_hi_(x_hi), y_lo_(y_lo), y_hi_(y_hi), box_w_(x_hi - x_lo + 1) {
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    keys_ = std::move(keys);
    const int64_t box_h = y_hi - y_lo + 1;
    if (!keys_.empty() && box_w_ <= kMaxGridCells / box_h) {
      grid_.assign(box_w_ * box_h, -1);
      for (size_t k = 0; k < keys_.size(); ++k)
        grid_[(keys_[k] / width_ - y_lo_) * box_w_ + keys_[k] % width_ - x_lo_] = static_cast<int32_t>(k);
      // counts_[(y + 1) * (box_w + 1) + x + 1]: the centres in box columns <= x and rows <= y
      counts_.assign((box_w_ + 1) * (box_h + 1), 0);
      for (int64_t y = 0; y < box_h; ++y)
        for (int64_t x = 0; x < box_w_; ++x)
          counts_[(y + 1) * (box_w_ + 1) + x + 1] = (grid_[y * box_w_ + x] >= 0) + counts_[y * (box_w_ + 1) + x + 1] +
                                                    counts_[(y + 1) * (box_w_ + 1) + x] - counts_[y * (box_w_ + 1) + x];
    }
  }
  int64_t size() const { return static_cast<int64_t>(keys_.size()); }
  // Slot of centre (x, y) inside the bounding box, or -1.
  int32_t find(int64_t x, int64_t y) const {
    if (!grid_.empty()) return grid_[(y - y_lo_) * box_w_ + x - x_lo_];
    const auto it = std::lower_bound(keys_.begin(), keys_.end(), y * width_ + x);
    return it != keys_.end() && *it == y * width_ + x ? static_cast<int32_t>(it - keys_.begin()) : -1;
  }
  // The count table for detail::triangles_near_centres (the centres' box in image pixels).
  detail::CentreCounts table() const {
    return {counts_.empty() ? nullptr : counts_.data(), static_cast<int32_t>(box_w_ + 1), static_cast<int32_t>(x_lo_),
            static_cast<int32_t>(x_hi_), static_cast<int32_t>(y_lo_), static_cast<int32_t>(y_hi_)};
  }
  // False when no centre lies in columns [x0, x1] and rows [y0, y1] (inside the bounding box);
  // true also when it cannot tell (no count table).
  bool any_in(int64_t x0, int64_t x1, int64_t y0, int64_t y1) const {
    if (counts_.empty()) return true;
    x0 -= x_lo_, x1 -= x_lo_ - 1, y0 -= y_lo_, y1 -= y_lo_ - 1;
    const int64_t row = box_w_ + 1;
    return counts_[y1 * row + x1] - counts_[y0 * row + x1] - counts_[y1 * row + x0] + counts_[y0 * row + x0] > 0;
  }

 private:
  int64_t width_, x_lo_, x_hi_, y_lo_, y_hi_, box_w_;
  std::vector<int64_t> keys_;    // y * width + x, sorted
  std::vector<int32_t> grid_;    // box_w * box_h slots, or empty
  std::vector<int32_t> counts_;  // (box_w + 1) * (box_h + 1) prefix counts of the grid, or empty
};

// landmark_visibility's depth test for one mesh, with the depth computed only at the pixel
// centres it reads (see mesh_landmark_visibility in raster.hpp).
void mesh_visibility_one(const float* v, const int32_t* tris, const int32_t* landmark_index, int64_t num_landmarks,
                         const RasterShape& s, float tolerance, int threads, uint8_t* visible) {
  const int64_t H = s.height, W = s.width;
  // fn(x, y) for the 2x2 pixel centres front_depth_2x2 reads around point q (clamped to the image)
  const auto for_each_centre = [H, W](const float* q, auto&& fn) {
    const int64_t x0 = detail::floor_to_int(q[0]), y0 = detail::floor_to_int(q[1]);
    for (const int64_t y : {detail::clamp_index(y0, H), detail::clamp_index(y0 + 1, H)})
      for (const int64_t x : {detail::clamp_index(x0, W), detail::clamp_index(x0 + 1, W)}) fn(x, y);
  };
  // 1. The 2x2 pixel centres around every landmark inside the image get a slot.
  std::vector<int64_t> keys;
  int64_t x_lo = W, x_hi = -1, y_lo = H, y_hi = -1;
  for (int64_t l = 0; l < num_landmarks; ++l) {
    const float* q = v + 3 * static_cast<int64_t>(landmark_index[l]);
    if (!(detail::inside_image(q[0], W) && detail::inside_image(q[1], H))) continue;
    for_each_centre(q, [&](int64_t x, int64_t y) {
      keys.push_back(y * W + x);
      x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x), y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
    });
  }
  const CentreSlots slots(std::move(keys), W, x_lo, x_hi, y_lo, y_hi);
  // 2. Front-most depth at those centres: each thread shades a range of triangles into its own
  // slots, and the maxima are merged (the rasterizer's depth is the maximum over the triangles
  // covering a centre, whatever their order).
  const int64_t count = slots.size();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int chunks = count ? std::max(1, threads) : 1;
  std::vector<float> slot_depth(chunks * count, neg_inf);
  const int64_t per_chunk = (s.num_triangles + chunks - 1) / chunks;
  const detail::CentreCounts table = slots.table();
  if (count)
    detail::parallel_for(chunks, chunks, [&](int64_t begin, int64_t end) {
      std::vector<int32_t> near(per_chunk);
      for (int64_t c = begin; c < end; ++c) {
        float* d = slot_depth.data() + c * count;
        const int64_t first = c * per_chunk, last = std::min(s.num_triangles, (c + 1) * per_chunk);
        // the triangles that may cover a centre (most of a face's triangles cover none of its few centres)
        const int64_t found =
            first < last ? detail::triangles_near_centres(tris, first, last, v, W, H, table, near.data()) : 0;
        for (int64_t i = 0; i < found; ++i) {
          const int64_t f = near[i];
          const detail::Triangle2D t = detail::load_triangle(v, tris[3 * f], tris[3 * f + 1], tris[3 * f + 2]);
          if (t.area == 0.0f) continue;
          int64_t x_first, x_last, y_first, y_last;
          detail::pixel_span(detail::min3(t.x0, t.x1, t.x2), detail::max3(t.x0, t.x1, t.x2), W, &x_first, &x_last);
          detail::pixel_span(detail::min3(t.y0, t.y1, t.y2), detail::max3(t.y0, t.y1, t.y2), H, &y_first, &y_last);
          x_first = std::max(x_first, x_lo), x_last = std::min(x_last, x_hi);
          y_first = std::max(y_first, y_lo), y_last = std::min(y_last, y_hi);
          if (x_first > x_last || y_first > y_last || !slots.any_in(x_first, x_last, y_first, y_last)) continue;
          for (int64_t y = y_first; y <= y_last; ++y)
            for (int64_t x = x_first; x <= x_last; ++x) {
              const int32_t k = slots.find(x, y);
              float b0, b1, b2, z;
              if (k < 0 || !detail::shade_fragment(t, static_cast<float>(x), static_cast<float>(y), &b0, &b1, &b2, &z))
                continue;
              if (z > d[k]) d[k] = z;
            }
        }
      }
    });
  for (int64_t k = 0; k < count; ++k)
    for (int c = 1; c < chunks; ++c) slot_depth[k] = std::max(slot_depth[k], slot_depth[c * count + k]);
  // 3. The depth test of landmark_visibility (front_depth_2x2) on those centres.
  for (int64_t l = 0; l < num_landmarks; ++l) {
    const float* q = v + 3 * static_cast<int64_t>(landmark_index[l]);
    if (!(detail::inside_image(q[0], W) && detail::inside_image(q[1], H))) {
      visible[l] = 0;
      continue;
    }
    float front = std::numeric_limits<float>::infinity();
    for_each_centre(q, [&](int64_t x, int64_t y) { front = std::min(front, slot_depth[slots.find(x, y)]); });
    visible[l] = q[2] + tolerance >= front;
  }
}

}  // namespace

void mesh_landmark_visibility(const float* vertices, const int32_t* triangles, const int32_t* landmark_index,
                              int64_t num_landmarks, const RasterShape& s, float tolerance, uint8_t* visible,
                              int num_threads) {
  validate(vertices, triangles, s, "mesh_landmark_visibility");
  validate_landmarks(landmark_index, num_landmarks, s.num_vertices, tolerance, visible, "mesh_landmark_visibility");
  detail::mesh_landmark_visibility_unchecked(vertices, triangles, landmark_index, num_landmarks, s, tolerance, visible,
                                             num_threads);
}

namespace detail {

void mesh_landmark_visibility_unchecked(const float* vertices, const int32_t* triangles, const int32_t* landmark_index,
                                        int64_t num_landmarks, const RasterShape& s, float tolerance, uint8_t* visible,
                                        int num_threads) {
  const int threads = resolve_threads(num_threads, s.batch * s.num_triangles);
  if (s.batch >= threads) {  // one mesh per thread
    parallel_for(s.batch, threads, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        mesh_visibility_one(vertices + b * s.num_vertices * 3, triangles, landmark_index, num_landmarks, s, tolerance,
                            1, visible + b * num_landmarks);
    });
    return;
  }
  for (int64_t b = 0; b < s.batch; ++b)  // few meshes: split each one's triangles between the threads
    mesh_visibility_one(vertices + b * s.num_vertices * 3, triangles, landmark_index, num_landmarks, s, tolerance,
                        threads, visible + b * num_landmarks);
}

}  // namespace detail
}  // namespace dffx
