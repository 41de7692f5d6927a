"""The canonical inference crop against its NumPy twin and analytic expectations."""

import cv2
import numpy as np
import pytest

from conftest import SHARED
from dffx.preprocess import CROP_SCALE, crop_face, crop_face_reference, crop_to_image, crop_transform


def test_box_centre_goes_to_crop_centre_and_round_trips():
    box = np.array([100.0, 40.0, 220.0, 200.0])
    M = crop_transform(box, 224)
    centre = M @ np.array([160.0, 120.0, 1.0])
    np.testing.assert_allclose(centre, [111.5, 111.5])
    assert M[0, 0] == pytest.approx(224 / (CROP_SCALE * 160))  # the longer side sets the scale
    pts = np.random.default_rng(0).uniform(0, 300, (10, 2))
    np.testing.assert_allclose(crop_to_image((M[:, :2] @ pts.T).T + M[:, 2], M), pts, atol=1e-9)


def test_crop_matches_twin_on_a_real_photo():
    image = cv2.imread(str(SHARED / "data" / "dev" / "aflw2000-3d-sample" / "image00050.jpg"))
    for box in ([150, 160, 310, 370], [-50, -20, 200, 180], [400, 400, 520, 500]):  # inside, over the edges
        crop, _ = crop_face(image, box)
        ref = crop_face_reference(image, box)
        assert crop.shape == ref.shape == (224, 224, 3)
        diff = np.abs(crop.astype(int) - ref.astype(int))
        assert np.percentile(diff, 99) <= 1 and diff.max() <= 6  # OpenCV: 1/32 fixed-point weights


def test_crop_of_a_gradient_is_analytic():
    xs = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    crop, M = crop_face(xs, [64, 64, 192, 192], size=64, scale=1.0)
    expected = crop_to_image(np.stack(np.meshgrid(np.arange(64.0), np.arange(64.0)), -1), M)[..., 0]
    np.testing.assert_allclose(crop, expected, atol=1.0)


@pytest.mark.parametrize("image, box, match", [
    (np.zeros((0, 0, 3), np.uint8), [0, 0, 10, 10], "empty"),
    (np.zeros((10, 10, 3), np.float32), [0, 0, 5, 5], "uint8"),
    (np.zeros((10, 10, 3), np.uint8), [5, 5, 5, 9], "positive size"),
    (np.zeros((10, 10, 3), np.uint8), [0, 0, np.nan, 9], "positive size"),
])
def test_bad_input(image, box, match):
    with pytest.raises(ValueError, match=match):
        crop_face(image, box)
