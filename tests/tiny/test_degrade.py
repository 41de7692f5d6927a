"""dffx.tiny.degrade: tiny faces made from large ones, and their high-resolution crops."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED
from dffx.preprocess import CROP_SCALE, crop_transform
from dffx.tiny.degrade import Degradation, make_pair, sample_degradation, shrink_to_face_size

CLEAN = Degradation()  # area downscaling, nothing else


def _dots(points, shape=(400, 500)) -> np.ndarray:
    """A black image with a 5 x 5 white square centred on each (integer) point."""
    image = np.zeros((*shape, 3), np.uint8)
    for x, y in np.asarray(points, int):
        image[y - 2:y + 3, x - 2:x + 3] = 255
    return image


def _centroid(image: np.ndarray, near, radius: float) -> np.ndarray:
    """Intensity-weighted centre of the pixels within ``radius`` of ``near`` (x, y)."""
    grey = image.astype(np.float64).mean(axis=2)
    ys, xs = np.mgrid[0:grey.shape[0], 0:grey.shape[1]]
    w = grey * (np.hypot(xs - near[0], ys - near[1]) <= radius)
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def test_the_landmarks_follow_the_face_into_both_crops():
    """Bright dots at the landmarks land where the pair says, in the tiny crop and the large one;
    the two crops share the canonical frame: hr = 4 lr + 1.5 (pixel centres at integers)."""
    points = np.array([[200, 150], [300, 150], [250, 230]], np.float64)
    box = np.array([170, 120, 330, 260], np.float64)  # 160 px wide
    pair = make_pair(_dots(points), box, points, face_size=40, rng=np.random.default_rng(0), degradation=CLEAN)
    assert pair.lr.shape == (32, 32, 3) and pair.hr.shape == (128, 128, 3) and pair.face_size == 40
    np.testing.assert_allclose(pair.landmarks_hr, 4 * pair.landmarks_lr + 1.5, atol=1e-3)
    M = crop_transform(box, 128)
    np.testing.assert_allclose(pair.landmarks_hr, points @ M[:, :2].T + M[:, 2], atol=1e-3)
    for k in range(3):
        np.testing.assert_allclose(_centroid(pair.hr, pair.landmarks_hr[k], 6), pair.landmarks_hr[k], atol=0.3)
        np.testing.assert_allclose(_centroid(pair.lr, pair.landmarks_lr[k], 3), pair.landmarks_lr[k], atol=0.25)


def test_the_face_box_is_face_size_pixels_in_the_small_photo():
    image = np.full((300, 300, 3), 128, np.uint8)
    box = np.array([100, 90, 200, 210], np.float64)  # 120 px tall: the longer side
    for face_size in (16, 24.5, 32):
        small, M = shrink_to_face_size(image, box, face_size, CLEAN)
        corners = np.asarray(box).reshape(2, 2) @ M[:, :2].T + M[:, 2]
        assert abs((corners[1, 1] - corners[0, 1]) - face_size) < 0.5
        # only the region the crop needs is kept: 2 x CROP_SCALE box sides at most
        assert max(small.shape[:2]) <= 2 * CROP_SCALE * face_size + 2
        assert (small == 128).all()  # a flat image stays flat under area downscaling


def test_noise_blur_and_jpeg_do_what_they_say():
    rng = np.random.default_rng(1)
    image = np.full((400, 400, 3), 100, np.uint8)
    box = [100, 100, 300, 300]
    noisy, _ = shrink_to_face_size(image, box, 64, Degradation(noise_sigma=6.0), rng)
    assert abs(noisy.astype(np.float64).std() - 6.0) < 0.4 and abs(noisy.mean() - 100) < 0.5
    edge = image.copy()
    edge[:, 200:] = 200
    sharp, _ = shrink_to_face_size(edge, box, 64, CLEAN)
    blurred, _ = shrink_to_face_size(edge, box, 64, Degradation(blur_sigma=1.5))
    transition = lambda im: int(((im[:, :, 0] > 110) & (im[:, :, 0] < 190)).sum())  # noqa: E731
    assert transition(blurred) > 2 * transition(sharp)
    ramp = np.tile(np.linspace(0, 255, 400).astype(np.uint8)[None, :, None], (400, 1, 3))
    ramp[::7] = 0  # detail for the codec to lose
    clean, _ = shrink_to_face_size(ramp, box, 64, CLEAN)
    jpeg, _ = shrink_to_face_size(ramp, box, 64, Degradation(jpeg_quality=30))
    assert 0 < np.abs(clean.astype(int) - jpeg.astype(int)).mean() < 20


def test_sampled_degradations_cover_every_kind():
    rng = np.random.default_rng(2)
    drawn = [sample_degradation(rng) for _ in range(200)]
    assert {d.interpolation for d in drawn} == {"area", "bicubic"}
    assert 0.35 < np.mean([d.blur_sigma > 0 for d in drawn]) < 0.65
    assert 0.35 < np.mean([d.jpeg_quality > 0 for d in drawn]) < 0.65
    assert all(0 <= d.noise_sigma <= 8 and (d.jpeg_quality == 0 or 30 <= d.jpeg_quality <= 90) for d in drawn)


def test_bad_requests_are_named():
    image = np.zeros((100, 100, 3), np.uint8)
    box = [20, 20, 60, 60]
    with pytest.raises(ValueError, match="face_size must be in"):
        shrink_to_face_size(image, box, 41, CLEAN)
    with pytest.raises(ValueError, match="interpolation"):
        shrink_to_face_size(image, box, 16, Degradation(interpolation="nearest"))
    with pytest.raises(ValueError, match="noise needs an rng"):
        shrink_to_face_size(image, box, 16, Degradation(noise_sigma=2.0))
    with pytest.raises(ValueError, match="uint8"):
        shrink_to_face_size(image.astype(np.float32), box, 16, CLEAN)
    with pytest.raises(ValueError):
        shrink_to_face_size(image, [60, 20, 20, 60], 16, CLEAN)  # an empty box


def test_a_real_face_made_tiny_keeps_its_landmarks_in_the_crop():
    """A 300-W training photo at 16 px: the landmarks span the box's share of the 32-px crop (the
    crop is CROP_SCALE box sides), and the tiny crop is its large crop shrunk."""
    import cv2

    from dffx.data.ibug import landmark_box, load_300w

    (sample,), _ = load_300w(SHARED / "data" / "300w-train", limit=1)
    box = landmark_box(sample.landmarks)
    pair = make_pair(sample.load_image(), box, sample.landmarks, 16, np.random.default_rng(3), degradation=CLEAN)
    span = pair.landmarks_lr.max(0) - pair.landmarks_lr.min(0)
    assert abs(span.max() - 32 / CROP_SCALE) < 0.5 and (pair.landmarks_lr >= 0).all() and (pair.landmarks_lr < 32).all()
    shrunk = cv2.resize(pair.hr, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    assert np.abs(shrunk - pair.lr).mean() < 12  # the same face, up to the 16-px resampling
