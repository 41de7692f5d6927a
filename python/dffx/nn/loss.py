"""The DFF training loss (paper Sec. III-B): per-pixel angular softmax (m = 1) over K segmentations.

The DFF extractor is trained as a per-pixel classifier against K = 100 random segmentations of
the mean face into C = 500 patches (:mod:`dffx.segment`). Segmentation k has one unit class
vector h_kj in R^D (D = 32) per patch j, and its loss over the set P of labelled face pixels is

    l_k = 1/|P| sum_{p in P} -log( exp(s h_{k,tau_k(p)} . f_p) / sum_{j=1}^{C} exp(s h_kj . f_p) )

with f_p the unit DFF descriptor of pixel p and tau_k(p) its patch. The paper's formula is
s = 1 (angular softmax with m = 1: unit features and class vectors, so the logits are cosines);
``scale`` s > 0 is an optional temperature (with s = 1 the logits stay in [-1, 1] and the loss
cannot drop far below log C - 2, so a larger s such as 10-30 is the usual choice when training).
The network is trained on sum_k l_k.

Three implementations, same contract:

* :func:`angular_softmax_nll_reference`: readable PyTorch, processes pixels and segmentations
  in chunks (bounded memory, gradient checkpointing per chunk), differentiable by autograd,
  float32 or float64. Tests compare the native kernels against it.
* :func:`angular_softmax_nll`: the torch custom op ``torch.ops.dffx.angular_softmax_nll``
  with autograd. CPU tensors run the multi-threaded C++ kernel, CUDA tensors the fused CUDA
  kernel (csrc/cuda/angular_softmax.cu). Neither materialises the (N, K, C) logits; the
  backward pass recomputes the softmax from the per-pixel log-sum-exp saved by the forward.
* :class:`AngularSoftmaxLoss`: the loss layer of the training network. It owns the class
  vectors and the segmentation lookup table, gathers the face pixels of a batch of DFF maps,
  looks up their labels and calls :func:`angular_softmax_nll`.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .._native import _C
from ..ops._dispatch import launch_cuda, require_cuda_kernels

__all__ = ["AngularSoftmaxLoss", "SegmentationLoss", "angular_softmax_nll", "angular_softmax_nll_reference",
           "DEFAULT_REFERENCE_CHUNK"]

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


# ----------------------------------------------------------------------------------- loss layer
class SegmentationLoss(NamedTuple):
    """Output of :class:`AngularSoftmaxLoss`.

    total: scalar float32 tensor (differentiable), ``sum_k l_k`` over the segmentations used,
        multiplied by K / K_used when only a subset was used (so its scale matches the full
        sum of the paper whatever the subset size).
    per_segment: (K_used,) float32 tensor (differentiable), l_k of each segmentation used.
    accuracy: Python float, fraction of (pixel, segmentation) pairs classified correctly.
    segments: (K_used,) int64 tensor, the indices of the segmentations used (in order).
    pixels: number of pixels N that entered the loss.
    """

    total: torch.Tensor
    per_segment: torch.Tensor
    accuracy: float
    segments: torch.Tensor
    pixels: int


class AngularSoftmaxLoss(nn.Module):
    """The K classification loss layers of the DFF training network (paper Sec. III-B).

    Holds the class vectors ``h`` (parameter, (K, C, D) float32, random normal init, normalised
    to unit length in every forward pass) and the segmentation lookup table ``lut`` (buffer,
    (K, F) int32: ``lut[k, t]`` is the patch of mesh triangle t in segmentation k, e.g.
    ``dffx.segment.load_segmentations(path).lut``). The forward pass labels every face pixel
    of a batch through its triangle id and returns sum_k l_k (see :class:`SegmentationLoss`).

    Args:
        lut: (K, F) integer lookup table with values in [0, C), or a
            :class:`dffx.segment.SegmentationSet` (its ``lut`` and ``n_patches`` are used).
        n_patches: C, number of patches per segmentation; default: from the SegmentationSet,
            else ``lut.max() + 1``.
        dim: D, feature dimension (32 in the paper).
        scale: logit scale s > 0 (1 = the paper's formula; see the module docstring).
        generator: optional torch.Generator for the initial class vectors.
        use_reference: compute with :func:`angular_softmax_nll_reference` instead of the native
            kernels (for testing).

    Raises:
        ValueError: a lookup table that is not a non-empty 2-D integer array, labels outside
            [0, n_patches), dim < 1, or a bad scale.
    """

    def __init__(self, lut, n_patches: int | None = None, dim: int = 32, scale: float = 1.0,
                 generator: torch.Generator | None = None, use_reference: bool = False):
        super().__init__()
        if hasattr(lut, "lut") and hasattr(lut, "n_patches"):  # SegmentationSet
            n_patches = lut.n_patches if n_patches is None else n_patches
            lut = lut.lut
        table = lut.detach().cpu().numpy() if isinstance(lut, torch.Tensor) else np.asarray(lut)
        if table.ndim != 2 or table.size == 0 or not np.issubdtype(table.dtype, np.integer):
            raise ValueError(f"lut must be a non-empty (K, F) integer array, got shape {table.shape}, "
                             f"dtype {table.dtype}")
        C = int(table.max()) + 1 if n_patches is None else int(n_patches)
        if C < 1 or table.min() < 0 or table.max() >= C:
            raise ValueError(f"lut values must lie in [0, n_patches) = [0, {C}), got [{table.min()}, {table.max()}]")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.scale = _check_scale(scale)
        self.use_reference = bool(use_reference)
        self.num_segmentations, self.num_triangles = table.shape
        self.num_classes, self.dim = C, int(dim)
        self.h = nn.Parameter(torch.randn(self.num_segmentations, C, self.dim, generator=generator))
        self.register_buffer("lut", torch.from_numpy(np.ascontiguousarray(table, dtype=np.int32)))

    @classmethod
    def from_file(cls, path: str | os.PathLike, expected_triangles=None, **kwargs) -> "AngularSoftmaxLoss":
        """Build the layer from a segmentation set written by ``dffx segment`` / ``save_segmentations``.

        ``expected_triangles`` (triangle count or (F, 3) array) is checked against the file;
        other keyword arguments go to the constructor. Raises ValueError for a bad file.
        """
        from ..segment import load_segmentations

        return cls(load_segmentations(path, expected_triangles), **kwargs)

    def extra_repr(self) -> str:
        return (f"segmentations={self.num_segmentations}, patches={self.num_classes}, dim={self.dim}, "
                f"triangles={self.num_triangles}, scale={self.scale}")

    def class_vectors(self, segments: torch.Tensor | None = None) -> torch.Tensor:
        """Unit class vectors (K_used, C, D) float32 of the given segmentations (all by default)."""
        h = self.h if segments is None else self.h[segments]
        return F.normalize(h.float(), dim=-1)

    def _segments(self, segments, generator, device) -> torch.Tensor:
        K = self.num_segmentations
        if segments is None:
            return torch.arange(K, device=device)
        if isinstance(segments, (int, np.integer)) and not isinstance(segments, bool):
            if not 1 <= segments <= K:
                raise ValueError(f"segments must be in [1, {K}] when given as a count, got {segments}")
            gen_device = generator.device if generator is not None else device
            return torch.randperm(K, generator=generator, device=gen_device)[:int(segments)].to(device)
        idx = torch.as_tensor(segments, device=device)
        if idx.ndim != 1 or idx.numel() == 0 or idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"segments must be a count or a non-empty 1-D sequence of indices, got {segments!r}")
        if int(idx.min()) < 0 or int(idx.max()) >= K:
            raise ValueError(f"segment indices must lie in [0, {K}), got {idx.tolist()}")
        return idx.long()

    def forward(self, features: torch.Tensor, triangle_id, pixels_per_image: int | None = None,
                segments=None, generator: torch.Generator | None = None) -> SegmentationLoss:
        """Loss of a batch of DFF maps (paper Sec. III-B: sum_k l_k).

        Args:
            features: (B, D, H, W) float unit DFF maps (the network's output; converted to float32).
            triangle_id: (B, H, W) integer triangle index per pixel (``dffx.rasterize``'s
                ``triangle_id``), -1 where no face surface is visible (those pixels are ignored);
                a NumPy array or a tensor, moved to the features' device.
            pixels_per_image: when set, a random subset of at most that many face pixels per
                image enters the loss (all face pixels of an image with fewer); default all.
            segments: None (all K segmentations), an int (that many distinct segmentations
                drawn at random for this step), or a 1-D sequence of segmentation indices.
                Only the selected l_k are computed; ``total`` is rescaled by K / K_used.
            generator: torch.Generator for the random subsets (its device is used to draw them).

        Returns:
            :class:`SegmentationLoss` (total, per_segment, accuracy, segments, pixels).

        Raises:
            ValueError: wrong shapes/dtypes, D != self.dim, features on another device than the
                layer, triangle ids outside [-1, F), a batch without any face pixel,
                pixels_per_image < 1, or bad ``segments``.
        """
        if not isinstance(features, torch.Tensor) or features.ndim != 4 or not features.is_floating_point():
            raise ValueError("features must be a float tensor of shape (B, D, H, W), got "
                             f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)}")
        B, D, H, W = features.shape
        if D != self.dim:
            raise ValueError(f"features have D = {D} channels, the loss layer expects {self.dim}")
        device = features.device
        if self.h.device != device:
            raise ValueError(f"features are on {device} but the loss layer is on {self.h.device}; "
                             "move the layer with .to(device)")
        tid = torch.as_tensor(triangle_id).to(device)
        if tuple(tid.shape) != (B, H, W):
            raise ValueError(f"triangle_id must have shape (B, H, W) = {(B, H, W)}, got {tuple(tid.shape)}")
        if tid.is_floating_point() or tid.dtype == torch.bool or tid.is_complex():
            raise ValueError(f"triangle_id must hold integers, got {tid.dtype}")
        tid = tid.long().reshape(B, H * W)
        if tid.numel() and (int(tid.min()) < -1 or int(tid.max()) >= self.num_triangles):
            raise ValueError(f"triangle_id has values in [{int(tid.min())}, {int(tid.max())}], "
                             f"outside [-1, {self.num_triangles})")
        face = tid >= 0
        counts = face.sum(dim=1)
        if int(counts.sum()) == 0:
            raise ValueError("the batch has no face pixel (triangle_id is -1 everywhere): the loss is undefined")

        if pixels_per_image is None:
            b_idx, p_idx = face.nonzero(as_tuple=True)
        else:
            if isinstance(pixels_per_image, bool) or not isinstance(pixels_per_image, (int, np.integer)) \
                    or pixels_per_image < 1:
                raise ValueError(f"pixels_per_image must be a positive integer, got {pixels_per_image!r}")
            take = min(int(pixels_per_image), H * W)
            gen_device = generator.device if generator is not None else device
            keys = torch.rand((B, H * W), generator=generator, device=gen_device).to(device)
            keys = keys.masked_fill(~face, 2.0)  # background sorts last
            order = torch.topk(keys, take, dim=1, largest=False).indices          # (B, take)
            keep = torch.arange(take, device=device)[None, :] < counts[:, None]   # face pixels only
            b_idx = torch.arange(B, device=device)[:, None].expand(B, take)[keep]
            p_idx = order[keep]

        seg = self._segments(segments, generator, device)
        f = features.float().flatten(2)[b_idx, :, p_idx]          # (N, D)
        tri = tid[b_idx, p_idx]                                    # (N,)
        labels = self.lut[seg][:, tri].t().contiguous()            # (N, K_used) int32
        h = self.class_vectors(seg)
        fn = angular_softmax_nll_reference if self.use_reference else angular_softmax_nll
        per_segment, correct = fn(f.contiguous(), labels, h, self.scale)
        per_segment = per_segment.float()
        total = per_segment.sum() * (self.num_segmentations / seg.numel())
        N = int(f.shape[0])
        accuracy = float(correct.sum()) / (N * seg.numel())
        return SegmentationLoss(total, per_segment, accuracy, seg, N)
