"""Tiny faces made from large ones: the training pairs of the joint super-resolution and
alignment network (issue 26; Yin et al., "Joint Super-Resolution and Alignment of Tiny Faces",
AAAI 2020, the paper's degradation of high-resolution faces).

A pair is what the tiny path sees at inference and what it should recover:

* ``lr``: the photo as a camera would have taken it with the face ``face_size`` pixels wide
  (the face box's longer side), through a realistic kernel (optional Gaussian blur, area or
  bicubic downscaling, sensor noise, JPEG), then cut to the canonical crop at ``lr_size``
  pixels exactly as :func:`dffx.preprocess.crop_face` cuts any face (so a 16-px face fills
  16 * CROP_SCALE = 24 of the 32 crop pixels);
* ``hr``: the canonical crop of the original at ``hr_size`` pixels, the super-resolution
  target;
* the landmarks in both crops' pixels (pixel centres at integers, x right, y down).

Everything here is NumPy/OpenCV on uint8 BGR images; nothing is learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..preprocess import CROP_SCALE, crop_transform

LR_SIZE = 32    # the tiny path's input crop, pixels
HR_SIZE = 128   # its super-resolved crop: x4 of LR_SIZE (a 16-px face is then x8)


@dataclass(frozen=True)
class Degradation:
    """How one tiny face is made (see :func:`sample_degradation`).

    Attributes:
        blur_sigma: Gaussian blur before downscaling, in pixels of the small image (0: none).
        interpolation: "area" or "bicubic" downscaling.
        noise_sigma: Gaussian noise added to the small image, in 0-255 grey levels.
        jpeg_quality: JPEG quality of the small image, or 0 for none.
    """

    blur_sigma: float = 0.0
    interpolation: str = "area"
    noise_sigma: float = 0.0
    jpeg_quality: int = 0


def sample_degradation(rng: np.random.Generator) -> Degradation:
    """A random :class:`Degradation`: blur with probability 0.5 (sigma 0.3-1.2 small-image
    pixels), area or bicubic downscaling with equal odds, noise sigma 0-8 grey levels, JPEG with
    probability 0.5 (quality 30-90)."""
    return Degradation(blur_sigma=float(rng.uniform(0.3, 1.2)) if rng.random() < 0.5 else 0.0,
                       interpolation="area" if rng.random() < 0.5 else "bicubic",
                       noise_sigma=float(rng.uniform(0.0, 8.0)),
                       jpeg_quality=int(rng.integers(30, 91)) if rng.random() < 0.5 else 0)


def shrink_to_face_size(image: np.ndarray, box, face_size: float, degradation: Degradation,
                        rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The region around a face, rescaled so that the face box's longer side is ``face_size``
    pixels, through ``degradation``.

    Only a square of 2 x CROP_SCALE box sides around the box is kept (the crop needs 1 x
    CROP_SCALE), so that a face in a large photo costs what a face costs.

    Args:
        image: uint8 (H, W, 3) BGR.
        box: (4,) face box x0, y0, x1, y1 in image pixels.
        face_size: the box's longer side in the result, pixels (> 0); at most the box's own.
        degradation: the kernel.
        rng: noise source (required when ``degradation.noise_sigma`` > 0).

    Returns:
        (small uint8 (h, w, 3), float64 (2, 3) affine map from ``image`` pixels to ``small``'s;
        pixel centres at integers, so x_small + 0.5 = (x - x_region + 0.5) * w_small / w_region).

    Raises:
        ValueError: a bad image or box, ``face_size`` outside (0, box side], an unknown
        interpolation, noise without ``rng``.
    """
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise ValueError(f"image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
    box = np.asarray(box, np.float64)
    crop_transform(box, 1, 1.0)  # validates the box
    side = max(box[2] - box[0], box[3] - box[1])
    if not 0 < face_size <= side:
        raise ValueError(f"face_size must be in (0, {side:.1f}] (the box's longer side), got {face_size}")
    if degradation.interpolation not in ("area", "bicubic"):
        raise ValueError(f"interpolation must be 'area' or 'bicubic', got {degradation.interpolation!r}")
    if degradation.noise_sigma > 0 and rng is None:
        raise ValueError("noise needs an rng")
    # the region: 2 x CROP_SCALE box sides around the box centre, clipped to the image
    cx, cy, half = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, CROP_SCALE * side
    x0, y0 = max(int(np.floor(cx - half)), 0), max(int(np.floor(cy - half)), 0)
    x1, y1 = min(int(np.ceil(cx + half)), img.shape[1]), min(int(np.ceil(cy + half)), img.shape[0])
    region = img[y0:y1, x0:x1]
    k = face_size / side
    w, h = max(1, int(round(region.shape[1] * k))), max(1, int(round(region.shape[0] * k)))
    if degradation.blur_sigma > 0:  # in small-image pixels: 1 / k times wider here
        region = cv2.GaussianBlur(region, (0, 0), degradation.blur_sigma / k)
    flags = cv2.INTER_AREA if degradation.interpolation == "area" else cv2.INTER_CUBIC
    small = cv2.resize(region, (w, h), interpolation=flags)
    if degradation.noise_sigma > 0:
        noisy = small.astype(np.float32) + rng.normal(0.0, degradation.noise_sigma, small.shape).astype(np.float32)
        small = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    if degradation.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(degradation.jpeg_quality)])
        if ok:
            small = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    sx, sy = w / region.shape[1], h / region.shape[0]
    M = np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]])
    return small, M


@dataclass
class TinyPair:
    """One training pair (see the module docstring).

    Attributes:
        lr: uint8 (lr_size, lr_size, 3) BGR, the tiny face's canonical crop.
        hr: uint8 (hr_size, hr_size, 3) BGR, the original's canonical crop.
        landmarks_lr: float32 (K, 2) in ``lr`` pixels.
        landmarks_hr: float32 (K, 2) in ``hr`` pixels.
        face_size: the face box's longer side in the simulated photo, pixels.
    """

    lr: np.ndarray
    hr: np.ndarray
    landmarks_lr: np.ndarray
    landmarks_hr: np.ndarray
    face_size: float


def make_pair(image: np.ndarray, box, landmarks, face_size: float, rng: np.random.Generator,
              degradation: Degradation | None = None, lr_size: int = LR_SIZE, hr_size: int = HR_SIZE) -> TinyPair:
    """A :class:`TinyPair` from a large face: its box (the landmarks' box, or a detector's) and
    landmarks (K, 2) in ``image`` pixels; ``degradation`` defaults to
    :func:`sample_degradation` (rng). Raises ValueError as :func:`shrink_to_face_size`."""
    from ..preprocess import crop_face

    landmarks = np.asarray(landmarks, np.float64)
    degradation = sample_degradation(rng) if degradation is None else degradation
    hr, M_hr = crop_face(image, box, size=hr_size)
    small, M_small = shrink_to_face_size(image, box, face_size, degradation, rng)
    corners = _apply(M_small, np.asarray(box, np.float64).reshape(2, 2)).astype(np.float64)
    lr, M_lr = crop_face(small, corners.ravel(), size=lr_size)
    return TinyPair(lr=lr, hr=hr, landmarks_lr=_apply(M_lr, _apply(M_small, landmarks).astype(np.float64)),
                    landmarks_hr=_apply(M_hr, landmarks), face_size=float(face_size))


def _apply(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (K, 2) through the affine (2, 3) ``M``, float32."""
    return (points @ np.asarray(M)[:, :2].T + np.asarray(M)[:, 2]).astype(np.float32)
