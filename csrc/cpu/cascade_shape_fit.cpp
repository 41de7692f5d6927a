// The cascade's shape fit with G precomputed (contract in cascade_shape_fit.hpp).
#include "cascade_shape_fit.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

#include "dffx/camera.hpp"

namespace dffx::detail {
namespace {
constexpr int64_t kLandmarks = 68;
constexpr int kAxisPairs = 6;  // (a, b) with a <= b of the three model axes
constexpr std::pair<int, int> kPairs[kAxisPairs] = {{0, 0}, {1, 1}, {2, 2}, {0, 1}, {0, 2}, {1, 2}};
using MatrixXd = Eigen::MatrixXd;
using RowMajorXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}  // namespace

CascadeShapeFit::CascadeShapeFit(const float* mean68, const float* basis68, const float* prior_variance,
                                 int64_t num_params, double w_reg)
    : M_(num_params), mean_(mean68, mean68 + kLandmarks * 3), basis_(basis68, basis68 + kLandmarks * 3 * num_params) {
  MatrixXd prior = MatrixXd::Zero(M_, M_);
  for (int64_t j = 0; j < M_; ++j) prior(j, j) = w_reg / prior_variance[j];
  prior_.assign(prior.data(), prior.data() + M_ * M_);
  // G_ab = sum_l B_l[a]^T B_l[b] (M, M) for axes a <= b; off the diagonal G_ab + G_ab^T, so that
  // sum_ab c_ab G_ab for symmetric c is sum_a c_aa gram(a, a) + sum_a<b c_ab gram(a, b).
  gram_.resize(kAxisPairs * M_ * M_);
  for (int pair = 0; pair < kAxisPairs; ++pair) {
    const auto [a, b] = kPairs[pair];
    using AxisRows = Eigen::Map<const RowMajorXd, 0, Eigen::OuterStride<>>;  // B_l[axis] for l = 0..67
    const AxisRows Ba(basis_.data() + a * M_, kLandmarks, M_, Eigen::OuterStride<>(3 * M_));
    const AxisRows Bb(basis_.data() + b * M_, kLandmarks, M_, Eigen::OuterStride<>(3 * M_));
    MatrixXd g(M_, M_);
    g.noalias() = Ba.transpose() * Bb;
    if (a != b) g += g.transpose().eval();
    std::copy(g.data(), g.data() + M_ * M_, gram_.data() + pair * M_ * M_);
  }
  // The Woodbury form. With C = prior + G_00 + G_11 + G_22 (the rotation-free part) the normal
  // matrix is C - V V^T, V = [B_l^T r3]_l (M, 68): a rank-68 update. With C = L L^T and
  // Q_a = L^-1 B[a]^T (M, 68), W = sum_a r3_a Q_a = L^-1 V, so that
  //   (C - V V^T)^-1 = L^-T (I + W (I - W^T W)^-1 W^T) L^-1,  W^T W = sum_ab r3_a r3_b Q_a^T Q_b:
  // a fit factors a 68 x 68 matrix instead of an M x M one.
  MatrixXd C = prior;
  for (int a = 0; a < 3; ++a) C += Eigen::Map<const MatrixXd>(gram_.data() + a * M_ * M_, M_, M_);
  const Eigen::LLT<MatrixXd> factor(C);
  if (factor.info() != Eigen::Success) return;  // no prior and a degenerate model: the direct fit
  const MatrixXd L = factor.matrixL();
  chol_.assign(L.data(), L.data() + M_ * M_);
  std::vector<MatrixXd> Q(3);
  for (int a = 0; a < 3; ++a) {
    MatrixXd Bt(M_, kLandmarks);  // B[a]^T: column l is landmark l's axis-a basis row
    for (int64_t l = 0; l < kLandmarks; ++l)
      for (int64_t j = 0; j < M_; ++j) Bt(j, l) = basis_[(3 * l + a) * M_ + j];
    Q[a] = factor.matrixL().solve(Bt);
  }
  q_.resize(3 * M_ * kLandmarks);
  for (int a = 0; a < 3; ++a) std::copy(Q[a].data(), Q[a].data() + M_ * kLandmarks, q_.data() + a * M_ * kLandmarks);
  h_.resize(kAxisPairs * kLandmarks * kLandmarks);
  for (int pair = 0; pair < kAxisPairs; ++pair) {  // Q_a^T Q_b, off the diagonal plus its transpose
    const auto [a, b] = kPairs[pair];
    MatrixXd h = Q[a].transpose() * Q[b];
    if (a != b) h += h.transpose().eval();
    std::copy(h.data(), h.data() + kLandmarks * kLandmarks, h_.data() + pair * kLandmarks * kLandmarks);
  }
}

bool CascadeShapeFit::solve_woodbury(const double* r3, const Eigen::VectorXd& rhs, Eigen::VectorXd& p) const {
  constexpr int64_t K = kLandmarks;
  thread_local MatrixXd W, inner;  // per-thread scratch (M x 68, 68 x 68)
  W.setZero(M_, K);
  for (int a = 0; a < 3; ++a) W += r3[a] * Eigen::Map<const MatrixXd>(q_.data() + a * M_ * K, M_, K);
  inner.setIdentity(K, K);  // I - W^T W = I - sum_ab r3_a r3_b Q_a^T Q_b
  for (int pair = 0; pair < kAxisPairs; ++pair) {
    const auto [a, b] = kPairs[pair];
    const Eigen::Map<const MatrixXd> h(h_.data() + pair * K * K, K, K);
    inner.triangularView<Eigen::Lower>() -= (r3[a] * r3[b]) * h;
  }
  const Eigen::LLT<Eigen::Ref<MatrixXd>, Eigen::Lower> small(inner);
  if (small.info() != Eigen::Success) return false;  // numerically not positive: the direct fit decides
  const Eigen::Map<const MatrixXd> L(chol_.data(), M_, M_);
  const Eigen::VectorXd y = L.triangularView<Eigen::Lower>().solve(rhs);
  const Eigen::VectorXd z = y + W * small.solve(W.transpose() * y);
  p = L.transpose().triangularView<Eigen::Upper>().solve(z);
  return true;
}

void CascadeShapeFit::fit(const float* targets, const double* camera, float* params) const {
  for (int i = 0; i < 2 * kLandmarks; ++i)
    if (!std::isfinite(targets[i]))
      throw std::invalid_argument("cascade shape fit: a landmark estimate is not finite (NaN or inf in the DFF maps?)");
  for (int i = 0; i < kCameraParams; ++i)
    if (!std::isfinite(camera[i])) throw std::invalid_argument("cascade shape fit: the camera is not finite");
  double R[9];
  rotation_matrix(camera[1], camera[2], camera[3], R);
  const double s = camera[0], tx = camera[4], ty = camera[5];
  Eigen::Map<const RowMajorXd> B(basis_.data(), kLandmarks * 3, M_);
  // u (68 * 3): B^T u = A^T r (with the 1 / s^2 weights) for the residuals r of the mean shape:
  // A's rows are s r1^T B_l and -s r2^T B_l.
  Eigen::VectorXd u(kLandmarks * 3);
  for (int64_t l = 0; l < kLandmarks; ++l) {
    const double* q = mean_.data() + 3 * l;
    const double rx = targets[2 * l] - (s * (R[0] * q[0] + R[1] * q[1] + R[2] * q[2]) + tx);
    const double ry = targets[2 * l + 1] - (-s * (R[3] * q[0] + R[4] * q[1] + R[5] * q[2]) + ty);
    for (int k = 0; k < 3; ++k) u(3 * l + k) = (R[k] * rx - R[3 + k] * ry) / s;
  }
  const double* r3 = R + 6;
  const Eigen::VectorXd rhs = B.transpose() * u;
  Eigen::VectorXd p;
  if (!chol_.empty() && solve_woodbury(r3, rhs, p)) {
    for (int64_t j = 0; j < M_; ++j) params[j] = static_cast<float>(p(j));
    return;
  }
  // A^T A = sum_ab (delta_ab - r3_a r3_b) G_ab (lower triangles only), plus the prior term.
  thread_local MatrixXd normal;  // per-thread scratch: 146 KB at M = 135, too large to allocate per fit
  normal = Eigen::Map<const MatrixXd>(prior_.data(), M_, M_);
  for (int pair = 0; pair < kAxisPairs; ++pair) {
    const auto [a, b] = kPairs[pair];
    const double c = (a == b ? 1.0 : 0.0) - r3[a] * r3[b];
    normal.triangularView<Eigen::Lower>() += c * Eigen::Map<const MatrixXd>(gram_.data() + pair * M_ * M_, M_, M_);
  }
  const Eigen::LLT<Eigen::Ref<MatrixXd>, Eigen::Lower> llt(normal);  // in place, in the scratch
  if (llt.info() != Eigen::Success)
    throw std::invalid_argument(
        "cascade shape fit is singular (no regularisation and a degenerate view); use w_reg > 0");
  p = llt.solve(rhs);
  for (int64_t j = 0; j < M_; ++j) params[j] = static_cast<float>(p(j));
}

}  // namespace dffx::detail
