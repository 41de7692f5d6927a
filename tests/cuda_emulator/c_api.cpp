// C entry points (for ctypes) to dffx's CUDA host functions compiled against the emulator.
// Every "device pointer" is a host pointer here. Each function returns 0 on success, 1 when
// dffx threw std::invalid_argument, 2 for any other error; dffx_emu_error() holds the message.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "dffx/angular_softmax.hpp"
#include "dffx/raster.hpp"
#include "dffx/sampling.hpp"
#include "emulator.hpp"

namespace {

std::string last_error;

template <typename F>
int guarded(F&& f) {
  last_error.clear();
  try {
    f();
    return 0;
  } catch (const std::invalid_argument& e) {
    last_error = e.what();
    return 1;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 2;
  }
}

}  // namespace

extern "C" {

const char* dffx_emu_error() { return last_error.c_str(); }

void dffx_emu_configure(int order, unsigned seed, int sm_count) {
  dffx_emu::configure({static_cast<dffx_emu::Order>(order), seed, sm_count});
}

// launches, blocks, threads, barriers, shuffles since the last reset.
void dffx_emu_stats(int64_t* out) {
  const dffx_emu::Stats s = dffx_emu::stats();
  out[0] = s.launches;
  out[1] = s.blocks;
  out[2] = s.threads;
  out[3] = s.barriers;
  out[4] = s.shuffles;
}

void dffx_emu_reset_stats() { dffx_emu::reset_stats(); }

int dffx_emu_rasterize(const float* vertices, const int32_t* triangles, int64_t batch, int64_t num_vertices,
                       int64_t num_triangles, int64_t height, int64_t width, float* depth, int32_t* triangle_id,
                       float* barycentric) {
  return guarded([&] {
    const dffx::RasterShape s{batch, num_vertices, num_triangles, height, width};
    dffx::cuda::rasterize(vertices, triangles, s, depth, triangle_id, barycentric);
  });
}

int dffx_emu_landmark_visibility(const float* vertices, const int32_t* landmark_index, int64_t num_landmarks,
                                 const float* depth, int64_t batch, int64_t num_vertices, int64_t height,
                                 int64_t width, float tolerance, uint8_t* visible) {
  return guarded([&] {
    const dffx::RasterShape s{batch, num_vertices, 1, height, width};
    dffx::cuda::landmark_visibility(vertices, landmark_index, num_landmarks, depth, s, tolerance, visible);
  });
}

int dffx_emu_sample(const float* maps, const float* points, const uint8_t* visible, int64_t batch,
                    int64_t channels, int64_t height, int64_t width, int64_t num_landmarks, float* features) {
  return guarded([&] {
    const dffx::SamplingShape s{batch, channels, height, width, num_landmarks};
    dffx::cuda::sample_landmark_features(maps, points, visible, s, features);
  });
}

int dffx_emu_sample_backward(const float* maps, const float* points, const uint8_t* visible,
                             const float* grad_features, int64_t batch, int64_t channels, int64_t height,
                             int64_t width, int64_t num_landmarks, float* grad_maps) {
  return guarded([&] {
    const dffx::SamplingShape s{batch, channels, height, width, num_landmarks};
    dffx::cuda::sample_landmark_features_backward(maps, points, visible, grad_features, s, grad_maps);
  });
}

int dffx_emu_angular_softmax_forward(const float* features, const int32_t* labels, const float* class_vectors,
                                     int64_t num_pixels, int64_t num_segmentations, int64_t num_classes,
                                     int64_t dim, float scale, float* loss, int64_t* correct, float* log_sum_exp) {
  return guarded([&] {
    const dffx::AngularSoftmaxShape s{num_pixels, num_segmentations, num_classes, dim};
    dffx::cuda::angular_softmax_forward(features, labels, class_vectors, s, scale, loss, correct, log_sum_exp);
  });
}

int dffx_emu_angular_softmax_backward(const float* features, const int32_t* labels, const float* class_vectors,
                                      const float* log_sum_exp, const float* grad_loss, int64_t num_pixels,
                                      int64_t num_segmentations, int64_t num_classes, int64_t dim, float scale,
                                      float* grad_features, float* grad_class_vectors) {
  return guarded([&] {
    const dffx::AngularSoftmaxShape s{num_pixels, num_segmentations, num_classes, dim};
    dffx::cuda::angular_softmax_backward(features, labels, class_vectors, log_sum_exp, grad_loss, s, scale,
                                         grad_features, grad_class_vectors);
  });
}

}  // extern "C"
