// CPU angular-softmax loss (contract in angular_softmax.hpp).
//
// Every pass is built from one register-blocked micro-kernel, out[4][16] (+)= A[4][L] B[L][16],
// and a vectorised exp, so the logits only ever exist as small tiles in L1:
//
// forward        parallel over pixels (one chunk per thread, segmentation-outer so h_k stays
//                in cache). For a tile of 4 pixels: Z (4 x C) = (s F) h_k^T, then per pixel
//                max, sum exp(z - max), lse, the true-class logit and the first arg max.
// grad_features  parallel over pixels, in spans of 256 pixels: for every k and every tile of
//                4 pixels of the span, recompute Z, W = (g_k s / N)(exp(Z - lse) - onehot) and
//                accumulate G (4 x D) += W h_k.
// grad_classes   parallel over (k, block of 64 classes); each unit sweeps all pixels in batches
//                of 64: Z^T (64 classes x 64 pixels) = h_block (s F_batch)^T, W^T as above,
//                G_block (64 x D) += W^T F_batch. Each unit owns its rows of the gradient, so
//                there are no atomics, no per-thread copies of the (K, C, D) gradient, and the
//                result does not depend on the thread count.
//
// Arrays are padded with zeros to D_pad = roundup(D, 16) and C_pad = roundup(C, 64); padded
// classes are masked out of every reduction.
//
// Instruction sets. The kernels use GCC/Clang vector extensions (8-float vectors), so they are
// portable C++. With GCC on x86 the kernel section at the end of this file is compiled twice:
// this file includes itself once as is (baseline: SSE2 on x86-64) and once under
// `#pragma GCC target("avx2,fma")`; the AVX2 instance is used when CPUID reports AVX2 and FMA.
// (A per-function target attribute is not enough: GCC lowers the vector operations of inline
// helpers for the baseline before inlining them.)
#ifndef DFFX_ANGULAR_SOFTMAX_KERNELS
#include "dffx/angular_softmax.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "internal.hpp"

#if !(defined(__GNUC__) || defined(__clang__))
#error "csrc/cpu/angular_softmax.cpp needs the GCC/Clang vector extensions"
#endif
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(DFFX_NO_AVX2_DISPATCH)
#define DFFX_AVX2_DISPATCH 1
#else
#define DFFX_AVX2_DISPATCH 0
#endif
#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vectors in inline helpers of the baseline instance

namespace dffx {
namespace {

constexpr int kRows = 4;             // micro-kernel rows
constexpr int kCols = 16;            // micro-kernel columns (two 8-float vectors)
constexpr int64_t kClassBlock = 64;  // classes per work unit of the grad_classes pass
constexpr int64_t kPixelBatch = 64;  // pixels per batch of the grad_classes pass
constexpr int64_t kPixelSpan = 256;  // pixels whose feature gradients are accumulated together
static_assert(kPixelSpan % kRows == 0 && kPixelBatch % kCols == 0 && kClassBlock % kCols == 0, "tiling");

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

std::string sizes_text(const AngularSoftmaxShape& s) {
  return "N=" + std::to_string(s.num_pixels) + ", K=" + std::to_string(s.num_segmentations) +
         ", C=" + std::to_string(s.num_classes) + ", D=" + std::to_string(s.dim);
}

void validate(const float* features, const int32_t* labels, const float* class_vectors,
              const AngularSoftmaxShape& s, float scale, const char* who) {
  const std::string w(who);
  detail::require(s.num_pixels > 0 && s.num_segmentations > 0 && s.num_classes > 0 && s.dim > 0,
                  w + ": every size must be positive, got " + sizes_text(s));
  detail::require(s.num_classes <= 0x7FFFFFFF, w + ": too many classes, got " + sizes_text(s));
  detail::require(std::isfinite(scale) && scale > 0.0f, w + ": scale must be finite and > 0, got " +
                                                           std::to_string(scale));
  detail::require(features && labels && class_vectors, w + ": null input pointer");
  const int64_t count = s.num_pixels * s.num_segmentations;
  for (int64_t i = 0; i < count; ++i)
    if (labels[i] < 0 || labels[i] >= s.num_classes)
      detail::fail(w + ": label " + std::to_string(labels[i]) + " of pixel " +
                   std::to_string(i / s.num_segmentations) + " in segmentation " +
                   std::to_string(i % s.num_segmentations) + " is outside [0, " + std::to_string(s.num_classes) +
                   ")");
}

// The problem, with zero-padded copies of the class vectors in the two layouts the passes need.
struct Problem {
  const float* f;        // (N, D)
  const int32_t* label;  // (N, K)
  int64_t N, K, C, D, Cp, Dp;
  float scale;
  std::vector<float> hT;  // (K, Dp, Cp): hT[k][d][j] = h[k][j][d]
  std::vector<float> hP;  // (K, Cp, Dp): zero-padded h

  Problem(const float* features, const int32_t* labels, const float* h, const AngularSoftmaxShape& s, float sc,
          bool want_hT, bool want_hP)
      : f(features), label(labels), N(s.num_pixels), K(s.num_segmentations), C(s.num_classes), D(s.dim),
        Cp(round_up(s.num_classes, kClassBlock)), Dp(round_up(s.dim, kCols)), scale(sc) {
    if (want_hT) {
      hT.assign(static_cast<size_t>(K * Dp * Cp), 0.0f);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < C; ++j)
          for (int64_t d = 0; d < D; ++d) hT[(k * Dp + d) * Cp + j] = h[(k * C + j) * D + d];
    }
    if (want_hP) {
      hP.assign(static_cast<size_t>(K * Cp * Dp), 0.0f);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < C; ++j)
          std::copy(h + (k * C + j) * D, h + (k * C + j + 1) * D, &hP[(k * Cp + j) * Dp]);
    }
  }

  // kRows x Dp tile of factor * f for pixels [p0, p0 + count), zero-padded.
  void load_tile(int64_t p0, int count, float factor, float* ft) const {
    std::fill(ft, ft + kRows * Dp, 0.0f);
    for (int i = 0; i < count; ++i)
      for (int64_t d = 0; d < D; ++d) ft[i * Dp + d] = factor * f[(p0 + i) * D + d];
  }
};

struct ForwardPartial {
  double loss = 0.0;
  int64_t hits = 0;
};

}  // namespace
}  // namespace dffx

// ------------------------------------------------------------------ kernel instances
#define DFFX_ANGULAR_SOFTMAX_KERNELS
namespace dffx {
namespace {
namespace base_isa {
#include "angular_softmax.cpp"  // NOLINT(bugprone-suspicious-include): the kernel section below
}  // namespace base_isa
}  // namespace
}  // namespace dffx
#if DFFX_AVX2_DISPATCH
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace dffx {
namespace {
namespace avx2_isa {
#include "angular_softmax.cpp"  // NOLINT(bugprone-suspicious-include)
}  // namespace avx2_isa
}  // namespace
}  // namespace dffx
#pragma GCC pop_options
#endif
#undef DFFX_ANGULAR_SOFTMAX_KERNELS

namespace dffx {
namespace {

bool use_avx2() {
#if DFFX_AVX2_DISPATCH
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

#if DFFX_AVX2_DISPATCH
#define DFFX_DISPATCH(call) (use_avx2() ? avx2_isa::call : base_isa::call)
#else
#define DFFX_DISPATCH(call) (base_isa::call)
#endif

}  // namespace

void angular_softmax_forward(const float* features, const int32_t* labels, const float* class_vectors,
                             const AngularSoftmaxShape& s, float scale, float* loss, int64_t* correct,
                             float* log_sum_exp, int num_threads) {
  validate(features, labels, class_vectors, s, scale, "angular_softmax_forward");
  detail::require(loss && correct, "angular_softmax_forward: null output pointer");
  const Problem P(features, labels, class_vectors, s, scale, true, false);
  // One chunk of pixels per thread; partial sums are reduced in chunk order.
  const int64_t chunks = detail::resolve_threads(num_threads, (P.N + kRows - 1) / kRows);
  const int64_t per_chunk = round_up((P.N + chunks - 1) / chunks, kRows);
  std::vector<ForwardPartial> partial(static_cast<size_t>(chunks * P.K));
  detail::parallel_for(chunks, static_cast<int>(chunks), [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c)
      DFFX_DISPATCH(forward_range(P, std::min(P.N, c * per_chunk), std::min(P.N, (c + 1) * per_chunk),
                                  log_sum_exp, partial.data() + c * P.K));
  });
  for (int64_t k = 0; k < P.K; ++k) {
    double sum = 0.0;
    int64_t hits = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      sum += partial[c * P.K + k].loss;
      hits += partial[c * P.K + k].hits;
    }
    loss[k] = static_cast<float>(sum / static_cast<double>(P.N));
    correct[k] = hits;
  }
}

void angular_softmax_backward(const float* features, const int32_t* labels, const float* class_vectors,
                              const float* log_sum_exp, const float* grad_loss, const AngularSoftmaxShape& s,
                              float scale, float* grad_features, float* grad_class_vectors, int num_threads) {
  validate(features, labels, class_vectors, s, scale, "angular_softmax_backward");
  detail::require(log_sum_exp && grad_loss, "angular_softmax_backward: null log_sum_exp or grad_loss pointer");
  if (!grad_features && !grad_class_vectors) return;
  const Problem P(features, labels, class_vectors, s, scale, grad_features != nullptr, true);
  std::vector<float> coef(static_cast<size_t>(P.K));  // g_k s / N
  for (int64_t k = 0; k < P.K; ++k)
    coef[k] = static_cast<float>(static_cast<double>(grad_loss[k]) * scale / static_cast<double>(P.N));

  if (grad_features) {
    const int64_t tiles = (P.N + kRows - 1) / kRows;
    detail::parallel_for(tiles, num_threads, [&](int64_t t_begin, int64_t t_end) {
      DFFX_DISPATCH(grad_features_range(P, log_sum_exp, coef.data(), t_begin * kRows,
                                        std::min(P.N, t_end * kRows), grad_features));
    });
  }
  if (grad_class_vectors) {
    const int64_t blocks = P.Cp / kClassBlock;
    detail::parallel_for(P.K * blocks, num_threads, [&](int64_t u_begin, int64_t u_end) {
      for (int64_t u = u_begin; u < u_end; ++u)
        DFFX_DISPATCH(grad_classes_unit(P, log_sum_exp, coef.data(), u / blocks, (u % blocks) * kClassBlock,
                                        grad_class_vectors));
    });
  }
}

}  // namespace dffx

#undef DFFX_DISPATCH

#else  // DFFX_ANGULAR_SOFTMAX_KERNELS ---------------------------------------------------------------
// Kernel section: included twice above, inside namespaces dffx::(anonymous)::base_isa and ::avx2_isa.
// It may only use what the top of the file already declared (no #include here).

using dffx::ForwardPartial;
using dffx::kClassBlock;
using dffx::kCols;
using dffx::kPixelBatch;
using dffx::kPixelSpan;
using dffx::kRows;
using dffx::Problem;

#define DFFX_INLINE inline __attribute__((always_inline))

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

DFFX_INLINE v8f splat(float x) { return v8f{x, x, x, x, x, x, x, x}; }
DFFX_INLINE v8f loadu(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
DFFX_INLINE void storeu(float* p, const v8f& v) { std::memcpy(p, &v, sizeof(v)); }
DFFX_INLINE v8f select(const v8i& mask, const v8f& a, const v8f& b) { return (v8f)((mask & (v8i)a) | (~mask & (v8i)b)); }

// exp(x) to ~1 ulp (Cephes expf polynomial); exactly 0 for x < -87 (and -inf), NaN stays NaN.
DFFX_INLINE v8f exp_v8(const v8f& x_in) {
  const v8f lo = splat(-87.0f), hi = splat(88.0f), magic = splat(12582912.0f);  // 1.5 * 2^23
  const v8i under = x_in < lo;
  v8f x = select(x_in > hi, hi, x_in);
  x = select(under, lo, x);
  const v8f t = x * splat(1.44269504088896341f) + magic;  // round(x / ln 2) in the low mantissa bits
  const v8f n = t - magic;
  const v8i ni = (v8i)t - (v8i)magic;
  v8f r = x - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  v8f p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  const v8f y = (p * r * r + r) + splat(1.0f);
  const v8f two_n = (v8f)((ni + 127) << 23);
  return (v8f)((v8i)(y * two_n) & ~under);
}

DFFX_INLINE float hmax(const v8f& v) {
  float m = v[0];
  for (int l = 1; l < 8; ++l) m = v[l] > m ? v[l] : m;
  return m;
}
DFFX_INLINE float hsum(const v8f& v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// out[i * ldo + c] (+)= sum_l A[i * lda + l] * B[l * ldb + c]   for i < 4, c < 16.
template <bool kAccumulate>
DFFX_INLINE void micro_kernel(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t L, float* out,
                              int64_t ldo) {
  v8f c00, c01, c10, c11, c20, c21, c30, c31;
  if (kAccumulate) {
    c00 = loadu(out), c01 = loadu(out + 8);
    c10 = loadu(out + ldo), c11 = loadu(out + ldo + 8);
    c20 = loadu(out + 2 * ldo), c21 = loadu(out + 2 * ldo + 8);
    c30 = loadu(out + 3 * ldo), c31 = loadu(out + 3 * ldo + 8);
  } else {
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = splat(0.0f);
  }
  const float *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda;
  for (int64_t l = 0; l < L; ++l) {
    const v8f b0 = loadu(B + l * ldb), b1 = loadu(B + l * ldb + 8);
    const v8f x0 = splat(a0[l]), x1 = splat(a1[l]), x2 = splat(a2[l]), x3 = splat(a3[l]);
    c00 += x0 * b0, c01 += x0 * b1;
    c10 += x1 * b0, c11 += x1 * b1;
    c20 += x2 * b0, c21 += x2 * b1;
    c30 += x3 * b0, c31 += x3 * b1;
  }
  storeu(out, c00), storeu(out + 8, c01);
  storeu(out + ldo, c10), storeu(out + ldo + 8, c11);
  storeu(out + 2 * ldo, c20), storeu(out + 2 * ldo + 8, c21);
  storeu(out + 3 * ldo, c30), storeu(out + 3 * ldo + 8, c31);
}

// Z (kRows x Cp) = tile ft (kRows x Dp) times h_k^T.
DFFX_INLINE void logits(const Problem& P, const float* ft, int64_t k, float* Z) {
  const float* hk = P.hT.data() + k * P.Dp * P.Cp;
  for (int64_t jb = 0; jb < P.Cp; jb += kCols) micro_kernel<false>(ft, P.Dp, hk + jb, P.Cp, P.Dp, Z + jb, P.Cp);
}

// Forward over pixels [begin, end): per-pixel lse into lse_out[k * N + p] (if not null); loss sums
// and hits added to partial[k].
inline void forward_range(const Problem& P, int64_t begin, int64_t end, float* lse_out, ForwardPartial* partial) {
  std::vector<float> ft(static_cast<size_t>(kRows * P.Dp)), Z(static_cast<size_t>(kRows * P.Cp));
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < P.K; ++k) {
    double sum = 0.0;
    int64_t hits = 0;
    for (int64_t p0 = begin; p0 < end; p0 += kRows) {
      const int count = static_cast<int>(std::min<int64_t>(kRows, end - p0));
      P.load_tile(p0, count, P.scale, ft.data());
      logits(P, ft.data(), k, Z.data());
      for (int i = 0; i < count; ++i) {
        float* z = Z.data() + i * P.Cp;
        std::fill(z + P.C, z + P.Cp, neg_inf);  // padding classes
        v8f m8 = loadu(z);
        for (int64_t j = 8; j < P.Cp; j += 8) {
          const v8f v = loadu(z + j);
          m8 = select(v > m8, v, m8);
        }
        const float m = hmax(m8);
        const v8f mv = splat(m);
        v8f s8 = splat(0.0f);
        for (int64_t j = 0; j < P.Cp; j += 8) s8 += exp_v8(loadu(z + j) - mv);
        const float lse = m + std::log(hsum(s8));
        const int32_t label = P.label[(p0 + i) * P.K + k];
        sum += static_cast<double>(lse) - static_cast<double>(z[label]);
        if (z[label] == m) {  // correct when the label is the first arg max
          bool first = true;
          for (int32_t j = 0; j < label && first; ++j) first = z[j] != m;
          hits += first;
        }
        if (lse_out) lse_out[k * P.N + p0 + i] = lse;
      }
    }
    partial[k].loss += sum;
    partial[k].hits += hits;
  }
}

// grad_f for pixels [begin, end): G_p = sum_k sum_j coef_k (exp(z_pkj - lse_pk) - [j == label]) h_kj.
// Pixels go in spans of kPixelSpan whose gradients stay in cache while every k is visited.
inline void grad_features_range(const Problem& P, const float* lse, const float* coef, int64_t begin, int64_t end,
                                float* grad_f) {
  std::vector<float> ft(static_cast<size_t>(kRows * P.Dp)), Z(static_cast<size_t>(kRows * P.Cp)),
      G(static_cast<size_t>(kPixelSpan * P.Dp));
  for (int64_t s0 = begin; s0 < end; s0 += kPixelSpan) {
    const int64_t s1 = std::min(end, s0 + kPixelSpan);
    std::fill(G.begin(), G.end(), 0.0f);
    for (int64_t k = 0; k < P.K; ++k) {
      const v8f g = splat(coef[k]);
      const float* hk = P.hP.data() + k * P.Cp * P.Dp;
      for (int64_t p0 = s0; p0 < s1; p0 += kRows) {
        const int count = static_cast<int>(std::min<int64_t>(kRows, s1 - p0));
        P.load_tile(p0, count, P.scale, ft.data());
        logits(P, ft.data(), k, Z.data());
        for (int i = 0; i < kRows; ++i) {  // Z -> W = coef (exp(Z - lse) - onehot), in place
          float* w = Z.data() + i * P.Cp;
          if (i >= count) {
            std::fill(w, w + P.Cp, 0.0f);
            continue;
          }
          const v8f l = splat(lse[k * P.N + p0 + i]);
          for (int64_t j = 0; j < P.Cp; j += 8) storeu(w + j, g * exp_v8(loadu(w + j) - l));
          std::fill(w + P.C, w + P.Cp, 0.0f);
          w[P.label[(p0 + i) * P.K + k]] -= coef[k];
        }
        float* Gt = G.data() + (p0 - s0) * P.Dp;  // kRows rows, in G: kPixelSpan % kRows == 0
        for (int64_t db = 0; db < P.Dp; db += kCols)
          micro_kernel<true>(Z.data(), P.Cp, hk + db, P.Dp, P.Cp, Gt + db, P.Dp);
      }
    }
    for (int64_t p = s0; p < s1; ++p)
      std::copy(G.begin() + (p - s0) * P.Dp, G.begin() + (p - s0) * P.Dp + P.D, grad_f + p * P.D);
  }
}

// grad_h rows j0 .. j0 + kClassBlock of segmentation k: sum over all pixels of W_pkj f_p.
inline void grad_classes_unit(const Problem& P, const float* lse, const float* coef, int64_t k, int64_t j0,
                              float* grad_h) {
  const int64_t Dp = P.Dp, B = kPixelBatch, CB = kClassBlock;
  std::vector<float> Fb(static_cast<size_t>(B * Dp)), FT(static_cast<size_t>(Dp * B)),
      WT(static_cast<size_t>(CB * B)), G(static_cast<size_t>(CB * Dp), 0.0f), L(static_cast<size_t>(B));
  const float* hk = P.hP.data() + (k * P.Cp + j0) * Dp;  // rows j0 .. j0 + CB
  const v8f g = splat(coef[k]);
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t p0 = 0; p0 < P.N; p0 += B) {
    const int64_t nb = std::min(B, P.N - p0);
    std::fill(Fb.begin(), Fb.end(), 0.0f);
    std::fill(FT.begin(), FT.end(), 0.0f);
    for (int64_t i = 0; i < nb; ++i)
      for (int64_t d = 0; d < P.D; ++d) {
        const float v = P.f[(p0 + i) * P.D + d];
        Fb[i * Dp + d] = v;
        FT[d * B + i] = P.scale * v;
      }
    for (int64_t i = 0; i < B; ++i) L[i] = i < nb ? lse[k * P.N + p0 + i] : inf;  // exp(z - inf) = 0
    // Z^T (CB x B) = h_block (s F_batch)^T, then W^T in place.
    for (int64_t jt = 0; jt < CB; jt += kRows)
      for (int64_t pb = 0; pb < B; pb += kCols)
        micro_kernel<false>(hk + jt * Dp, Dp, FT.data() + pb, B, Dp, WT.data() + jt * B + pb, B);
    for (int64_t jj = 0; jj < CB; ++jj) {
      float* w = WT.data() + jj * B;
      if (j0 + jj >= P.C) {
        std::fill(w, w + B, 0.0f);
        continue;
      }
      for (int64_t i = 0; i < B; i += 8) storeu(w + i, g * exp_v8(loadu(w + i) - loadu(L.data() + i)));
    }
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t jj = P.label[(p0 + i) * P.K + k] - j0;
      if (jj >= 0 && jj < CB) WT[jj * B + i] -= coef[k];
    }
    // G (CB x Dp) += W^T F_batch.
    for (int64_t jt = 0; jt < CB; jt += kRows)
      for (int64_t db = 0; db < Dp; db += kCols)
        micro_kernel<true>(WT.data() + jt * B, B, Fb.data() + db, Dp, B, G.data() + jt * Dp + db, Dp);
  }
  for (int64_t jj = 0; jj < CB && j0 + jj < P.C; ++jj)
    std::copy(G.begin() + jj * Dp, G.begin() + jj * Dp + P.D, grad_h + (k * P.C + j0 + jj) * P.D);
}

#undef DFFX_INLINE
#endif  // DFFX_ANGULAR_SOFTMAX_KERNELS
