// DFF training loss (paper Sec. III-B): per-pixel angular softmax (m = 1) over K segmentations.
//
// Inputs (row-major float32 / int32, borrowed):
//   features       f (N, D)     unit DFF vectors of the N labelled pixels
//   labels         (N, K)       patch index of pixel p in segmentation k, 0 <= label < C
//   class_vectors  h (K, C, D)  unit class (patch) vectors, one set per segmentation
//   scale          s > 0        logit scale (s = 1 is the paper's formula)
//
// Logits z_pkj = s * h_kj . f_p. With the max-subtracted log-sum-exp
//   lse_pk = max_j z_pkj + log sum_j exp(z_pkj - max_j z_pkj),
// the loss of segmentation k is the paper's
//   l_k = (1/N) sum_p [ lse_pk - z_{p,k,label_pk} ]      (-log softmax of the true patch),
// and correct_k counts the pixels whose first arg max_j z_pkj equals label_pk.
// Backward, for an upstream gradient g (K,) of l and P_pkj = exp(z_pkj - lse_pk):
//   dL/df_p  = sum_k (g_k s / N) sum_j (P_pkj - [j == label_pk]) h_kj
//   dL/dh_kj = sum_p (g_k s / N)       (P_pkj - [j == label_pk]) f_p
// No backend materialises the (N, K, C) logits: each one computes a tile of them at a time,
// and the backward pass recomputes the softmax from the saved lse instead of storing it.
#pragma once
#include <cstdint>

namespace dffx {

/// Sizes of one angular-softmax loss call.
struct AngularSoftmaxShape {
  int64_t num_pixels = 0;         ///< N
  int64_t num_segmentations = 0;  ///< K
  int64_t num_classes = 0;        ///< C, patches per segmentation
  int64_t dim = 0;                ///< D, feature dimension
};

/// Forward pass on the CPU (multi-threaded over pixels).
///
/// Outputs: loss (K,) float32 (l_k above); correct (K,) int64; log_sum_exp (K, N) float32
/// lse_pk stored at [k * N + p] (needed by the backward pass; may be nullptr).
/// Accumulates the loss in double precision; the result does not depend on num_threads
/// beyond float rounding of that sum. num_threads <= 0 uses all hardware threads.
/// Throws std::invalid_argument for non-positive sizes, a scale that is not finite and > 0,
/// null pointers, or a label outside [0, C) (the message names the pixel and segmentation).
void angular_softmax_forward(const float* features, const int32_t* labels, const float* class_vectors,
                             const AngularSoftmaxShape& shape, float scale, float* loss, int64_t* correct,
                             float* log_sum_exp, int num_threads = 0);

/// Backward pass on the CPU: given grad_loss g (K,) and the forward pass's log_sum_exp
/// (K, N), writes grad_features (N, D) and grad_class_vectors (K, C, D) (either may be
/// nullptr to skip it). The softmax is recomputed tile by tile. Deterministic: the result
/// does not depend on num_threads. Throws like angular_softmax_forward.
void angular_softmax_backward(const float* features, const int32_t* labels, const float* class_vectors,
                              const float* log_sum_exp, const float* grad_loss, const AngularSoftmaxShape& shape,
                              float scale, float* grad_features, float* grad_class_vectors, int num_threads = 0);

namespace cuda {
/// CUDA versions of the above: every pointer is a device pointer, stream a cudaStream_t
/// (nullptr = default stream), calls are asynchronous on that stream. log_sum_exp is
/// required (not nullptr) in both calls. Supports D <= 64 (register-resident features);
/// any N, K <= 65535, C. Labels are not range-checked on the device (the caller must; a
/// label outside [0, C) cannot cause an out-of-bounds access, it only yields a wrong loss).
/// The loss is reduced deterministically; grad_features / grad_class_vectors may be
/// accumulated with float atomics over segmentation / pixel groups (run-to-run differences
/// at float rounding level). Throws std::invalid_argument for bad sizes or D > 64, and
/// std::runtime_error when built without CUDA or a CUDA call fails.
void angular_softmax_forward(const float* features, const int32_t* labels, const float* class_vectors,
                             const AngularSoftmaxShape& shape, float scale, float* loss, int64_t* correct,
                             float* log_sum_exp, void* stream = nullptr);
void angular_softmax_backward(const float* features, const int32_t* labels, const float* class_vectors,
                              const float* log_sum_exp, const float* grad_loss, const AngularSoftmaxShape& shape,
                              float scale, float* grad_features, float* grad_class_vectors, void* stream = nullptr);
}  // namespace cuda

}  // namespace dffx
