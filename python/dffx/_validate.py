"""Input checks shared by the public functions: clear ValueErrors instead of crashes or NaNs."""

from __future__ import annotations

import numpy as np


def as_float_array(x, name: str, ndim: int | None = None, last: int | None = None, dtype=np.float32,
                   check_finite: bool = True) -> np.ndarray:
    """Convert to a C-contiguous float array and check its rank, trailing size and finiteness.

    ``check_finite=False`` leaves the NaN/inf check to a caller that reads only part of the array.

    Raises:
        ValueError: wrong rank, wrong trailing dimension, empty, or NaN/inf values.
    """
    try:
        arr = np.ascontiguousarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric array-like: {exc}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if last is not None and (arr.ndim == 0 or arr.shape[-1] != last):
        raise ValueError(f"{name} must have last dimension {last}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if check_finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def as_index_array(x, name: str, upper: int, ndim: int, last: int | None = None) -> np.ndarray:
    """Convert to C-contiguous int32 indices in [0, upper).

    Raises:
        ValueError: non-integer values, wrong rank/shape, empty, or an index out of range.
    """
    arr = np.asarray(x)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != ndim or (last is not None and arr.shape[-1] != last):
        want = f"(*, {last})" if last is not None else f"{ndim}-D"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= upper:
        raise ValueError(f"{name} has index {lo if lo < 0 else hi} outside [0, {upper})")
    return np.ascontiguousarray(arr, dtype=np.int32)


def image_size(size) -> tuple[int, int]:
    """Parse an image size given as int (square) or (height, width); both must be positive."""
    if np.isscalar(size):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"image size must be an int or (height, width), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    return h, w


def as_uint8_image(image, name: str = "image") -> np.ndarray:
    """Check an 8-bit image as OpenCV reads it: (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA.

    Raises:
        ValueError: empty, not uint8, or another shape.
    """
    img = np.asarray(image)
    if img.size == 0:
        raise ValueError(f"empty {name} (shape {img.shape})")
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ValueError(f"{name} must be uint8 (H, W), (H, W, 3) or (H, W, 4), got {img.dtype} {img.shape}")
    return img


def as_bgr_image(image, name: str = "image") -> np.ndarray:
    """uint8 (H, W, 3) BGR from an (H, W, 3) BGR or (H, W) grey uint8 image (grey is repeated
    into the three channels; a BGR image is returned as it is, without a copy).

    Raises:
        ValueError: None (what cv2.imread returns for a file it cannot read), empty, not uint8,
        or another shape (BGRA included).
    """
    if image is None:
        raise ValueError(f"{name} is None (cv2.imread returns None for a missing or unreadable file)")
    img = np.asarray(image)
    if img.size == 0:
        raise ValueError(f"empty {name}")
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"{name} must be uint8 (H, W, 3) BGR or (H, W) grey, got {img.dtype} {img.shape}")
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
