"""Face detection with OpenCV's Haar cascades (frontal + profile), which ship inside the
opencv-python-headless wheel, so detection works offline with no model download. The
``detector="haar"`` choice of :func:`dffx.detect.detect_faces`; MTCNN is the default.

The cascade boxes are mapped to dffx's *face box* convention: the bounding box of the 68
iBUG landmarks in the 3D convention (the box the evaluation protocols and the alignment cascade
start from). Each cascade has its own mapping, medians measured on the 300W training photos and
on synthesized renders by ``tools/calibrate_detector.py`` (docs/evaluation.md, "Face boxes").
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._validate import as_uint8_image
from .boxes import overlap_groups

# Cascade box (x, y, w, h) -> landmark box: centre shift and size ratios relative to w and h,
# one calibration per cascade, against the box of the 68 landmarks in the 3D convention (that
# of AFLW2000-3D and of the synthesized training faces; tools/calibrate_detector.py).
# * frontal: medians over 451 hits on every 4th 300w-train photo, against each photo's 3DMM fit.
# * profile: medians over the 423 profile hits with |yaw| >= 30 deg on 2,000 synthesized
#   training renders (the 300W photos hold only 8 such hits, which agree). The profile box is
#   about 1.5x the landmark box's width: it covers the back of the head.
# A hit of the profile cascade on the mirrored image has its x shift mirrored.
BOX_CALIBRATION = {
    "frontal": {"centre_shift": (0.01, 0.16), "size_ratio": (0.85, 0.84)},
    "profile": {"centre_shift": (0.0, 0.12), "size_ratio": (0.66, 0.75)},
}
# When a frontal and a profile hit fall on one face, the profile box is used if its score is at
# least the frontal score minus this margin. Chosen on the two calibration sets over margins
# 0, 1, 2, 3, 4 and infinity (tools/calibrate_detector.py; share of boxes within 10% of the
# truth in centre and size): on the 300w-train photos with |yaw| < 15 deg, 68% against 69% at
# margin 0 and 42% at infinity; on the synthesized renders at 30-60 deg, 34% against 22% and 40%.
PROFILE_PREFERENCE_MARGIN = 3.0

# (cascade file, its calibration, run on the mirrored image)
CASCADES = (("haarcascade_frontalface_default.xml", "frontal", False),
            ("haarcascade_profileface.xml", "profile", False),
            ("haarcascade_profileface.xml", "profile", True))

# Cascade score (OpenCV's stage-sum "level weight") below which a hit is dropped. On the 9
# annotated dlib example photos (43 faces) a threshold of 2.0 keeps 41 faces (95%) and drops
# the one false hit; 3.0 would lose 4 more real faces. On bald_guys.jpg it keeps all 24 faces
# and drops the 4 other hits (0.2-0.9); on dogs.jpg it drops one of three (docs/experiments/2026-12-02-face-boxes.md).
MIN_STAGE_SUM = 2.0


@lru_cache(maxsize=None)
def _cascade(name: str):
    import cv2

    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV face cascade missing: {path} (install opencv-python-headless < 5)")
    return cascade


def haar_detect(image: np.ndarray, min_size: int = 40, min_score: float | None = MIN_STAGE_SUM) -> np.ndarray:
    """Detect faces with the Haar cascades; landmark-convention boxes, best first.

    Runs the frontal cascade and the profile cascade on the image and on its mirror (the
    profile cascade only knows one side), maps each hit to the landmark-box convention with its
    cascade's calibration (``BOX_CALIBRATION``), merges overlapping hits into one face (a turned
    face takes the profile cascade's box, see ``PROFILE_PREFERENCE_MARGIN``), then drops faces
    scoring below ``min_score``. :func:`dffx.detect.detect_faces` with ``detector="haar"``.

    Args:
        image: uint8 (H, W, 3) BGR, (H, W, 4) BGRA or (H, W) grey image.
        min_size: smallest face side in pixels to look for.
        min_score: drop detections whose cascade score is below this (None: keep all).
            The default trades a few faint real faces for far fewer false hits (see
            ``MIN_STAGE_SUM``).

    Returns:
        float64 (K, 5): ``x0, y0, x1, y1, score`` per face, sorted by score (K = 0: no face).

    Raises:
        ValueError: empty image, wrong dtype or shape, or a NaN/infinite ``min_score``.
    """
    import cv2

    img = as_uint8_image(image)
    if min_score is not None and not np.isfinite(min_score):
        raise ValueError(f"min_score must be a finite number or None, got {min_score!r}")
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return faces_from_hits(cascade_hits(cv2.equalizeHist(grey), min_size), min_score)


def faces_from_hits(hits: list, min_score: float | None = MIN_STAGE_SUM,
                    profile_margin: float = PROFILE_PREFERENCE_MARGIN) -> np.ndarray:
    """Merge raw cascade hits into face boxes (the second half of :func:`detect_faces`).

    Each hit is calibrated to a landmark box (:func:`landmark_box`); overlapping boxes (IoU >
    0.3) form one face, which keeps the best score. Its box is that of the best hit, or of the
    best profile hit when that scores at least the best score minus ``profile_margin``.

    Args:
        hits: :func:`cascade_hits` output.
        min_score: drop faces scoring below this (None: keep all).
        profile_margin: see ``PROFILE_PREFERENCE_MARGIN``.

    Returns:
        float64 (K, 5): ``x0, y0, x1, y1, score`` per face, best first.
    """
    if not hits:
        return np.zeros((0, 5))
    # Group on calibrated boxes: a frontal and a profile hit on one face agree only there.
    corners = np.asarray([landmark_box(xywh, kind, mirrored) for xywh, _, kind, mirrored in hits])
    scores = np.asarray([score for _, score, _, _ in hits])
    out = []
    for members in overlap_groups(corners, scores, 0.3):
        # A face the profile cascade finds about as surely as the frontal one is turned: the
        # frontal box then sits on the visible half of the face (centre off by ~0.18 of its
        # width at 30-60 deg of yaw), the profile box does not. A faint profile hit on a frontal
        # face is a poor box, hence the margin.
        profile = [i for i in members if hits[i][2] == "profile"]
        turned = profile and scores[profile[0]] >= scores[members[0]] - profile_margin
        out.append((*corners[profile[0] if turned else members[0]], scores[members[0]]))
    out = np.asarray(out, dtype=np.float64)
    if min_score is not None:
        out = out[out[:, 4] >= min_score]
    return out[np.argsort(-out[:, 4], kind="stable")]


def cascade_hits(grey: np.ndarray, min_size: int = 40) -> list[tuple[tuple, float, str, bool]]:
    """Raw hits of every cascade in ``CASCADES`` on one (already equalised) grey image.

    Returns:
        list of ``((x, y, w, h), score, calibration name, mirrored)``; boxes are in the
        un-mirrored image's pixels, as the cascade drew them (not yet calibrated).
    """
    width = grey.shape[1]
    hits = []
    for name, kind, mirrored in CASCADES:
        src = grey[:, ::-1].copy() if mirrored else grey
        found, _, weights = _cascade(name).detectMultiScale3(
            src, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size), outputRejectLevels=True)
        for (x, y, w, h), score in zip(np.asarray(found).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            if mirrored:
                x = width - x - w
            hits.append(((float(x), float(y), float(w), float(h)), float(score), kind, mirrored))
    return hits


def landmark_box(xywh, kind: str, mirrored: bool) -> tuple[float, float, float, float]:
    """Map one cascade box (x, y, w, h) to a landmark-convention box (x0, y0, x1, y1).

    Args:
        xywh: the cascade's box in image pixels.
        kind: its calibration, a key of ``BOX_CALIBRATION``.
        mirrored: the hit came from the mirrored image (flips the calibration's x shift).
    """
    x, y, w, h = xywh
    calibration = BOX_CALIBRATION[kind]
    dx, dy = calibration["centre_shift"]
    rw, rh = calibration["size_ratio"]
    cx = x + w / 2 + (-dx if mirrored else dx) * w
    cy = y + h / 2 + dy * h
    return cx - rw * w / 2, cy - rh * h / 2, cx + rw * w / 2, cy + rh * h / 2
