"""Backgrounds of synthesized samples: crops of other annotated photos (paper Sec. III-A).

A re-rendered face covers only the 3DMM's face region, so the rest of each sample is a
background photo. 300-W photos are framed on a face, and a random crop of one shows that
face (or part of it) in 44% of crops, large enough for MTCNN to find it (measured on every
7th photo). A detector, or a cascade started from a detector's box, then sees two faces in a
sample that is labelled with one. :func:`face_free_background` crops beside the photo's
annotated face instead; :func:`random_background` is the crop of sets made before
2026-12-02 (``dffx synth --background any``).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..data import landmark_box

# Margins around the 68-point box, in units of its width (left, right) and height (top,
# bottom), that cover the forehead and hairline above the brows, the ears and the chin.
HEAD_MARGIN_LEFT = HEAD_MARGIN_RIGHT = 0.25
HEAD_MARGIN_TOP = 0.4
HEAD_MARGIN_BOTTOM = 0.15
MIN_CROP_SIDE = 16               # pixels of the photo; smaller free areas are not used
CROP_SIDE_RANGE = (0.3, 0.7)     # crop side as a fraction of the photo's shorter side


def head_box(landmarks68: np.ndarray) -> np.ndarray:
    """The head region of an annotated face: the 68-point box grown by the HEAD_MARGIN_* margins.

    Args:
        landmarks68: (68, 2) float, image pixels (x right, y down).

    Returns:
        (4,) float64 ``(x0, y0, x1, y1)`` in pixels; not clipped to the image.

    Raises:
        ValueError: ``landmarks68`` is not (68, 2) or is not finite.
    """
    points = np.asarray(landmarks68, np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise ValueError(f"landmarks68 must be finite with shape (68, 2), got {points.shape}")
    x0, y0, x1, y1 = landmark_box(points)
    width, height = x1 - x0, y1 - y0
    return np.array([x0 - HEAD_MARGIN_LEFT * width, y0 - HEAD_MARGIN_TOP * height,
                     x1 + HEAD_MARGIN_RIGHT * width, y1 + HEAD_MARGIN_BOTTOM * height])


def free_strips(image_shape: tuple, box: np.ndarray) -> np.ndarray:
    """The four image strips beside a box: left of it, right of it, above it and below it.

    Args:
        image_shape: the photo's ``(height, width, ...)``.
        box: (4,) ``(x0, y0, x1, y1)`` pixels; parts outside the image are ignored.

    Returns:
        (4, 4) int64 rows ``(x0, y0, x1, y1)``, full-height left and right strips and
        full-width top and bottom strips; a strip is empty (zero width or height) where the box
        reaches the image border.
    """
    height, width = image_shape[:2]
    bx0, by0 = np.clip(np.floor(box[:2]), 0, [width, height]).astype(np.int64)
    bx1, by1 = np.clip(np.ceil(box[2:]), 0, [width, height]).astype(np.int64)
    bx1, by1 = max(bx1, bx0), max(by1, by0)
    return np.array([[0, 0, bx0, height], [bx1, 0, width, height], [0, 0, width, by0], [0, by1, width, height]])


def face_free_background(photo: np.ndarray, landmarks68: np.ndarray, size: int,
                         rng: np.random.Generator) -> np.ndarray | None:
    """A square crop of ``photo`` beside its annotated face, resized to size x size, maybe flipped.

    The crop lies in one of the :func:`free_strips` around the :func:`head_box`, chosen with
    probability proportional to the largest square it holds. Its side is drawn like
    :func:`random_background`'s (30-70% of the photo's shorter side) and capped by that square.
    Faces other than the annotated one (a group photo) are not known and can remain.

    Args:
        photo: (H, W, 3) uint8 BGR.
        landmarks68: (68, 2) float, the photo's annotated landmarks in pixels.
        size: output side in pixels.
        rng: the sample's generator.

    Returns:
        (size, size, 3) uint8 BGR, or None when no strip holds a MIN_CROP_SIDE square (the face
        fills the photo); the caller then takes another photo.

    Raises:
        ValueError: bad ``landmarks68`` (see :func:`head_box`).
    """
    height, width = photo.shape[:2]
    strips = free_strips(photo.shape, head_box(landmarks68))
    squares = np.minimum(strips[:, 2] - strips[:, 0], strips[:, 3] - strips[:, 1])
    usable = np.flatnonzero(squares >= MIN_CROP_SIDE)
    if usable.size == 0:
        return None
    k = rng.choice(usable, p=squares[usable] / squares[usable].sum())
    side = int(np.clip(rng.uniform(*CROP_SIDE_RANGE) * min(height, width), MIN_CROP_SIDE, squares[k]))
    sx0, sy0, sx1, sy1 = strips[k]
    y0, x0 = rng.integers(sy0, sy1 - side + 1), rng.integers(sx0, sx1 - side + 1)
    crop = photo[y0:y0 + side, x0:x0 + side]
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR  # free strips are often small
    return _resize_and_flip(crop, size, interpolation, rng)


def random_background(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (30-70% of the shorter side) of a photo, resized to size x size, maybe flipped.

    The crop may show the photo's face: the background of sets made before 2026-12-02.

    Args:
        photo: (H, W, 3) uint8 BGR.
        size: output side in pixels.
        rng: the sample's generator.

    Returns:
        (size, size, 3) uint8 BGR.
    """
    h, w = photo.shape[:2]
    side = int(rng.uniform(*CROP_SIDE_RANGE) * min(h, w))
    side = max(side, 8)
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return _resize_and_flip(photo[y0:y0 + side, x0:x0 + side], size, cv2.INTER_AREA, rng)


def _resize_and_flip(crop: np.ndarray, size: int, interpolation: int, rng: np.random.Generator) -> np.ndarray:
    crop = cv2.resize(crop, (size, size), interpolation=interpolation)
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop
