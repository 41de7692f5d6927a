"""Landmark vertices in the annotators' convention (dffx.model.annotated_landmarks) and the
cascade's binding to them."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _photos_of(face_model, vertices, count, rng):
    """Annotations (count, 68, 2) at ``vertices`` of random faces under random near-frontal cameras,
    with the true cameras and shapes."""
    from dffx import project

    cams = np.column_stack([rng.uniform(8, 14, count), np.radians(rng.uniform(-10, 10, count)),
                            np.radians(rng.uniform(-12, 12, count)), np.radians(rng.uniform(-8, 8, count)),
                            rng.uniform(200, 260, count), rng.uniform(200, 260, count)])
    p_id = rng.normal(0, 0.7, (count, face_model.n_identity)).astype(np.float32)
    p_exp = np.zeros((count, face_model.n_expression), np.float32)
    shapes = face_model.shape(p_id, p_exp)
    points = np.stack([project(s[vertices], c)[:, :2] for s, c in zip(shapes, cams)])
    return points, cams, p_id, p_exp


def test_costs_vanish_at_the_vertices_that_made_the_annotations(face_model, rng):
    """landmark_costs is 0 at the vertex that generated each point and positive at every other candidate."""
    from dffx.synth.landmark_learning import landmark_costs

    truth = np.asarray(face_model.landmarks68).copy()
    truth[30] = 2000  # some other face vertex stands for the nose tip
    points, cams, p_id, p_exp = _photos_of(face_model, truth, 6, rng)
    candidates = [np.unique(np.r_[truth[l], face_model.landmarks68[l], np.arange(l * 50, l * 50 + 40)])
                  for l in range(68)]
    costs = landmark_costs(face_model, points, cams, p_id, p_exp, candidates, np.ones((68, 6), bool))
    for l, (c, cand) in enumerate(zip(costs, candidates)):
        assert cand[np.argmin(c)] == truth[l]
        assert c.min() < 1e-10
        assert np.sort(c)[1] > 1e-7
    assert costs[30][candidates[30] == face_model.landmarks68[30]][0] > 1e-5


def test_learning_recovers_moved_vertices(face_model, rng):
    """Annotations made at vertices a few millimetres from ICT's are traced back to those vertices."""
    from dffx.synth.landmark_learning import learn_landmark_vertices

    mean = face_model.mean
    truth = np.asarray(face_model.landmarks68).copy()
    for l in (19, 24, 33, 48, 54):  # brows, nose, mouth corners: move each to a vertex 0.5-0.9 cm away
        d = np.linalg.norm(mean - mean[truth[l]], axis=1)
        truth[l] = np.flatnonzero((d > 0.5) & (d < 0.9))[0]
    points, *_ = _photos_of(face_model, truth, 40, rng)
    learned, log = learn_landmark_vertices(face_model, points, rounds=2, progress=False)
    moved = [19, 24, 33, 48, 54]
    err = np.linalg.norm(mean[learned[moved]] - mean[truth[moved]], axis=1)
    assert err.max() < 0.3, err  # cm: within a vertex or two of the truth (the fit absorbs a little)
    start_err = np.linalg.norm(mean[face_model.landmarks68[moved]] - mean[truth[moved]], axis=1)
    assert np.all(err < start_err)
    assert log[-1]["rms_nme_after"] <= log[0]["rms_nme_before"]


def test_learning_rejects_bad_annotations(face_model):
    from dffx.synth.landmark_learning import learn_landmark_vertices

    with pytest.raises(ValueError, match="68, 2"):
        learn_landmark_vertices(face_model, np.zeros((3, 21, 2)), progress=False)
    with pytest.raises(ValueError, match="finite"):
        learn_landmark_vertices(face_model, np.full((2, 68, 2), np.nan), progress=False)


def test_model_with_other_landmarks(face_model):
    from dffx.model.annotated_landmarks import with_landmarks68

    idx = np.asarray(face_model.landmarks68).copy()
    idx[8] = 100
    other = with_landmarks68(face_model, idx)
    assert other.landmarks68[8] == 100 and face_model.landmarks68[8] != 100
    assert np.array_equal(other.landmarks160[:68], idx)
    assert np.array_equal(other.landmarks160[68:], face_model.landmarks160[68:])
    assert other.mean is face_model.mean and other.identity_basis is face_model.identity_basis
    mean68, _, _ = other.landmark_model()
    assert np.allclose(mean68[8], face_model.mean[100])
    assert with_landmarks68(face_model, face_model.landmarks68) is face_model
    with pytest.raises(ValueError, match="68 vertex indices"):
        with_landmarks68(face_model, idx[:60])
    with pytest.raises(ValueError, match="68 vertex indices"):
        with_landmarks68(face_model, np.full(68, face_model.n_vertices))


def test_shipped_landmarks_and_conventions(face_model, tmp_path):
    from dffx.model.annotated_landmarks import SHIPPED_FILE, annotated_landmarks68, model_for_convention

    idx = annotated_landmarks68()
    record = json.loads(SHIPPED_FILE.read_text())
    assert idx.shape == (68,) and idx.max() < face_model.n_vertices and len(np.unique(idx)) == 68
    assert record["ict_landmarks68"] == np.asarray(face_model.landmarks68).tolist()
    # learned points stay near ICT's (the same anatomical point, another convention)
    moved = np.linalg.norm(face_model.mean[idx] - face_model.mean[face_model.landmarks68], axis=1)
    assert np.allclose(moved, record["moved_cm"], atol=1e-3) and moved.max() <= record["settings"]["radius_cm"]
    assert model_for_convention(face_model, "ict") is face_model
    assert np.array_equal(model_for_convention(face_model, "300w").landmarks68, idx)
    with pytest.raises(ValueError, match="convention"):
        model_for_convention(face_model, "bfm")
    with pytest.raises(FileNotFoundError, match="learn_landmarks"):
        annotated_landmarks68(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"landmarks68": [1, 2]}')
    with pytest.raises(ValueError, match="68 vertex indices"):
        annotated_landmarks68(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a landmark file"):
        annotated_landmarks68(tmp_path / "broken.json")


def test_cascade_binds_its_landmarks(face_model, tmp_path):
    """A cascade regresses the landmarks it was trained on, saved with it; files without them use the model's."""
    from dffx.align import Cascade
    from dffx.align.cascade import update_geometry, CascadeState
    from dffx.model.annotated_landmarks import annotated_landmarks68

    idx = annotated_landmarks68()
    K, D = 1, 4
    cascade = Cascade(features="dff", mean_camera=np.array([5.0, 0, 0, 0, 112, 112]),
                      R_X=np.zeros((K, D + 1, 136), np.float32), R_w=np.zeros((K, D + 1, 6), np.float32),
                      landmarks68=idx)
    path = cascade.save(tmp_path / "c.npz")
    loaded = Cascade.load(path)
    assert np.array_equal(loaded.landmarks68, idx)
    bound = loaded.bind(face_model)
    assert loaded.bind(face_model) is bound and np.array_equal(bound.landmarks68, idx)
    state = update_geometry(bound, CascadeState(loaded.mean_camera[None], np.zeros((1, face_model.n_params), np.float32)))
    from dffx import project

    expected = project(face_model.mean, loaded.mean_camera)[idx, :2]
    assert np.allclose(state.X[0], expected, atol=1e-4)
    legacy = Cascade(features="dff", mean_camera=cascade.mean_camera, R_X=cascade.R_X, R_w=cascade.R_w)
    assert Cascade.load(legacy.save(tmp_path / "old.npz")).bind(face_model) is face_model
