// Regularised least-squares 3DMM fit to 2D landmarks, paper eq. 6-8 and 11 (contract in shape_fit.hpp).
#include "dffx/shape_fit.hpp"

#include <Eigen/Dense>
#include <string>
#include <vector>

#include "dffx/camera.hpp"
#include "internal.hpp"

namespace dffx {
namespace {

using MatrixXd = Eigen::MatrixXd;  // column-major: A^T A reads contiguous columns

void validate(const LandmarkModel& m, const float* targets, const float* landmark_weights, const float* cameras,
              int64_t count, const FitWeights& w, const char* who) {
  const std::string name(who);
  detail::require(m.mean && m.basis && m.prior_variance, name + ": model arrays must not be null");
  detail::require(m.num_landmarks > 0 && m.num_params > 0, name + ": model needs landmarks and parameters");
  detail::require(count > 0, name + ": no faces to fit");
  detail::require(targets && cameras, name + ": null targets or cameras");
  detail::require(std::isfinite(w.landmark) && w.landmark > 0, name + ": landmark weight must be > 0");
  detail::require(std::isfinite(w.regularization) && w.regularization >= 0, name + ": regularization weight must be >= 0");
  for (int64_t j = 0; j < m.num_params; ++j)
    detail::require(std::isfinite(m.prior_variance[j]) && m.prior_variance[j] > 0,
                    name + ": prior variance " + std::to_string(j) + " must be finite and > 0");
  detail::require_finite(targets, count * m.num_landmarks * 2, (name + ": targets").c_str());
  detail::require_finite(cameras, count * kCameraParams, (name + ": cameras").c_str());
  if (landmark_weights) {
    for (int64_t i = 0; i < count * m.num_landmarks; ++i)
      detail::require(std::isfinite(landmark_weights[i]) && landmark_weights[i] >= 0,
                      name + ": landmark weights must be finite and >= 0");
  }
}

// Accumulate c * A^T A and c * A^T r of one image into (AtA, Atr), where A = dY/dp (2L x M)
// and r = X - Y(w, 0): the problem is linear in p because Y(w, p) = Y(w, 0) + A p.
void accumulate_normal_equations(const LandmarkModel& m, const float* target, const float* lmk_weight,
                                 const float* camera, double scale, MatrixXd& AtA, Eigen::VectorXd& Atr) {
  const int64_t L = m.num_landmarks, M = m.num_params;
  double R[9];
  rotation_matrix(camera[1], camera[2], camera[3], R);
  const double s = camera[0], tx = camera[4], ty = camera[5];
  MatrixXd A(2 * L, M);
  Eigen::VectorXd r(2 * L);
  for (int64_t l = 0; l < L; ++l) {
    const double c = std::sqrt(scale * (lmk_weight ? lmk_weight[l] : 1.0));
    const float* q = m.mean + 3 * l;
    const double proj_x = s * (R[0] * q[0] + R[1] * q[1] + R[2] * q[2]) + tx;
    const double proj_y = -s * (R[3] * q[0] + R[4] * q[1] + R[5] * q[2]) + ty;
    r(2 * l) = c * (target[2 * l] - proj_x);
    r(2 * l + 1) = c * (target[2 * l + 1] - proj_y);
    const float* bx = m.basis + (3 * l) * M;  // rows x, y, z of landmark l: (3, M)
    const float* by = bx + M;
    const float* bz = by + M;
    for (int64_t j = 0; j < M; ++j) {
      A(2 * l, j) = c * s * (R[0] * bx[j] + R[1] * by[j] + R[2] * bz[j]);
      A(2 * l + 1, j) = -c * s * (R[3] * bx[j] + R[4] * by[j] + R[5] * bz[j]);
    }
  }
  // Only the lower triangle is accumulated (symmetric rank update: half the flops of A^T A);
  // solve_into() reads the lower triangle only.
  AtA.selfadjointView<Eigen::Lower>().rankUpdate(A.transpose());
  Atr.noalias() += A.transpose() * r;
}

void solve_into(const LandmarkModel& m, MatrixXd& AtA, const Eigen::VectorXd& Atr, double w_reg, float* out) {
  for (int64_t j = 0; j < m.num_params; ++j) AtA(j, j) += w_reg / m.prior_variance[j];
  const Eigen::LDLT<MatrixXd, Eigen::Lower> ldlt(AtA);
  const Eigen::VectorXd d = ldlt.vectorD();
  if (ldlt.info() != Eigen::Success || !(d.minCoeff() > 1e-12 * std::max(1.0, d.maxCoeff())))
    throw std::invalid_argument(
        "shape fit is singular (no regularisation and too few weighted landmarks); use regularization > 0");
  const Eigen::VectorXd p = ldlt.solve(Atr);
  for (int64_t j = 0; j < m.num_params; ++j) out[j] = static_cast<float>(p(j));
}

}  // namespace

void fit_shape(const LandmarkModel& m, const float* targets, const float* landmark_weights, const float* cameras,
               int64_t batch, const FitWeights& w, float* out_params, int num_threads) {
  validate(m, targets, landmark_weights, cameras, batch, w, "fit_shape");
  detail::require(out_params != nullptr, "fit_shape: null output");
  const int64_t L = m.num_landmarks, M = m.num_params;
  detail::parallel_for(batch, num_threads, [&](int64_t begin, int64_t end) {
    MatrixXd AtA(M, M);
    Eigen::VectorXd Atr(M);
    for (int64_t b = begin; b < end; ++b) {
      AtA.setZero();
      Atr.setZero();
      accumulate_normal_equations(m, targets + b * L * 2, landmark_weights ? landmark_weights + b * L : nullptr,
                                  cameras + b * kCameraParams, w.landmark, AtA, Atr);
      solve_into(m, AtA, Atr, w.regularization, out_params + b * M);
    }
  });
}

void fit_shared_shape(const LandmarkModel& m, const float* targets, const float* landmark_weights,
                      const float* cameras, int64_t num_images, const FitWeights& w, float* out_params) {
  validate(m, targets, landmark_weights, cameras, num_images, w, "fit_shared_shape");
  detail::require(out_params != nullptr, "fit_shared_shape: null output");
  const int64_t L = m.num_landmarks, M = m.num_params;
  const double scale = w.landmark / static_cast<double>(num_images);  // eq. 11's w_lan / N
  // One partial sum per chunk of images, added in chunk order: the result does not depend on
  // thread timing.
  const int threads = detail::resolve_threads(0, num_images);
  const int64_t chunk = (num_images + threads - 1) / threads;
  std::vector<MatrixXd> partial_AtA(threads, MatrixXd::Zero(M, M));
  std::vector<Eigen::VectorXd> partial_Atr(threads, Eigen::VectorXd::Zero(M));
  detail::parallel_for(threads, threads, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t i = t * chunk; i < std::min(num_images, (t + 1) * chunk); ++i)
        accumulate_normal_equations(m, targets + i * L * 2, landmark_weights ? landmark_weights + i * L : nullptr,
                                    cameras + i * kCameraParams, scale, partial_AtA[t], partial_Atr[t]);
  });
  MatrixXd AtA = MatrixXd::Zero(M, M);
  Eigen::VectorXd Atr = Eigen::VectorXd::Zero(M);
  for (int t = 0; t < threads; ++t) {
    AtA += partial_AtA[t];
    Atr += partial_Atr[t];
  }
  solve_into(m, AtA, Atr, w.regularization, out_params);
}

}  // namespace dffx
