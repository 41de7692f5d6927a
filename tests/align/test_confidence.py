"""Alignment confidence (dffx.align.confidence): the landmark template and the score."""

from __future__ import annotations

import numpy as np
import pytest


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_score_is_the_mean_cosine_over_visible_landmarks():
    from dffx.align.confidence import alignment_score

    rng = np.random.default_rng(0)
    template = _unit(rng.normal(size=(5, 4)))
    visible = np.array([[True, True, True, True, True],
                        [True, False, True, False, False],
                        [False] * 5])
    F = np.stack([template, -template, template]).copy()
    F[1, 2] = template[2]          # face 1: one visible landmark agrees, one is opposite
    F[1, 1] = template[1]          # a hidden landmark: ignored whatever it holds
    F *= visible[..., None]        # hidden landmarks are zero rows, as the cascade samples them
    scores = alignment_score(F.reshape(3, -1), visible, template)
    np.testing.assert_allclose(scores, [1.0, 0.0, -1.0])  # face 2: nothing visible, the floor


def test_score_uses_the_first_landmarks_of_a_wider_visibility():
    """SIFT cascades score 68 landmarks with the cascade's 160-wide visibility."""
    from dffx.align.confidence import alignment_score

    template = np.eye(3)
    F = np.eye(3).reshape(1, -1)
    visible = np.array([[True, True, False, False, False]])
    np.testing.assert_allclose(alignment_score(F, visible, template), [1.0])


@pytest.mark.parametrize("F_shape, vis_shape", [((2, 11), (2, 3)), ((2, 12), (3, 3)), ((2, 12), (2, 2)), ((12,), (2, 3))])
def test_score_rejects_mismatched_shapes(F_shape, vis_shape):
    from dffx.align.confidence import alignment_score

    with pytest.raises(ValueError, match="expected"):
        alignment_score(np.zeros(F_shape), np.ones(vis_shape, bool), np.zeros((3, 4)))


class TableFeatures:
    """Features looked up from a table: crop i's descriptor at landmark l is table[i, l]."""

    n_landmarks = 3
    dim = 6

    def __init__(self, table):
        self.table = table

    def prepare(self, ids):
        return np.asarray(ids)

    def sample(self, prepared, points, visible):
        return (self.table[prepared] * visible[..., None]).reshape(len(prepared), -1).astype(np.float32)


def test_template_is_the_normalised_mean_of_visible_descriptors():
    from dffx.align.confidence import landmark_template

    rng = np.random.default_rng(1)
    table = _unit(rng.normal(size=(7, 3, 2)))
    visible = rng.random((7, 3)) < 0.7
    visible[:, 2] = False                      # landmark 2 never visible: zero row
    template = landmark_template(TableFeatures(table), lambda ids: ids, np.zeros((7, 3, 2)), visible, chunk=3)
    expected = _unit((table * visible[..., None]).sum(0)[:2])
    np.testing.assert_allclose(template[:2], expected, atol=1e-6)
    np.testing.assert_array_equal(template[2], 0.0)
    with pytest.raises(ValueError, match="need points"):
        landmark_template(TableFeatures(table), lambda ids: ids, np.zeros((0, 3, 2)), np.zeros((0, 3), bool))


def test_cascade_keeps_its_template_and_reads_files_without_one(tmp_path):
    from dffx.align import Cascade

    rng = np.random.default_rng(2)
    args = ("sift", np.arange(6.0), rng.normal(size=(1, 5, 136)).astype(np.float32),
            rng.normal(size=(1, 5, 6)).astype(np.float32), 0.3, {})
    template = _unit(rng.normal(size=(68, 128))).astype(np.float32)
    loaded = Cascade.load(Cascade(*args, template=template).save(tmp_path / "with.npz"))
    np.testing.assert_array_equal(loaded.template, template)
    assert Cascade.load(Cascade(*args).save(tmp_path / "without.npz")).template is None


def test_cascade_threshold_is_its_calibrated_one_or_the_uncalibrated_default(tmp_path):
    from dffx.align import Cascade
    from dffx.align.confidence import UNCALIBRATED_MIN_SCORE

    rng = np.random.default_rng(3)
    args = ("sift", np.arange(6.0), rng.normal(size=(1, 5, 136)).astype(np.float32),
            rng.normal(size=(1, 5, 6)).astype(np.float32), 0.3)
    assert Cascade(*args, {}).min_score == UNCALIBRATED_MIN_SCORE == 0.6
    assert Cascade.load(Cascade(*args, {"min_score": 0.83}).save(tmp_path / "c.npz")).min_score == 0.83


def test_threshold_lies_halfway_between_the_percentiles():
    from dffx.align.score_calibration import threshold_between

    faces = np.linspace(0.80, 1.0, 101)          # 1st percentile 0.802
    backgrounds = np.linspace(0.0, 0.60, 101)    # 95th percentile 0.57
    assert threshold_between(faces, backgrounds) == pytest.approx(round((0.802 + 0.57) / 2, 2))
    for bad in ([], [np.nan]):
        with pytest.raises(ValueError, match="finite face score"):
            threshold_between(bad, backgrounds)
        with pytest.raises(ValueError, match="finite background score"):
            threshold_between(faces, bad)


def test_calibration_boxes_are_off_centre_faces_and_squares_off_the_face():
    from dffx.align.score_calibration import BACKGROUND_SIDES, FACE_SCALE, FACE_SHIFT, background_box, \
        detector_like_box

    rng = np.random.default_rng(4)
    face = np.array([100.0, 50.0, 300.0, 250.0])
    for _ in range(50):
        box = detector_like_box(face, rng)
        side = box[2:] - box[:2]
        np.testing.assert_allclose(side, FACE_SCALE * 200.0)
        offset = ((box[:2] + box[2:]) - (face[:2] + face[2:])) / 2
        assert np.abs(offset).max() == pytest.approx(FACE_SHIFT * 200.0)
        bg = background_box((480, 640, 3), face, rng)
        side = bg[2] - bg[0]
        assert BACKGROUND_SIDES[0] <= side <= BACKGROUND_SIDES[1] and bg[3] - bg[1] == pytest.approx(side)
        assert bg[0] >= 0 and bg[1] >= 0 and bg[2] <= 640 and bg[3] <= 480
        assert bg[2] < face[0] or bg[0] > face[2] or bg[3] < face[1] or bg[1] > face[3]
    assert background_box((240, 240, 3), np.array([0.0, 0.0, 240.0, 240.0]), rng) is None  # all face


def test_shipped_threshold_keeps_faces_and_drops_backgrounds_of_held_out_photos(face_model, tmp_path):
    """`dffx train min-score` on a few 300-W training photos the shipped calibration skipped
    (offset 0 instead of 5): its threshold agrees with the shipped one within 0.05, and the
    shipped one keeps every detector-like face box and drops most background squares."""
    from dffx.align import FaceAligner
    from dffx.align.score_calibration import calibrate_min_score
    from dffx.data import load_300w

    from conftest import SHARED

    samples, _ = load_300w(SHARED / "data" / "300w-train")
    aligner = FaceAligner("dff", device="cpu", model=face_model, min_score=None)
    shipped = aligner.cascade.info["min_score"]
    result = calibrate_min_score(aligner, samples[::100], seed=1)
    assert result["faces"] == len(samples[::100]) and result["backgrounds"] >= 15
    assert abs(result["min_score"] - shipped) < 0.05
    assert result["face_p1"] > shipped > result["background_p95"]
    assert aligner.min_score is None and FaceAligner("dff", device="cpu", model=face_model).min_score == shipped


def test_train_min_score_command_writes_the_threshold_into_a_copy(tmp_path, ict_dir, monkeypatch, capsys):
    """`dffx train min-score` on a dozen 300-W training photos: a one-line refusal for bad
    arguments, else the calibration in the output file's info (the input file untouched)."""
    import json

    from dffx.align import Cascade
    from dffx.align.predictor import default_cascade_path
    from dffx.cli import main

    from conftest import SHARED

    monkeypatch.setenv("DFFX_FACE_MODEL", str(ict_dir))
    shipped = default_cascade_path("dff")
    photos = str(SHARED / "data" / "300w-train")
    out = tmp_path / "calibrated.npz"
    before = shipped.read_bytes()
    assert main(["train", "min-score", "--cascade", str(shipped), "--photos", photos, "--every", "0"]) == 1
    assert "--every must be >= 1" in capsys.readouterr().err
    assert main(["train", "min-score", "--cascade", str(shipped), "--photos", photos, "--every", "200",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.rsplit("}", 1)[0] + "}")
    info = Cascade.load(out).info
    assert info["min_score"] == printed["min_score"] == info["min_score_calibration"]["min_score"]
    assert info["min_score_calibration"]["faces"] == 11 and info["min_score_calibration"]["every"] == 200
    assert shipped.read_bytes() == before  # the input file untouched
