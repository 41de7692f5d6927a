// CPU-only build: the CUDA entry points exist (so the ABI is the same) and say why they fail.
#include <stdexcept>

#include "dffx/angular_softmax.hpp"
#include "dffx/raster.hpp"
#include "dffx/sampling.hpp"
#include "dffx/version.hpp"

namespace dffx {

int cuda_device_count() { return 0; }

namespace cuda {
namespace {
[[noreturn]] void no_cuda() {
  throw std::runtime_error("dffx was built without CUDA kernels (no CUDA toolkit was found at build time)");
}
}  // namespace
void rasterize(const float*, const int32_t*, const RasterShape&, float*, int32_t*, float*, void*) { no_cuda(); }
void landmark_visibility(const float*, const int32_t*, int64_t, const float*, const RasterShape&, float,
                         uint8_t*, void*) {
  no_cuda();
}
void angular_softmax_forward(const float*, const int32_t*, const float*, const AngularSoftmaxShape&, float, float*,
                             int64_t*, float*, void*) {
  no_cuda();
}
void angular_softmax_backward(const float*, const int32_t*, const float*, const float*, const float*,
                              const AngularSoftmaxShape&, float, float*, float*, void*) {
  no_cuda();
}
void sample_landmark_features(const float*, const float*, const uint8_t*, const SamplingShape&, float*, void*) {
  no_cuda();
}
void sample_landmark_features_backward(const float*, const float*, const uint8_t*, const float*,
                                       const SamplingShape&, float*, void*) {
  no_cuda();
}
}  // namespace cuda
}  // namespace dffx
