// Weak-perspective projection, paper eq. 2 (conventions in camera.hpp).
#include "dffx/camera.hpp"

#include <cmath>

#include "internal.hpp"

namespace dffx {

void rotation_matrix(double pitch, double yaw, double roll, double R[9]) {
  // R = Rx(-pitch) Ry(-yaw) Rz(-roll), written out.
  const double cx = std::cos(pitch), sx = -std::sin(pitch);
  const double cy = std::cos(yaw), sy = -std::sin(yaw);
  const double cz = std::cos(roll), sz = -std::sin(roll);
  // Rx = [1 0 0; 0 cx -sx; 0 sx cx], Ry = [cy 0 sy; 0 1 0; -sy 0 cy], Rz = [cz -sz 0; sz cz 0; 0 0 1]
  R[0] = cy * cz;                 R[1] = -cy * sz;                R[2] = sy;
  R[3] = sx * sy * cz + cx * sz;  R[4] = -sx * sy * sz + cx * cz; R[5] = -sx * cy;
  R[6] = -cx * sy * cz + sx * sz; R[7] = cx * sy * sz + sx * cz;  R[8] = cx * cy;
}

void project_weak_perspective(const float* vertices, const float* cameras, int64_t batch,
                              int64_t num_vertices, bool shared_vertices, float* out) {
  detail::require(batch >= 0 && num_vertices >= 0, "project_weak_perspective: negative size");
  detail::require(vertices && cameras && out, "project_weak_perspective: null pointer");
  detail::require_finite(cameras, batch * kCameraParams, "cameras");
  detail::require_finite(vertices, (shared_vertices ? 1 : batch) * num_vertices * 3, "vertices");
  for (int64_t b = 0; b < batch; ++b) {
    const float* w = cameras + b * kCameraParams;
    double R[9];
    rotation_matrix(w[1], w[2], w[3], R);
    const double s = w[0], tx = w[4], ty = w[5];
    const float* v = vertices + (shared_vertices ? 0 : b * num_vertices * 3);
    float* o = out + b * num_vertices * 3;
    for (int64_t i = 0; i < num_vertices; ++i) {
      const double x = v[3 * i], y = v[3 * i + 1], z = v[3 * i + 2];
      o[3 * i + 0] = static_cast<float>(s * (R[0] * x + R[1] * y + R[2] * z) + tx);
      o[3 * i + 1] = static_cast<float>(-s * (R[3] * x + R[4] * y + R[5] * z) + ty);
      o[3 * i + 2] = static_cast<float>(s * (R[6] * x + R[7] * y + R[8] * z));
    }
  }
}

}  // namespace dffx
