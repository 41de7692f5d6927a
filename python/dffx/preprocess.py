"""The inference crop: how a face box becomes the network's 224x224 input (and back).

Canonical framing, shared by inference, training-data synthesis and evaluation: a square
centred on the face box (landmark-box convention), side = ``CROP_SCALE * max(w, h)``, resampled
bilinearly to ``size x size``. Pixels outside the image are black.
"""

from __future__ import annotations

import numpy as np

CROP_SIZE = 224   # side of the canonical face crop, pixels: the network input and the cascade's frame
CROP_SCALE = 1.5  # crop side / face-box side: leaves room for the ears and the cheek of a profile


def crop_transform(box, size: int = CROP_SIZE, scale: float = CROP_SCALE) -> np.ndarray:
    """Affine (2, 3) float64 matrix mapping image pixels to crop pixels for a face box.

    Args:
        box: (4,) ``x0, y0, x1, y1`` image pixels, positive size.
        size: crop side in pixels.
        scale: crop side / max(box w, box h).

    Raises:
        ValueError: non-positive box size, size or scale.
    """
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, np.float64)[:4])
    if not (x1 > x0 and y1 > y0 and size > 0 and scale > 0 and np.isfinite([x0, y0, x1, y1]).all()):
        raise ValueError(f"need a finite box with positive size and positive size/scale, got box={box}, "
                         f"size={size}, scale={scale}")
    side = scale * max(x1 - x0, y1 - y0)
    k = size / side
    # the box centre goes to the crop centre (pixel centres at integers: (size - 1) / 2)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[k, 0.0, (size - 1) / 2 - k * cx], [0.0, k, (size - 1) / 2 - k * cy]])


def crop_face(image: np.ndarray, box, size: int = CROP_SIZE, scale: float = CROP_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """Cut the canonical face crop out of an image (OpenCV warpAffine, bilinear).

    Args:
        image: uint8 (H, W, 3) BGR (or (H, W)) image.
        box: (4,) face box ``x0, y0, x1, y1`` in image pixels.
        size, scale: see :func:`crop_transform`.

    Returns:
        (crop uint8 (size, size, 3), transform (2, 3) image -> crop). Map crop points back with
        :func:`crop_to_image`.

    Raises:
        ValueError: empty image, wrong dtype/shape, bad box.
    """
    import cv2

    img = np.asarray(image)
    if img.size == 0:
        raise ValueError("empty image")
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, C), got {img.dtype} {img.shape}")
    M = crop_transform(box, size, scale)
    crop = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, M


def crop_to_image(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Map (..., 2) crop pixels back to image pixels with the inverse of ``transform``."""
    M = np.asarray(transform, np.float64)
    k, tx, ty = M[0, 0], M[0, 2], M[1, 2]
    points = np.asarray(points, np.float64)
    return np.stack([(points[..., 0] - tx) / k, (points[..., 1] - ty) / k], axis=-1)


def crop_face_reference(image: np.ndarray, box, size: int = CROP_SIZE, scale: float = CROP_SCALE) -> np.ndarray:
    """NumPy twin of :func:`crop_face` (float bilinear sampling, black outside), uint8 (size, size, C)."""
    img = np.asarray(image, np.float64)
    img = img[..., None] if img.ndim == 2 else img
    M = crop_transform(box, size, scale)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    src = crop_to_image(np.stack([xs, ys], -1), M)
    x, y = src[..., 0], src[..., 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    H, W = img.shape[:2]

    def at(yy, xx):
        ok = (xx >= 0) & (xx < W) & (yy >= 0) & (yy < H)
        return np.where(ok[..., None], img[np.clip(yy, 0, H - 1), np.clip(xx, 0, W - 1)], 0.0)

    out = (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x0 + 1) * fx * (1 - fy)
           + at(y0 + 1, x0) * (1 - fx) * fy + at(y0 + 1, x0 + 1) * fx * fy)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out[..., 0] if np.asarray(image).ndim == 2 else out
