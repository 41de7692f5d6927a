"""The Haar face detector (``detect_faces(..., detector="haar")``) against the face boxes
annotated in dlib's example photos, and its box calibration.

``dlib-examples/{training,testing}.xml`` box 43 faces in 9 photos (``conftest.dlib_faces``). A
detection counts as a face when its centre lies inside an annotated box of similar size (dlib's
boxes and dffx's landmark boxes follow different conventions, so IoU would be unfair).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import DLIB_EXAMPLES, dlib_faces, match_dlib_faces
from dffx.data import load_aflw2000_3d
from dffx.detect import box_iou, detect_faces
from dffx.detect.haar import (BOX_CALIBRATION, MIN_STAGE_SUM, PROFILE_PREFERENCE_MARGIN, cascade_hits,
                              faces_from_hits, landmark_box)


def haar(image, **kw):
    return detect_faces(image, detector="haar", **kw)


def test_score_threshold_keeps_faces_and_drops_false_hits():
    faces = dlib_faces()
    kept = found_all = false_kept = false_all = 0
    for name, truth in faces.items():
        image = cv2.imread(str(DLIB_EXAMPLES / name))
        everything = haar(image, min_size=20, min_score=None)
        thresholded = haar(image, min_size=20)
        # The threshold only removes rows: same boxes, all scoring at least the threshold.
        assert np.all(thresholded[:, 4] >= MIN_STAGE_SUM)
        assert len(thresholded) == int(np.sum(everything[:, 4] >= MIN_STAGE_SUM))
        hits, false = match_dlib_faces(thresholded, truth)
        kept, false_kept = kept + hits, false_kept + false
        hits, false = match_dlib_faces(everything, truth)
        found_all, false_all = found_all + hits, false_all + false
    assert kept >= 0.9 * 43 and found_all - kept <= 1
    assert false_kept < false_all


def test_dog_faces_score_low_and_bad_input_is_named():
    dogs = cv2.imread(str(DLIB_EXAMPLES / "dogs.jpg"))
    assert len(haar(dogs)) < len(haar(dogs, min_score=None))
    with pytest.raises(ValueError, match="empty image"):
        haar(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="min_score"):
        haar(np.zeros((8, 8, 3), np.uint8), min_score=float("nan"))
    with pytest.raises(ValueError, match="uint8"):
        haar(np.zeros((8, 8, 3), np.float32))


def test_landmark_box_applies_each_cascades_calibration_and_mirrors_profile_shifts():
    xywh = (100.0, 50.0, 80.0, 60.0)
    for kind, c in BOX_CALIBRATION.items():
        (dx, dy), (rw, rh) = c["centre_shift"], c["size_ratio"]
        for mirrored, sign in ((False, 1.0), (True, -1.0)):
            x0, y0, x1, y1 = landmark_box(xywh, kind, mirrored)
            assert np.allclose([(x0 + x1) / 2, (y0 + y1) / 2], [140 + sign * dx * 80, 80 + dy * 60])
            assert np.allclose([x1 - x0, y1 - y0], [rw * 80, rh * 60])
    # the profile box frames the whole head: its landmark box is narrower than the frontal one's
    assert BOX_CALIBRATION["profile"]["size_ratio"][0] < BOX_CALIBRATION["frontal"]["size_ratio"][0]


def test_a_turned_face_takes_the_profile_box_unless_the_profile_hit_is_faint():
    frontal = ((100.0, 100.0, 100.0, 100.0), 6.0, "frontal", False)
    profile_box = ((80.0, 90.0, 130.0, 120.0), 6.0 - PROFILE_PREFERENCE_MARGIN + 0.5, "profile", True)
    faint = (profile_box[0], 6.0 - PROFILE_PREFERENCE_MARGIN - 0.5, "profile", True)
    far = ((600.0, 100.0, 100.0, 100.0), 2.5, "frontal", False)

    faces = faces_from_hits([frontal, profile_box, far])
    assert len(faces) == 2  # the two hits on one face merge; the far face stays
    assert np.allclose(faces[0], [*landmark_box(*profile_box[0:1], *profile_box[2:]), 6.0])  # profile box, best score
    assert np.allclose(faces[1, :4], landmark_box(*far[0:1], *far[2:]))
    assert np.allclose(faces_from_hits([frontal, faint])[0], [*landmark_box(*frontal[0:1], *frontal[2:]), 6.0])
    assert len(faces_from_hits([frontal, profile_box, far], min_score=3.0)) == 1
    assert faces_from_hits([]).shape == (0, 5)


def test_profile_faces_get_boxes_centred_on_the_landmarks(aflw2000_dir):
    # AFLW2000-3D photos turned 60-90 deg: the frontal cascade boxes the visible half of the
    # face (centre a quarter of the face size or more off); the calibrated profile box does not.
    samples, _ = load_aflw2000_3d(aflw2000_dir)
    checked = 0
    for sample in samples:
        if abs(sample.yaw_deg) < 60:
            continue
        image = cv2.imread(str(sample.image_path))
        truth = sample.ground_truth_to_image(sample.face_box.reshape(2, 2), image.shape[:2]).reshape(4)
        hits = cascade_hits(cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)))
        errors = []
        for margin in (-np.inf, PROFILE_PREFERENCE_MARGIN):  # frontal box first, then the default
            faces = faces_from_hits(hits, profile_margin=margin)
            box = faces[np.argmax(box_iou(faces, truth))]
            side = np.sqrt((truth[2] - truth[0]) * (truth[3] - truth[1]))
            errors.append(np.hypot(*(box[:2] + box[2:4] - truth[:2] - truth[2:]) / 2) / side)
        assert errors[0] > 0.2 and errors[1] < 0.1, (sample.name, errors)
        checked += 1
    assert checked == 2
