// Landmark feature sampling of the alignment cascade (paper Sec. III-C2): the DFF descriptors of
// the L dense landmarks, concatenated into F^(k) (R^5120 for L = 160, C = 32), hidden ones zeroed.
//
// Inputs (row-major, borrowed):
//   maps     (B, C, H, W) float32  DFF maps (unit C-vectors per pixel); (B, H, W, C) with
//                                  SamplingShape::channels_last (forward only)
//   points   (B, L, 2)    float32  landmark positions (x, y) in pixels: 0-based, pixel centres at
//                                  integer coordinates, x right, y down
//   visible  (B, L)       uint8    nonzero = visible
// Output:
//   features (B, L * C)   float32  landmark-major: features[b, l * C + c]
//
// Per landmark (b, l):
//   * it counts as hidden when visible[b, l] == 0 or (x, y) lies outside the image's pixel area
//     x in [-0.5, W - 0.5), y in [-0.5, H - 0.5) (the rule of landmark_visibility); a hidden
//     landmark gets C zeros;
//   * otherwise xc = clamp(x, 0, W - 1), yc = clamp(y, 0, H - 1); x0 = floor(xc),
//     x1 = min(x0 + 1, W - 1), ax = xc - x0 (rows likewise, ay), and per channel c
//       v_c = (1 - ay) * ((1 - ax) * m[c, y0, x0] + ax * m[c, y0, x1])
//           +      ay  * ((1 - ax) * m[c, y1, x0] + ax * m[c, y1, x1])
//     (float32, in this order); n = sqrt(sum_c v_c^2) and features = v / n, or zeros when n < 1e-12.
// Backward, for an upstream gradient g = dL/dfeatures (B, L * C): per visible landmark with
// n >= 1e-12 and f = v / n,
//   dL/dv = (g - f (f . g)) / n,
// scattered into dL/dmaps with the four bilinear weights above (zero-weight taps included; taps
// that coincide after clamping add up). Hidden landmarks and landmarks with n < 1e-12 contribute
// nothing (the output is constant zero there). Gradients with respect to the points are not
// computed (the cascade treats landmark positions as constants).
#pragma once
#include <cstdint>

namespace dffx {

/// Sizes of one landmark-sampling call.
struct SamplingShape {
  int64_t batch = 0;          ///< B
  int64_t channels = 0;       ///< C, DFF dimension (32 in the paper)
  int64_t height = 0;         ///< H
  int64_t width = 0;          ///< W
  int64_t num_landmarks = 0;  ///< L (160 in the paper); may be 0
  /// Maps stored (B, H, W, C) ("channels last", as PyTorch's channels-last convolutions write
  /// them) instead of (B, C, H, W); the same values in the same float order. CPU forward only:
  /// the backward passes and the CUDA versions throw std::invalid_argument when it is set.
  bool channels_last = false;
};

/// Norm below which a sampled descriptor is returned as zeros instead of being normalised.
constexpr float kSamplingMinNorm = 1e-12f;

/// Forward pass on the CPU (multi-threaded over landmarks). Writes all B * L * C outputs.
/// num_threads <= 0 uses up to std::thread::hardware_concurrency(); every thread gets at least
/// 512 landmarks, so one face (L = 160) runs on one thread.
/// Throws std::invalid_argument for non-positive B, C, H, W, negative L, null pointers or
/// non-finite points (hidden landmarks included). The maps are not checked for finiteness.
void sample_landmark_features(const float* maps, const float* points, const uint8_t* visible,
                              const SamplingShape& shape, float* features, int num_threads = 0);

/// Backward pass on the CPU: ACCUMULATES dL/dmaps into grad_maps (B, C, H, W) (+=; zero it
/// first for a plain gradient). grad_features is dL/dfeatures (B, L * C). Deterministic: every
/// (b, c) plane is owned by one thread and landmarks are added in index order, so the result
/// does not depend on num_threads. Throws like sample_landmark_features.
void sample_landmark_features_backward(const float* maps, const float* points, const uint8_t* visible,
                                       const float* grad_features, const SamplingShape& shape, float* grad_maps,
                                       int num_threads = 0);

namespace cuda {
/// CUDA versions of the above: every pointer is a device pointer, stream a cudaStream_t
/// (nullptr = default stream); calls are asynchronous on that stream. Only sizes are checked
/// on the host: the caller must check that the points are finite (non-finite points count as
/// hidden on the device). The backward accumulates with float atomicAdd, so the order of the
/// additions into one map pixel (and its last-bit rounding) may vary between runs.
/// Throws std::invalid_argument for bad sizes and std::runtime_error when the core was built
/// without CUDA or a launch fails.
void sample_landmark_features(const float* maps, const float* points, const uint8_t* visible,
                              const SamplingShape& shape, float* features, void* stream = nullptr);
void sample_landmark_features_backward(const float* maps, const float* points, const uint8_t* visible,
                                       const float* grad_features, const SamplingShape& shape, float* grad_maps,
                                       void* stream = nullptr);
}  // namespace cuda

}  // namespace dffx
