"""Evaluation metrics against hand-computed cases and the paper's own table rows."""

import numpy as np
import pytest

import dffx
from dffx.eval import (MeanShapePredictor, aflw21_from_68, interocular_distance, interpupil_distance, nme, nme_box,
                       pose_errors, summarize_bins, summarize_pose, yaw_bin)


def test_nme_hand_case_with_missing_points_and_mask():
    gt = np.array([[0.0, 0.0], [10.0, 0.0], [np.nan, np.nan], [0.0, 10.0]])
    pred = gt + np.array([3.0, 4.0])  # every point 5 px off
    pred[2] = [1000.0, 1000.0]        # a prediction for an unannotated point is ignored
    assert nme(pred, gt, 10.0) == pytest.approx(0.5)
    pred[3] = [0.0, 10.0]             # now one point is exact: (5 + 5 + 0) / 3 / 10
    assert nme(pred, gt, 10.0) == pytest.approx(1 / 3)
    assert nme(pred, gt, 10.0, mask=[True, False, True, False]) == pytest.approx(0.5)
    assert np.isnan(nme(pred, gt, 10.0, mask=[False, False, True, False]))


def test_nme_box_normalises_by_sqrt_area():
    gt = np.array([[0.0, 0.0], [40.0, 0.0], [0.0, 10.0], [40.0, 10.0]])  # 40 x 10 box: sqrt = 20
    assert nme_box(gt + [2.0, 0.0], gt) == pytest.approx(0.1)


def test_nme_rejects_bad_input():
    with pytest.raises(ValueError, match="K, 2"):
        nme(np.zeros((3, 2)), np.zeros((4, 2)), 1.0)
    with pytest.raises(ValueError, match="> 0"):
        nme(np.zeros((3, 2)), np.zeros((3, 2)), 0.0)


def test_aflw21_mapping_follows_3ddfa_groups():
    pts = np.stack([np.arange(68.0), 2 * np.arange(68.0)], axis=1)  # point i (0-based) = (i, 2i)
    out = aflw21_from_68(pts)
    assert out.shape == (21, 2)
    np.testing.assert_allclose(out[0], [17, 34])                 # iBUG 18: left brow outer end
    np.testing.assert_allclose(out[7], [np.mean(range(36, 42)), 2 * np.mean(range(36, 42))])  # eye centre
    np.testing.assert_allclose(out[14], [30, 60])                # nose tip, iBUG 31
    np.testing.assert_allclose(out[18], [np.mean(range(60, 68)), 2 * np.mean(range(60, 68))])  # mouth centre
    np.testing.assert_allclose(out[20], [8, 16])                 # chin, iBUG 9


def test_eye_distances():
    pts = np.zeros((68, 2))
    pts[36:42] = [[0, 0], [1, 1], [2, 1], [3, 0], [2, -1], [1, -1]]  # centre (1.5, 0)
    pts[42:48] = pts[36:42] + [10, 0]                              # centre (11.5, 0)
    assert interpupil_distance(pts) == pytest.approx(10.0)
    assert interocular_distance(pts) == pytest.approx(np.hypot(13.0, 0.0))  # points 37 and 46


@pytest.mark.parametrize("yaw, expected", [(0, "0-30"), (30, "0-30"), (-30.01, "30-60"), (60, "30-60"),
                                           (60.5, "60-90"), (-90, "60-90"), (99, "60-90")])
def test_yaw_bins(yaw, expected):
    assert yaw_bin(yaw) == expected


def test_mean_and_std_follow_the_papers_table():
    """3DDFA's row of Table II: bins 3.78 / 4.54 / 7.93 give Mean 5.42 and Std 2.21."""
    errors = np.array([3.70, 3.86, 4.54, 7.90, 7.96]) / 100
    yaws = np.array([10, -25, 45, 70, -85])
    out = summarize_bins(errors, yaws)
    assert out["counts"] == {"0-30": 2, "30-60": 1, "60-90": 2}
    np.testing.assert_allclose([out["bins"][b] for b in ("0-30", "30-60", "60-90")], [3.78, 4.54, 7.93])
    assert round(out["mean"], 2) == 5.42 and round(out["std"], 2) == 2.21 and out["complete"]
    # the paper's own DFF row: 3.68 / 5.03 / 5.78 -> 4.83 / 1.06
    out = summarize_bins(np.array([3.68, 5.03, 5.78]) / 100, [0, 45, 75])
    assert (round(out["mean"], 2), round(out["std"], 2)) == (4.83, 1.06)


def test_missing_bins_are_reported_not_invented():
    out = summarize_bins(np.array([0.05, np.nan]), [10, 40])
    assert out["bins"]["30-60"] is None and out["bins"]["60-90"] is None
    assert out["mean"] == pytest.approx(5.0) and out["std"] is None and not out["complete"]


def test_mean_shape_predictor_places_the_mean_face_in_the_box(face_model):
    predictor = MeanShapePredictor(face_model)
    box = np.array([100.0, 50.0, 300.0, 290.0])
    pred = predictor.predict(None, box)
    lo, hi = pred.landmarks.min(0), pred.landmarks.max(0)
    np.testing.assert_allclose((lo + hi) / 2, [200, 170], atol=1e-4)             # same centre
    assert np.prod(hi - lo) == pytest.approx(200 * 240, rel=1e-6)                # same area (float32)
    np.testing.assert_allclose(pred.camera[1:4], 0.0)                           # frontal
    # the mean face is its own fixed point: its landmarks put back in their own box give NME 0
    again = predictor.predict(None, np.r_[lo, hi]).landmarks
    assert nme_box(again, pred.landmarks) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="positive size"):
        predictor.predict(None, [10, 10, 5, 20])
    assert dffx.eval.make_predictor("mean-shape", face_model).name == "mean-shape"
    with pytest.raises(ValueError, match="unknown method"):
        dffx.eval.make_predictor("magic", face_model)


@pytest.mark.parametrize("pred, truth, signed, rotation", [
    ((10.0, 20.0, -5.0), (10.0, 20.0, -5.0), (0, 0, 0), 0.0),
    ((12.0, 0.0, 0.0), (0.0, 0.0, 0.0), (12, 0, 0), 12.0),  # one elementary rotation: the angle itself
    ((0.0, -30.0, 0.0), (0.0, 45.0, 0.0), (0, -75, 0), 75.0),
    ((0.0, 0.0, 179.0), (0.0, 0.0, -179.0), (0, 0, -2), 2.0),  # wrapped, not 358
])
def test_pose_errors_hand_cases(pred, truth, signed, rotation):
    e = pose_errors(pred, truth)
    np.testing.assert_allclose([e["pitch"], e["yaw"], e["roll"]], signed, atol=1e-9)
    assert e["rotation"] == pytest.approx(rotation, abs=1e-6)


def test_pose_rotation_error_is_the_angle_between_the_two_rotations():
    from dffx.geometry.camera import euler_from_rotation, rotation_matrix

    rng = np.random.default_rng(5)
    for _ in range(20):
        truth = rng.uniform(-80, 80, 3)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(0, 40)
        # rotate the truth by `angle` degrees about `axis` (Rodrigues), read the Euler angles back
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        t = np.radians(angle)
        delta = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
        pred = np.degrees(euler_from_rotation(delta @ rotation_matrix(*np.radians(truth))))
        assert pose_errors(pred, truth)["rotation"] == pytest.approx(angle, abs=1e-5)


def test_pose_errors_reject_bad_input():
    with pytest.raises(ValueError, match="3 finite angles"):
        pose_errors((0, 0), (0, 0, 0))
    with pytest.raises(ValueError, match="3 finite angles"):
        pose_errors((0, np.nan, 0), (0, 0, 0))


def test_pose_summary_hand_case():
    errors = [pose_errors(p, (0, 0, 0)) for p in [(2, -4, 0), (-2, 8, 3), (0, 0, -6)]]
    summary = summarize_pose(errors, np.array([10.0, -45.0, 20.0]))
    assert summary["mae"]["pitch"] == pytest.approx(4 / 3) and summary["mae"]["yaw"] == pytest.approx(4.0)
    assert summary["mae"]["roll"] == pytest.approx(3.0) and summary["mae"]["mean"] == pytest.approx((4 / 3 + 7) / 3)
    assert summary["bias"]["yaw"] == pytest.approx(4 / 3) and summary["bias"]["roll"] == pytest.approx(-1.0)
    assert summary["counts"] == {"0-30": 2, "30-60": 1, "60-90": 0}
    assert summary["bins"]["0-30"] == pytest.approx((2 + 4 + 0 + 0 + 0 + 6) / 6)
    assert summary["bins"]["30-60"] == pytest.approx(13 / 3) and summary["bins"]["60-90"] is None
    with pytest.raises(ValueError, match="one yaw per face"):
        summarize_pose(errors, np.zeros(2))
