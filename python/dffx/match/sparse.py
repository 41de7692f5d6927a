"""Sparse feature matching of two face images (paper Sec. IV-A, Fig. 8): DFF against SIFT.

Both methods start from the same source points: SIFT keypoints (OpenCV ``cv2.SIFT_create``,
default settings) detected in the source face region.

* **DFF** (paper): each source point's DFF descriptor (bilinearly interpolated at the keypoint
  and renormalised) is compared with the descriptors of *all* target face pixels; the target
  pixel with the smallest angle is the match, kept when the angle is below 30 degrees.
* **SIFT** (paper, after Lowe [13]): SIFT keypoints are detected in the target face region too;
  each source descriptor is matched to the target descriptor with the smallest angle (angles
  between L2-normalised descriptors, as in Lowe's reference code) and kept when
  ``angle_1 / angle_2 < 1 / 1.3`` (the nearest is 1.3x closer than the second nearest).

Coordinates, masks and angles follow :mod:`dffx.match.dense` (x right, y down, pixel centres
at integers, bool (H, W) face masks, degrees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dense import (DEFAULT_CHUNK_ROWS, DEFAULT_MAX_ELEMENTS, Matches, _descriptors_at_pixels, angle_from_cos,
                    as_feature_map, as_mask, mask_pixels, nearest_by_angle)

SPARSE_MAX_ANGLE_DEG = 30.0     # paper Sec. IV-A: DFF sparse matches kept below 30 degrees
SIFT_RATIO = 1.0 / 1.3          # paper Sec. IV-A: SIFT ratio-test threshold


@dataclass
class Keypoints:
    """SIFT keypoints of one image.

    Attributes:
        xy: float32 (K, 2) positions ``(x, y)`` in pixels (OpenCV keypoint ``pt``).
        descriptors: float32 (K, 128) SIFT descriptors as OpenCV computes them (not normalised).
        response: float32 (K,) detector response; size: float32 (K,) keypoint diameter, pixels.
    """

    xy: np.ndarray
    descriptors: np.ndarray
    response: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return len(self.xy)

    def select(self, keep) -> "Keypoints":
        """The keypoints at the bool mask or index array ``keep``."""
        return Keypoints(self.xy[keep], self.descriptors[keep], self.response[keep], self.size[keep])


def _grey(image) -> np.ndarray:
    import cv2

    img = np.asarray(image)
    if img.size == 0:
        raise ValueError("empty image")
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3) BGR, got {img.dtype} {img.shape}")
    if img.ndim == 3:
        img = img[..., 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(img)


def sift_keypoints(image, mask=None, *, unique: bool = True, max_points: int | None = None) -> Keypoints:
    """Detect SIFT keypoints and descriptors (``cv2.SIFT_create()`` defaults) in a face region.

    Args:
        image: uint8 (H, W, 3) BGR or (H, W) grey image.
        mask: bool (H, W) face mask; keypoints are only detected where it is True (None: anywhere).
        unique: keep one keypoint per location (SIFT returns one keypoint per dominant
            orientation; the strongest is kept), so each source point is counted once.
        max_points: keep at most this many, strongest response first (None: all).

    Returns:
        :class:`Keypoints`, sorted by decreasing response (K may be 0).

    Raises:
        ValueError: bad image or a mask of another size.
    """
    import cv2

    grey = _grey(image)
    m = as_mask(mask, grey.shape, "mask")
    kps, desc = cv2.SIFT_create().detectAndCompute(grey, m.astype(np.uint8) * 255)
    if not kps:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), np.zeros(0, np.float32),
                         np.zeros(0, np.float32))
    xy = np.array([k.pt for k in kps], np.float32)
    out = Keypoints(xy, np.asarray(desc, np.float32), np.array([k.response for k in kps], np.float32),
                    np.array([k.size for k in kps], np.float32))
    out = out.select(np.argsort(-out.response, kind="stable"))
    if unique and len(out):
        _, first = np.unique(np.round(out.xy * 100).astype(np.int64), axis=0, return_index=True)
        out = out.select(np.sort(first))
    if max_points is not None:
        out = out.select(np.arange(min(max_points, len(out))))
    return out


def sample_descriptors(features, xy):
    """Descriptors of a (C, H, W) map at sub-pixel points, bilinear, renormalised to unit length.

    Args:
        features: (C, H, W) map (see :func:`dffx.match.dense.as_feature_map`).
        xy: (K, 2) float ``(x, y)`` pixels; points outside the map take the border value.

    Returns:
        torch float32 (K, C) on the map's device. At integer positions the result is exactly
        the (normalised) descriptor of that pixel.
    """
    import torch
    import torch.nn.functional as F

    f = as_feature_map(features)
    pts = torch.as_tensor(np.asarray(xy, np.float32).reshape(-1, 2), device=f.device)
    if len(pts) == 0:
        return torch.zeros((0, f.shape[0]), dtype=torch.float32, device=f.device)
    h, w = f.shape[1:]
    grid = torch.stack([2 * pts[:, 0] / max(w - 1, 1) - 1, 2 * pts[:, 1] / max(h - 1, 1) - 1], dim=1)
    out = F.grid_sample(f[None], grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                        align_corners=True)[0, :, 0].T
    # exact pixel values at integer points (grid_sample's arithmetic may differ in the last bit)
    ix, iy = torch.round(pts[:, 0]).long(), torch.round(pts[:, 1]).long()
    exact = (pts[:, 0] == ix) & (pts[:, 1] == iy) & (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    if bool(exact.any()):
        out[exact] = f[:, iy[exact], ix[exact]].T
    return F.normalize(out, dim=1, eps=1e-12)


def match_dff_points(src_features, dst_features, src_xy, dst_mask=None, *,
                     max_angle_deg: float | None = SPARSE_MAX_ANGLE_DEG, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     max_elements: int = DEFAULT_MAX_ELEMENTS) -> Matches:
    """Sparse DFF matching (paper Sec. IV-A): source points to the target face pixel of smallest
    descriptor angle, kept when the angle is below ``max_angle_deg``.

    Args:
        src_features, dst_features: (C, H, W) descriptor maps of the source and target images.
        src_xy: (K, 2) source points ``(x, y)`` in source pixels (e.g. SIFT keypoints).
        dst_mask: bool target face mask (None: every target pixel is a candidate).
        max_angle_deg: threshold (paper: 30 degrees); None keeps every nearest match.
        chunk_rows, max_elements: block sizes of :func:`dffx.match.dense.nearest_by_angle`.

    Returns:
        :class:`Matches` with method "dff"; ``dst_xy`` are integer target pixel positions,
        ``src_index`` indexes ``src_xy``.

    Raises:
        ValueError: bad maps, masks or points; an empty target mask.
    """
    src = as_feature_map(src_features, "src_features")
    dst = as_feature_map(dst_features, "dst_features", src.device)
    if src.shape[0] != dst.shape[0]:
        raise ValueError(f"descriptor sizes differ: {src.shape[0]} and {dst.shape[0]}")
    pts = np.asarray(src_xy, np.float32).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ValueError("src_xy contains NaN or infinite values")
    dm = as_mask(dst_mask, tuple(dst.shape[1:]), "dst_mask")
    if not dm.any():
        raise ValueError("the target face mask is empty")
    dst_xy = mask_pixels(dm)
    idx, cos = nearest_by_angle(sample_descriptors(src, pts), _descriptors_at_pixels(dst, dm), 1,
                                chunk_rows=chunk_rows, max_elements=max_elements)
    angle = angle_from_cos(cos[:, 0].cpu().numpy())
    idx = idx[:, 0].cpu().numpy()
    keep = np.ones(len(pts), bool) if max_angle_deg is None else angle < max_angle_deg
    rows = np.flatnonzero(keep)
    return Matches("dff", pts[rows], dst_xy[idx[rows]], angle[rows], rows.astype(np.int64), len(pts),
                   {"max_angle_deg": max_angle_deg})


def match_sift(src: Keypoints, dst: Keypoints, *, ratio: float = SIFT_RATIO) -> Matches:
    """SIFT baseline (paper Sec. IV-A, Lowe's ratio test): nearest target descriptor by angle,
    kept when ``angle_nearest < ratio * angle_second`` (paper: ratio 1/1.3).

    Args:
        src, dst: :class:`Keypoints` of the source and target images.
        ratio: ratio-test threshold in (0, 1].

    Returns:
        :class:`Matches` with method "sift"; ``src_index`` indexes ``src``; ``angle_deg`` is the
        angle to the nearest descriptor. With fewer than 2 target keypoints nothing matches.

    Raises:
        ValueError: ratio outside (0, 1].
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    n = len(src)
    if n == 0 or len(dst) < 2:
        return Matches("sift", np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                       np.zeros(0, np.int64), n, {"ratio": ratio})
    idx, cos = nearest_by_angle(src.descriptors, dst.descriptors, 2)
    idx, cos = idx.cpu().numpy(), cos.cpu().numpy()
    a1, a2 = angle_from_cos(cos[:, 0]), angle_from_cos(cos[:, 1])
    rows = np.flatnonzero(a1 < ratio * a2)
    return Matches("sift", src.xy[rows].astype(np.float32), dst.xy[idx[rows, 0]].astype(np.float32), a1[rows],
                   rows.astype(np.int64), n, {"ratio": ratio})


def sparse_match(src_image, dst_image, src_features=None, dst_features=None, src_mask=None, dst_mask=None, *,
                 max_angle_deg: float = SPARSE_MAX_ANGLE_DEG, ratio: float = SIFT_RATIO,
                 max_points: int | None = None, src_keypoints: Keypoints | None = None) -> dict:
    """Fig. 8 comparison: SIFT keypoints in the source face region matched by DFF and by SIFT.

    Args:
        src_image, dst_image: uint8 BGR (H, W, 3) (or grey) images.
        src_features, dst_features: their (C, H, W) DFF maps (same H, W as the images); when
            None only the SIFT baseline runs.
        src_mask, dst_mask: bool face masks (None: whole image). DFF searches all target face
            pixels; SIFT detects its target keypoints inside the target mask.
        max_angle_deg: DFF threshold (paper: 30); ratio: SIFT ratio threshold (paper: 1/1.3).
        max_points: cap on the source keypoints (strongest first).
        src_keypoints: reuse already detected source keypoints instead of detecting them.

    Returns:
        dict: ``"keypoints"`` -> source :class:`Keypoints`; ``"sift"`` -> :class:`Matches`;
        ``"dff"`` -> :class:`Matches` (only with features). Both methods use the same source
        points, so their ``src_index`` refer to the same list.

    Raises:
        ValueError: bad images, masks or maps, or maps whose size differs from their image.
    """
    src_grey, dst_grey = _grey(src_image), _grey(dst_image)
    sm = as_mask(src_mask, src_grey.shape, "src_mask")
    dm = as_mask(dst_mask, dst_grey.shape, "dst_mask")
    kp = src_keypoints if src_keypoints is not None else sift_keypoints(src_grey, sm, max_points=max_points)
    out = {"keypoints": kp, "sift": match_sift(kp, sift_keypoints(dst_grey, dm, unique=False), ratio=ratio)}
    if src_features is not None or dst_features is not None:
        if src_features is None or dst_features is None:
            raise ValueError("pass both src_features and dst_features, or neither")
        sf, df = as_feature_map(src_features, "src_features"), as_feature_map(dst_features, "dst_features")
        if tuple(sf.shape[1:]) != src_grey.shape or tuple(df.shape[1:]) != dst_grey.shape:
            raise ValueError(f"feature maps {tuple(sf.shape[1:])}, {tuple(df.shape[1:])} must have the image sizes "
                             f"{src_grey.shape}, {dst_grey.shape}")
        out["dff"] = match_dff_points(sf, df, kp.xy, dm, max_angle_deg=max_angle_deg)
    return out
