"""Regularised least-squares shape fit (eq. 6-8) and the shared-shape fit (eq. 11):
recovery of known parameters, smooth degradation with noise, agreement with the twin."""

import numpy as np
import pytest

import dffx
from dffx.ops import _reference as ref


def random_camera(rng, yaw=None):
    yaw = rng.uniform(-1.2, 1.2) if yaw is None else yaw
    return np.array([rng.uniform(4, 8), rng.uniform(-0.4, 0.4), yaw, rng.uniform(-0.3, 0.3),
                     rng.uniform(80, 140), rng.uniform(80, 140)])


def landmarks_of(model_tuple, p, camera):
    mean, basis, _ = model_tuple
    return dffx.project(mean + basis @ p, camera)[:, :2]


def small_model(face_model, n_id=10, n_exp=10):
    """The 160-landmark model restricted to a few modes: identifiable from one view."""
    mean, basis, prior = face_model.landmark_model(face_model.landmarks160)
    cols = np.r_[np.arange(n_id), face_model.n_identity + np.arange(n_exp)]
    return mean, np.ascontiguousarray(basis[:, :, cols]), np.ascontiguousarray(prior[cols])


def test_recovers_known_parameters_from_noise_free_landmarks(face_model, rng):
    model = small_model(face_model)
    for _ in range(5):
        p_true = np.r_[rng.normal(size=10), rng.uniform(0, 1, 10)]
        cam = random_camera(rng)
        p = dffx.fit_shape(model, landmarks_of(model, p_true, cam), cam, w_reg=1e-9)
        np.testing.assert_allclose(p, p_true, atol=1e-3)


def test_full_model_reproduces_targets_and_shared_fit_recovers_parameters(face_model, rng):
    p_true = np.r_[rng.normal(size=80), rng.uniform(0, 0.6, 55)]
    model = face_model.landmark_model(face_model.landmarks160)
    cams = np.stack([random_camera(rng, yaw) for yaw in (-1.2, -0.6, 0.0, 0.6, 1.2)])
    targets = np.stack([landmarks_of(model, p_true, c) for c in cams])
    # one view: the landmarks are reproduced (the problem is under-determined along depth)
    p_one = dffx.fit_shape(face_model, targets[2], cams[2], landmark_index=face_model.landmarks160, w_reg=1e-6)
    np.testing.assert_allclose(landmarks_of(model, p_one, cams[2]), targets[2], atol=0.05)
    # five views with one shared shape (eq. 11): the parameters themselves are recovered
    p_shared = dffx.fit_shared_shape(face_model, targets, cams, landmark_index=face_model.landmarks160, w_reg=1e-6)
    np.testing.assert_allclose(p_shared, p_true, atol=0.05)


def test_degrades_smoothly_with_noise(face_model):
    model = small_model(face_model)
    rng = np.random.default_rng(7)
    p_true = np.r_[rng.normal(size=10), rng.uniform(0, 1, 10)]
    cams = np.stack([random_camera(rng) for _ in range(200)])
    clean = np.stack([landmarks_of(model, p_true, c) for c in cams])
    noise = rng.normal(size=clean.shape)
    errors, reproj = [], []
    for sigma in (0.25, 0.5, 1.0, 2.0, 4.0):
        p = dffx.fit_shape(model, clean + sigma * noise, cams, w_reg=1e-6)
        errors.append(np.sqrt(((p - p_true) ** 2).mean()))
        reproj.append(np.mean([np.sqrt(((landmarks_of(model, pb, c) - t) ** 2).sum(1)).mean()
                               for pb, c, t in zip(p, cams, clean)]))
    errors, reproj = np.array(errors), np.array(reproj)
    assert np.all(np.diff(errors) > 0) and np.all(np.diff(reproj) > 0)
    # linear estimator: the error doubles when the noise doubles
    np.testing.assert_allclose(errors[1:] / errors[:-1], 2.0, rtol=0.1)
    assert np.all(reproj < np.array([0.25, 0.5, 1.0, 2.0, 4.0]))  # projection removes noise


def test_regularisation_shrinks_towards_the_mean(face_model, rng):
    cam = random_camera(rng)
    targets = landmarks_of(face_model.landmark_model(), np.r_[rng.normal(size=80), rng.uniform(0, 1, 55)], cam)
    norms = [np.linalg.norm(dffx.fit_shape(face_model, targets, cam, w_reg=w)) for w in (1e-2, 1, 1e2, 1e4, 1e6)]
    assert np.all(np.diff(norms) < 0) and norms[-1] < 1e-2


def test_landmark_weights_remove_landmarks(face_model, rng):
    model = small_model(face_model)
    cam = random_camera(rng)
    targets = landmarks_of(model, np.r_[rng.normal(size=10), rng.uniform(0, 1, 10)], cam)
    weights = np.ones(160)
    weights[:40] = 0
    corrupted = targets.copy()
    corrupted[:40] += rng.normal(scale=50, size=(40, 2))
    a = dffx.fit_shape(model, targets, cam, landmark_weights=weights)
    b = dffx.fit_shape(model, corrupted, cam, landmark_weights=weights)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_native_matches_twin(face_model, rng):
    mean, basis, prior = face_model.landmark_model()
    B = 6
    targets = rng.uniform(60, 160, (B, 68, 2))
    cams = np.stack([random_camera(rng) for _ in range(B)])
    weights = rng.uniform(0, 1, (B, 68))
    for w_lan, w_reg in ((1.0, 1.0), (0.5, 20.0)):
        got = dffx.fit_shape(face_model, targets, cams, landmark_weights=weights, w_lan=w_lan, w_reg=w_reg)
        want = ref.fit_shape_reference(mean, basis, prior, targets, weights, cams, w_lan, w_reg)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        got = dffx.fit_shared_shape(face_model, targets, cams, landmark_weights=weights, w_lan=w_lan, w_reg=w_reg)
        want = ref.fit_shared_shape_reference(mean, basis, prior, targets, weights, cams, w_lan, w_reg)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # threads change nothing
    np.testing.assert_array_equal(dffx.fit_shape(face_model, targets, cams, threads=1),
                                  dffx.fit_shape(face_model, targets, cams, threads=4))


def test_shared_fit_of_identical_images_equals_single_fit(face_model, rng):
    cam = random_camera(rng)
    targets = rng.uniform(60, 160, (68, 2))
    single = dffx.fit_shape(face_model, targets, cam)
    shared = dffx.fit_shared_shape(face_model, np.stack([targets] * 4), np.stack([cam] * 4))
    np.testing.assert_allclose(shared, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(targets=np.zeros((67, 2))), "targets must have shape"),
    (dict(targets=np.full((68, 2), np.nan)), "NaN"),
    (dict(cameras=np.ones(5)), "last dimension 6"),
    (dict(cameras=np.ones((2, 6))), "batch"),
    (dict(landmark_weights=-np.ones(68)), ">= 0"),
    (dict(landmark_weights=np.ones(60)), "entries per face"),
    (dict(w_lan=0.0), "landmark weight"),
    (dict(w_reg=-1.0), "regularization"),
])
def test_bad_input_raises_value_error(face_model, kwargs, match):
    args = dict(targets=np.full((68, 2), 100.0), cameras=np.array([5, 0, 0, 0, 100, 100.0]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        dffx.fit_shape(face_model, args.pop("targets"), args.pop("cameras"), **args)


def test_singular_problem_is_reported(face_model):
    mean, basis, prior = face_model.landmark_model()
    tiny = (mean[:2], basis[:2], prior)  # 4 equations, 135 unknowns, no prior
    with pytest.raises(ValueError, match="singular"):
        dffx.fit_shape(tiny, np.zeros((2, 2)), np.array([5, 0, 0, 0, 0, 0.0]), w_reg=0.0)
