"""The Haar face detector against the face boxes annotated in dlib's example photos.

``dlib-examples/{training,testing}.xml`` box 43 faces in 9 photos. A detection counts as a
face when its centre lies inside an annotated box of similar size (dlib's boxes and dffx's
landmark boxes follow different conventions, so IoU would be unfair).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from conftest import SHARED
from dffx.detect import DEFAULT_MIN_SCORE, detect_faces

DLIB = SHARED / "data" / "dev" / "dlib-examples"


def annotated_faces() -> dict[str, list[tuple[int, int, int, int]]]:
    faces = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(DLIB / name).getroot().iter("image"):
            faces[image.get("file")] = [(int(b.get("left")), int(b.get("top")), int(b.get("width")),
                                         int(b.get("height"))) for b in image.iter("box")]
    return faces


def match(detections: np.ndarray, truth: list) -> tuple[int, int]:
    """(true hits, false hits): greedy, best score first, each annotated face used once."""
    used, false = set(), 0
    for x0, y0, x1, y1, _ in detections:
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
        hit = next((j for j, (l, t, w, h) in enumerate(truth)
                    if j not in used and l <= cx <= l + w and t <= cy <= t + h and 0.5 < side / w < 2), None)
        if hit is None:
            false += 1
        else:
            used.add(hit)
    return len(used), false


def test_score_threshold_keeps_faces_and_drops_false_hits():
    faces = annotated_faces()
    assert sum(map(len, faces.values())) == 43
    kept = found_all = false_kept = false_all = 0
    for name, truth in faces.items():
        image = cv2.imread(str(DLIB / name))
        everything = detect_faces(image, min_size=20, min_score=None)
        thresholded = detect_faces(image, min_size=20)
        # The threshold only removes rows: same boxes, all scoring at least the threshold.
        assert np.all(thresholded[:, 4] >= DEFAULT_MIN_SCORE)
        assert len(thresholded) == int(np.sum(everything[:, 4] >= DEFAULT_MIN_SCORE))
        hits, false = match(thresholded, truth)
        kept, false_kept = kept + hits, false_kept + false
        hits, false = match(everything, truth)
        found_all, false_all = found_all + hits, false_all + false
    assert kept >= 0.9 * 43 and found_all - kept <= 1
    assert false_kept < false_all


def test_dog_faces_score_low_and_bad_input_is_named():
    dogs = detect_faces(cv2.imread(str(DLIB / "dogs.jpg")))
    assert len(dogs) < len(detect_faces(cv2.imread(str(DLIB / "dogs.jpg")), min_score=None))
    with pytest.raises(ValueError, match="empty image"):
        detect_faces(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="min_score"):
        detect_faces(np.zeros((8, 8, 3), np.uint8), min_score=float("nan"))
    with pytest.raises(ValueError, match="uint8"):
        detect_faces(np.zeros((8, 8, 3), np.float32))
