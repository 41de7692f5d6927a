// The cascade's shape fit (paper eq. 6-8) with its normal equations partly precomputed (not installed).
#pragma once
#include <Eigen/Core>
#include <cstdint>
#include <vector>

namespace dffx::detail {

// dffx::fit_shape for one face with every landmark weighted 1 / s^2 (the landmark term in model
// units, as dffx::Cascade and dffx.align.Cascade.fit_shape weight it). With those weights the
// normal matrix depends on the rotation alone: for landmark l with basis rows B_l (3, M) and
// the rotation's rows r1, r2, r3 (r1 r1^T + r2 r2^T = I - r3 r3^T),
//   A^T A = sum_l B_l^T (I - r3 r3^T) B_l = sum_ab (delta_ab - r3_a r3_b) G_ab,
//   G_ab = sum_l B_l[a]^T B_l[b]  (six M x M matrices, summed once per model),
// so a face adds six matrices instead of dffx::fit_shape's rank-136 update. Further, the rotation
// enters only through a rank-68 update of the fixed part C = prior + G_00 + G_11 + G_22, so a fit
// factors a 68 x 68 matrix (the Woodbury identity, with C's Cholesky factor and the products it
// needs precomputed) instead of the M x M one; the M x M factorisation stays for models whose C is
// not positive definite (no prior). The same minimiser up to rounding (tests compare it with
// dffx.align.Cascade.fit_shape through the cascade).
class CascadeShapeFit {
 public:
  // mean68 (68, 3), basis68 (68, 3, M), prior_variance (M,) all > 0, w_reg >= 0.
  CascadeShapeFit(const float* mean68, const float* basis68, const float* prior_variance, int64_t num_params,
                  double w_reg);

  // params (M,) float32 of the fit to targets (68, 2) crop pixels under camera (s, pitch, yaw,
  // roll, tx, ty). Throws std::invalid_argument when targets or camera are not finite, or the
  // normal equations are singular (w_reg = 0 and a degenerate view).
  void fit(const float* targets, const double* camera, float* params) const;

 private:
  int64_t M_;
  std::vector<double> mean_, basis_;  // (68, 3), (68, 3, M) in double
  std::vector<double> prior_;         // (M, M) column-major: w_reg D^-1
  std::vector<double> gram_;          // (6, M, M) column-major: G_aa, then G_ab + G_ab^T for a < b
  // The Woodbury form (empty without it): C's Cholesky factor L (M, M), Q_a = L^-1 B[a]^T
  // (3, M, 68), and Q_a^T Q_b (6, 68, 68) in gram_'s pair order; all column-major.
  std::vector<double> chol_, q_, h_;
  // p = (C - V V^T)^-1 rhs for the rotation's third row r3; false when the 68 x 68 factorisation
  // fails (then the direct fit runs).
  bool solve_woodbury(const double* r3, const Eigen::VectorXd& rhs, Eigen::VectorXd& p) const;
};

}  // namespace dffx::detail
