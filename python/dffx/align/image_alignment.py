"""The cascade's results for the faces of one image (:func:`dffx.align.predictor.align_in_image`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageAlignment:
    """Cascade results for the F faces of one image, in that image's pixels (x right, y down).

    Attributes:
        boxes: float64 (F, 4) x0, y0, x1, y1 the kept pass started from.
        landmarks: float64 (F, 68, 2) iBUG landmarks.
        visible: bool (F, 68) depth-buffer visibility.
        camera: float64 (F, 6) weak-perspective w = (s, pitch, yaw, roll, tx, ty) in image pixels.
        params: float32 (F, M) shape parameters (p_id then p_exp).
        score: float64 (F,) alignment confidence (:mod:`dffx.align.confidence`), or None when
            the cascade file has no template.
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    camera: np.ndarray
    params: np.ndarray
    score: np.ndarray | None
