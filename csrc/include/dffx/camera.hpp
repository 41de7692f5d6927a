// Weak-perspective camera of the DFF paper (eq. 2).
//
// Camera w = (s, pitch, yaw, roll, tx, ty), angles in radians. Model space is the
// ICT-FaceKit one (centimetres, x to the subject's left, y up, z towards the viewer);
// image space is OpenCV's (pixels, 0-based, pixel centres at integers, x right, y down).
//
//   R = Rx(-pitch) * Ry(-yaw) * Rz(-roll)     (Rx, Ry, Rz the right-handed elementary rotations)
//   x_img =  s * (R q)_x + tx
//   y_img = -s * (R q)_y + ty                 (model y is up, image y is down)
//   depth =  s * (R q)_z                      (larger = closer to the viewer, in pixels)
//
// With these signs the angles follow AFLW2000-3D's Pose_Para: positive pitch = the face
// looks up, positive yaw = the face turns towards image left (the subject's right),
// positive roll = the face tilts clockwise on screen.
#pragma once
#include <cstdint>

namespace dffx {

/// Number of parameters of a weak-perspective camera w = (s, pitch, yaw, roll, tx, ty).
constexpr int kCameraParams = 6;

/// Row-major 3x3 rotation R(pitch, yaw, roll) as defined above (angles in radians).
void rotation_matrix(double pitch, double yaw, double roll, double out_R[9]);

/// Project model-space vertices to screen space (x, y in pixels, depth in pixels).
///
/// vertices: (B, N, 3) float32, or (N, 3) shared by every camera when shared_vertices.
/// cameras:  (B, 6) float32.  out: (B, N, 3) float32.
/// Throws std::invalid_argument on negative sizes, null pointers, non-finite vertices or cameras.
void project_weak_perspective(const float* vertices, const float* cameras, int64_t batch,
                              int64_t num_vertices, bool shared_vertices, float* out);

}  // namespace dffx
