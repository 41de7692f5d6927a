"""Face detection with OpenCV's Haar cascades (frontal + profile), which ship inside the
opencv-python-headless wheel, so detection works offline with no model download.

The cascade boxes are mapped to dffx's *face box* convention: the bounding box of the 68
iBUG landmarks (the box the evaluation protocols initialise from). The mapping constants were
fitted by least squares on the 300W training photos (see docs/evaluation.md).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# cascade box (x, y, w, h) -> landmark box: centre shift and size ratios, relative to w and h.
# Medians over 181 detections on every 10th photo of ../shared/data/300w-train (docs/evaluation.md).
BOX_CENTRE_SHIFT = (0.0, 0.14)
BOX_SIZE_RATIO = (0.84, 0.82)

# Cascade score (OpenCV's stage-sum "level weight") below which a hit is dropped. On the 9
# annotated dlib example photos (43 faces) a threshold of 2.0 keeps 41 faces (95%) and drops
# the one false hit; 3.0 would lose 4 more real faces. It also drops both false hits on
# bald_guys.jpg (0.4, 0.5) and one of three on dogs.jpg (docs/alignment.md, "Face boxes").
DEFAULT_MIN_SCORE = 2.0


@lru_cache(maxsize=None)
def _cascade(name: str):
    import cv2

    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV face cascade missing: {path} (install opencv-python-headless < 5)")
    return cascade


def detect_faces(image: np.ndarray, min_size: int = 40, min_score: float | None = DEFAULT_MIN_SCORE) -> np.ndarray:
    """Detect faces and return their landmark-convention boxes, best first.

    Runs the frontal cascade and the profile cascade on the image and on its mirror (the
    profile cascade only knows one side), merges overlapping hits by non-maximum suppression,
    then drops hits scoring below ``min_score``.

    Args:
        image: uint8 (H, W, 3) BGR or (H, W) grey image.
        min_size: smallest face side in pixels to look for.
        min_score: drop detections whose cascade score is below this (None: keep all).
            The default trades a few faint real faces for far fewer false hits (see
            ``DEFAULT_MIN_SCORE``).

    Returns:
        float64 (K, 5): ``x0, y0, x1, y1, score`` per face, sorted by score (K = 0: no face).

    Raises:
        ValueError: empty image, wrong dtype or shape, or a NaN/infinite ``min_score``.
    """
    import cv2

    img = np.asarray(image)
    if img.size == 0:
        raise ValueError("empty image")
    if min_score is not None and not np.isfinite(min_score):
        raise ValueError(f"min_score must be a finite number or None, got {min_score!r}")
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3), got {img.dtype} {img.shape}")
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    grey = cv2.equalizeHist(grey)
    width = grey.shape[1]
    boxes, scores = [], []
    for name, mirrored in (("haarcascade_frontalface_default.xml", False),
                           ("haarcascade_profileface.xml", False), ("haarcascade_profileface.xml", True)):
        src = grey[:, ::-1].copy() if mirrored else grey
        found, _, weights = _cascade(name).detectMultiScale3(
            src, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size), outputRejectLevels=True)
        for (x, y, w, h), score in zip(np.asarray(found).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            if mirrored:
                x = width - x - w
            boxes.append((x, y, w, h))
            scores.append(float(score))
    if not boxes:
        return np.zeros((0, 5))
    out = []
    for i in _non_maximum_suppression(np.asarray(boxes, np.float64), np.asarray(scores), 0.3):
        x, y, w, h = boxes[i]
        cx, cy = x + w / 2 + BOX_CENTRE_SHIFT[0] * w, y + h / 2 + BOX_CENTRE_SHIFT[1] * h
        hw, hh = BOX_SIZE_RATIO[0] * w / 2, BOX_SIZE_RATIO[1] * h / 2
        out.append((cx - hw, cy - hh, cx + hw, cy + hh, scores[i]))
    out = np.asarray(out, dtype=np.float64)
    if min_score is not None:
        out = out[out[:, 4] >= min_score]
    return out[np.argsort(-out[:, 4])]


def _non_maximum_suppression(xywh: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS: indices of kept boxes, best score first (scores may be negative)."""
    corners = np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]
    keep: list[int] = []
    for i in np.argsort(-scores):
        if not keep or box_iou(corners[keep], corners[i]).max() <= threshold:
            keep.append(int(i))
    return keep


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes a (K, 4+) and one box b (4,), x0 y0 x1 y1 -> (K,)."""
    a = np.atleast_2d(a)[:, :4]
    ix = np.clip(np.minimum(a[:, 2], b[2]) - np.maximum(a[:, 0], b[0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[3]) - np.maximum(a[:, 1], b[1]), 0, None)
    inter = ix * iy
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / np.maximum(union, 1e-12)
