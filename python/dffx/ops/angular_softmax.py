"""The angular softmax of the DFF loss (paper Sec. III-B) as a native op with its reference twin.

For K segmentations of the face into C patches, segmentation k has one unit class vector h_kj
in R^D per patch j, and its loss over N labelled pixels with unit descriptors f_p is

    l_k = 1/N sum_p -log( exp(s h_{k,tau_k(p)} . f_p) / sum_{j=1}^{C} exp(s h_kj . f_p) )

(angular softmax with m = 1: the logits are cosines; ``scale`` s > 0 an optional temperature).

* :func:`angular_softmax_nll_reference`: readable PyTorch, processes pixels and segmentations
  in chunks (bounded memory, gradient checkpointing per chunk), differentiable by autograd,
  float32 or float64. Tests compare the native kernels against it.
* :func:`angular_softmax_nll`: the torch custom op ``torch.ops.dffx.angular_softmax_nll``
  with autograd. CPU tensors run the multi-threaded C++ kernel, CUDA tensors the fused CUDA
  kernel (csrc/cuda/angular_softmax.cu). Neither materialises the (N, K, C) logits; the
  backward pass recomputes the softmax from the per-pixel log-sum-exp saved by the forward.

The loss layer that trains the network on it is :class:`dffx.nn.loss.AngularSoftmaxLoss`.
Importing this module imports torch (the op is registered with ``torch.library``).
"""


from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from .._native import _C
from ._dispatch import launch_cuda, require_cuda_kernels

__all__ = ["angular_softmax_nll", "angular_softmax_nll_reference", "DEFAULT_REFERENCE_CHUNK"]

# Logits held at once by the reference: 2**24 float32 values = 64 MB per chunk.
DEFAULT_REFERENCE_CHUNK = 1 << 24

_FLOAT_DTYPES = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------------- validation
def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ValueError(f"scale must be a real number, got {scale!r}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    return scale


def _check_inputs(features, labels, class_vectors, scale, float_dtypes) -> tuple[int, int, int, int, float]:
    """Validate the loss inputs; returns (N, K, C, D, scale). Raises ValueError."""
    for name, t in (("features", features), ("labels", labels), ("class_vectors", class_vectors)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {tuple(features.shape)}")
    if class_vectors.ndim != 3:
        raise ValueError(f"class_vectors must have shape (K, C, D), got {tuple(class_vectors.shape)}")
    N, D = features.shape
    K, C, Dh = class_vectors.shape
    if N == 0:
        raise ValueError("features is empty (N = 0 pixels): the loss of no pixel is undefined")
    if D == 0 or K == 0 or C == 0:
        raise ValueError(f"D, K and C must be positive, got D={D}, K={K}, C={C}")
    if Dh != D:
        raise ValueError(f"class_vectors must have shape (K, C, {D}) to match features (N, {D}), "
                         f"got {tuple(class_vectors.shape)}")
    if tuple(labels.shape) != (N, K):
        raise ValueError(f"labels must have shape (N, K) = ({N}, {K}), got {tuple(labels.shape)}")
    if features.dtype not in float_dtypes:
        raise ValueError(f"features must have dtype {' or '.join(map(str, float_dtypes))}, got {features.dtype}")
    if class_vectors.dtype != features.dtype:
        raise ValueError(f"class_vectors must have the dtype of features ({features.dtype}), got {class_vectors.dtype}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must hold integers (int32 or int64), got {labels.dtype}")
    if not (features.device == labels.device == class_vectors.device):
        raise ValueError(f"features, labels and class_vectors must be on one device, got {features.device}, "
                         f"{labels.device} and {class_vectors.device}")
    lo, hi = (int(v) for v in torch.aminmax(labels.detach()))
    if lo < 0 or hi >= C:
        raise ValueError(f"labels has value {lo if lo < 0 else hi} outside [0, C) = [0, {C})")
    return N, K, C, D, _check_scale(scale)


def _require_cuda_kernels() -> None:
    require_cuda_kernels("pass CPU tensors to angular_softmax_nll (or use angular_softmax_nll_reference)")


# ----------------------------------------------------------------------------------- reference
def _chunk_nll(features: torch.Tensor, labels: torch.Tensor, class_vectors: torch.Tensor, scale: float):
    """Summed NLL (kg,) and hits (kg,) of a chunk: features (P, D), labels (P, kg), class_vectors (kg, C, D)."""
    z = scale * torch.einsum("pd,kcd->kpc", features, class_vectors)  # (kg, P, C) logits
    target = labels.t().unsqueeze(2)                                    # (kg, P, 1)
    nll = torch.logsumexp(z, dim=2) - z.gather(2, target).squeeze(2)    # logsumexp subtracts the max
    hits = (z.argmax(dim=2) == target.squeeze(2)).sum(dim=1)
    return nll.sum(dim=1), hits


def angular_softmax_nll_reference(features: torch.Tensor, labels: torch.Tensor, class_vectors: torch.Tensor,
                                  scale: float = 1.0, chunk: int = DEFAULT_REFERENCE_CHUNK
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference DFF loss in plain PyTorch (paper Sec. III-B, l_k), chunked to bound memory.

    Computes, for every segmentation k, ``l_k = mean_p [logsumexp_j z_pkj - z_{p,k,labels[p,k]}]``
    with logits ``z_pkj = scale * class_vectors[k, j] . features[p]``, and the number of pixels
    whose (first) arg max_j z_pkj is the label. Pixels and segmentations are processed in chunks
    of at most ``chunk`` logits (default 2**24 = 64 MB in float32); when autograd records, each
    chunk is wrapped in :func:`torch.utils.checkpoint.checkpoint`, so the backward pass also keeps
    only one chunk's logits alive (it recomputes them). Differentiable with respect to
    ``features`` and ``class_vectors`` (twice, in float64 for gradcheck).

    Args:
        features: (N, D) float32 or float64 unit feature vectors f_p, N >= 1.
        labels: (N, K) int32/int64 patch index of pixel p in segmentation k, in [0, C).
        class_vectors: (K, C, D) unit class vectors h_kj, dtype of ``features``.
        scale: logit scale s > 0 (s = 1 is the paper's formula).
        chunk: maximum number of logits per chunk (>= 1); at least one pixel row of one
            segmentation (C logits) is always processed at once.

    Returns:
        ``(loss, correct)``: loss (K,) of the features' dtype, correct (K,) int64 (no grad).

    Raises:
        ValueError: wrong shapes or dtypes, N == 0, a label outside [0, C), tensors on
            different devices, a scale that is not finite and > 0, or chunk < 1.
    """
    N, K, C, D, scale = _check_inputs(features, labels, class_vectors, scale, _FLOAT_DTYPES)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    rows = int(min(N, max(1, chunk // C)))               # pixels per chunk
    group = int(min(K, max(1, chunk // (rows * C))))     # segmentations per chunk
    labels = labels.long()
    record = torch.is_grad_enabled() and (features.requires_grad or class_vectors.requires_grad)
    losses = []
    correct = torch.zeros(K, dtype=torch.int64, device=features.device)
    for k0 in range(0, K, group):
        h = class_vectors[k0:k0 + group]
        total = None
        for p0 in range(0, N, rows):
            args = (features[p0:p0 + rows], labels[p0:p0 + rows, k0:k0 + group], h, scale)
            nll, hits = checkpoint(_chunk_nll, *args, use_reentrant=False) if record else _chunk_nll(*args)
            total = nll if total is None else total + nll
            correct[k0:k0 + group] += hits
        losses.append(total / N)
    return torch.cat(losses), correct


# ----------------------------------------------------------------------------------- custom op
@torch.library.custom_op("dffx::angular_softmax_nll", mutates_args=())
def _angular_softmax_nll_op(features: torch.Tensor, labels: torch.Tensor, class_vectors: torch.Tensor,
                            scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Native forward: float32 features (N, D), int32 labels (N, K), float32 class vectors (K, C, D)
    -> loss (K,) float32, correct (K,) int64, log_sum_exp (K, N) float32 (saved for backward;
    not differentiable)."""
    N, D = features.shape
    K, C, _ = class_vectors.shape
    if features.is_cuda:
        _require_cuda_kernels()
        f, lab, h = features.contiguous(), labels.contiguous(), class_vectors.contiguous()
        loss = torch.empty(K, dtype=torch.float32, device=f.device)
        correct = torch.empty(K, dtype=torch.int64, device=f.device)
        lse = torch.empty((K, N), dtype=torch.float32, device=f.device)
        launch_cuda(_C.angular_softmax_forward_cuda, f.device, f, lab, h, N, K, C, D, float(scale), loss, correct, lse)
        return loss, correct, lse
    loss, correct, lse = _C.angular_softmax_forward(features.detach().numpy(), labels.detach().numpy(),
                                                    class_vectors.detach().numpy(), float(scale))
    return torch.from_numpy(loss), torch.from_numpy(correct), torch.from_numpy(lse)


@_angular_softmax_nll_op.register_fake
def _(features, labels, class_vectors, scale):
    N = features.shape[0]
    K = class_vectors.shape[0]
    return (features.new_empty(K), features.new_empty(K, dtype=torch.int64), features.new_empty((K, N)))


@torch.library.custom_op("dffx::angular_softmax_nll_backward", mutates_args=())
def _angular_softmax_nll_backward_op(features: torch.Tensor, labels: torch.Tensor, class_vectors: torch.Tensor,
                                     log_sum_exp: torch.Tensor, grad_loss: torch.Tensor, scale: float,
                                     need_features: bool, need_class_vectors: bool
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Native backward: grad_features (N, D) and grad_class_vectors (K, C, D), float32; a gradient
    that is not needed comes back as an empty (0,) tensor."""
    N, D = features.shape
    K, C, _ = class_vectors.shape
    if features.is_cuda:
        _require_cuda_kernels()
        dev = features.device
        f, lab, h = features.contiguous(), labels.contiguous(), class_vectors.contiguous()
        lse, g = log_sum_exp.contiguous(), grad_loss.to(torch.float32).contiguous()
        gf = torch.empty((N, D) if need_features else (0,), dtype=torch.float32, device=dev)
        gh = torch.empty((K, C, D) if need_class_vectors else (0,), dtype=torch.float32, device=dev)
        launch_cuda(_C.angular_softmax_backward_cuda, dev, f, lab, h, lse, g, N, K, C, D, float(scale),
                    gf if need_features else 0, gh if need_class_vectors else 0)
        return gf, gh
    gf, gh = _C.angular_softmax_backward(features.detach().numpy(), labels.detach().numpy(),
                                         class_vectors.detach().numpy(), log_sum_exp.detach().numpy(),
                                         grad_loss.detach().to(torch.float32).numpy(), float(scale),
                                         bool(need_features), bool(need_class_vectors))
    empty = torch.empty(0, dtype=torch.float32)
    return (torch.from_numpy(gf) if gf is not None else empty, torch.from_numpy(gh) if gh is not None else empty)


@_angular_softmax_nll_backward_op.register_fake
def _(features, labels, class_vectors, log_sum_exp, grad_loss, scale, need_features, need_class_vectors):
    N, D = features.shape
    K, C, _ = class_vectors.shape
    return (features.new_empty((N, D) if need_features else (0,)),
            features.new_empty((K, C, D) if need_class_vectors else (0,)))


def _setup_context(ctx, inputs, output):
    features, labels, class_vectors, scale = inputs
    _, correct, lse = output
    ctx.mark_non_differentiable(correct, lse)
    ctx.save_for_backward(features, labels, class_vectors, lse)
    ctx.scale = scale


def _backward(ctx, grad_loss, grad_correct, grad_lse):
    features, labels, class_vectors, lse = ctx.saved_tensors
    need_f, need_h = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
    if grad_loss is None or not (need_f or need_h):
        return None, None, None, None
    gf, gh = torch.ops.dffx.angular_softmax_nll_backward(features, labels, class_vectors, lse,
                                                         grad_loss.contiguous(), ctx.scale, need_f, need_h)
    return (gf if need_f else None), None, (gh if need_h else None), None


_angular_softmax_nll_op.register_autograd(_backward, setup_context=_setup_context)


def angular_softmax_nll(features: torch.Tensor, labels: torch.Tensor, class_vectors: torch.Tensor,
                        scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """DFF loss per segmentation (paper Sec. III-B, l_k) with the fused native kernels.

    ``loss[k] = mean_p [logsumexp_j z_pkj - z_{p,k,labels[p,k]}]`` with logits
    ``z_pkj = scale * class_vectors[k, j] . features[p]`` (max-subtracted log-sum-exp, stable
    for large scales), and ``correct[k]`` = number of pixels whose first arg max_j z_pkj is
    their label (patch accuracy = correct / N). Same contract as
    :func:`angular_softmax_nll_reference`, but neither pass materialises the (N, K, C) logits.

    Differentiable with respect to ``features`` and ``class_vectors`` (first order; the backward
    is itself not differentiable). For an upstream gradient g (K,):
    ``dL/df_p = sum_k (g_k s / N) sum_j (softmax_pkj - [j == label_pk]) h_kj`` and
    ``dL/dh_kj = sum_p (g_k s / N) (softmax_pkj - [j == label_pk]) f_p``.
    CPU tensors run the multi-threaded C++ kernel (deterministic); CUDA tensors run the CUDA
    kernel on the current stream (the gradients may differ between runs at float-rounding level,
    because partial sums are combined with atomics). Registered as ``torch.ops.dffx.angular_softmax_nll``
    (returns a third output, the per-pixel log-sum-exp (K, N), used by the backward pass).

    Args:
        features: (N, D) float32 unit feature vectors f_p (the gathered face pixels), N >= 1.
            D <= 64 on CUDA.
        labels: (N, K) int32 (int64 is converted) patch index of pixel p in segmentation k, in
            [0, C); the caller computes ``labels[:, k] = lut[k][triangle_id]``.
        class_vectors: (K, C, D) float32 unit class vectors h_kj (normalise them in torch so that
            autograd sees the normalisation).
        scale: logit scale s > 0 (s = 1 is the paper's formula).

    Returns:
        ``(loss, correct)``: loss (K,) float32, correct (K,) int64 (not differentiable).

    Raises:
        ValueError: wrong shapes or dtypes (features and class_vectors must be float32), N == 0,
            a label outside [0, C), tensors on different devices, a scale that is not finite
            and > 0, or D > 64 for CUDA tensors.
        RuntimeError: CUDA tensors were given but dffx was built without CUDA kernels.
    """
    N, K, C, D, scale = _check_inputs(features, labels, class_vectors, scale, (torch.float32,))
    if features.is_cuda:
        _require_cuda_kernels()
        if D > 64:
            raise ValueError(f"the CUDA kernel supports feature dimensions D <= 64, got D = {D}")
    loss, correct, _ = torch.ops.dffx.angular_softmax_nll(features.contiguous(), labels.to(torch.int32).contiguous(),
                                                          class_vectors.contiguous(), scale)
    return loss, correct
