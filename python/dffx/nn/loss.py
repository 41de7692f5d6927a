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

The op and its reference twin live in :mod:`dffx.ops.angular_softmax` (re-exported here:
:func:`angular_softmax_nll`, :func:`angular_softmax_nll_reference`).
:class:`AngularSoftmaxLoss` is the loss layer of the training network. It owns the class
  vectors and the segmentation lookup table, gathers the face pixels of a batch of DFF maps,
  looks up their labels and calls :func:`angular_softmax_nll`.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ops.angular_softmax import (DEFAULT_REFERENCE_CHUNK, _check_scale, angular_softmax_nll,
                                   angular_softmax_nll_reference)

__all__ = ["AngularSoftmaxLoss", "SegmentationLoss", "angular_softmax_nll", "angular_softmax_nll_reference",
           "DEFAULT_REFERENCE_CHUNK"]


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
