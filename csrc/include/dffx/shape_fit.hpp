// Regularised least-squares 3DMM fit to 2D landmarks (paper eq. 6-8 and eq. 11).
//
// Model restricted to L landmark vertices:  S_l(p) = mean_l + sum_m basis[l, :, m] p_m,
// with p = (p_id, p_exp) stacked (M parameters) and prior variances D (M,) (eq. 8).
// Projection Y(w, p) is the weak-perspective camera of camera.hpp.
//
//   eq. 6-8:  p = argmin  w_lan * sum_l c_l ||X_l - Y_l(w, p)||^2  +  w_reg * p^T D^-1 p
//   eq. 11:   p = argmin  (w_lan / N) sum_i sum_l c_il ||X_il - Y_l(w_i, p)||^2 + w_reg * p^T D^-1 p
//
// c_l are optional per-landmark weights (e.g. visibility); X in pixels. The problem is
// linear in p; it is solved in double precision through its normal equations (LDLT).
#pragma once
#include <cstdint>

namespace dffx {

/// Landmark-restricted morphable model (all arrays row-major float32, borrowed).
struct LandmarkModel {
  const float* mean = nullptr;            ///< (L, 3) model-space landmark positions
  const float* basis = nullptr;           ///< (L, 3, M) basis restricted to the landmarks
  const float* prior_variance = nullptr;  ///< (M,) the diagonal of D, all > 0
  int64_t num_landmarks = 0;              ///< L
  int64_t num_params = 0;                 ///< M
};

/// Weights of the two energy terms of eq. 6.
struct FitWeights {
  double landmark = 1.0;        ///< w_lan
  double regularization = 1.0;  ///< w_reg
};

/// Batched per-image fit (eq. 6-8).
/// targets (B, L, 2) pixels; landmark_weights (B, L) or nullptr (all 1); cameras (B, 6);
/// out_params (B, M). num_threads <= 0 uses all hardware threads.
/// Throws std::invalid_argument on bad sizes, non-finite inputs, negative weights or
/// non-positive prior variances.
void fit_shape(const LandmarkModel& model, const float* targets, const float* landmark_weights,
               const float* cameras, int64_t batch, const FitWeights& weights, float* out_params,
               int num_threads = 0);

/// One shape shared by N images (eq. 11): same arguments, out_params (M,).
void fit_shared_shape(const LandmarkModel& model, const float* targets, const float* landmark_weights,
                      const float* cameras, int64_t num_images, const FitWeights& weights,
                      float* out_params);

}  // namespace dffx
