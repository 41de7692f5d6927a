"""The synth set's source photos as cascade training samples (dffx.align.photo_split, `--photos`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")


def test_a_camera_carried_into_the_crop_projects_where_the_crop_maps_the_image():
    """camera_in_crop projects where the crop transform maps the image; camera_from_crop (a batch)
    carries crop cameras back so that they project where the inverse transform maps the crop."""
    from dffx.geometry.camera import camera_from_crop, camera_in_crop, project

    rng = np.random.default_rng(0)
    points = rng.normal(0, 5, (30, 3))
    camera = np.array([3.1, 0.2, -0.7, 0.1, 210.0, 180.0])
    transform = np.array([[0.6, 0.0, -40.0], [0.0, 0.6, 12.0]])
    in_image = project(points, camera)[:, :2].astype(np.float64)
    in_crop = project(points, camera_in_crop(camera, transform))[:, :2]
    np.testing.assert_allclose(in_crop, in_image * 0.6 + transform[:, 2], atol=1e-3)

    crop_cameras = np.array([[2.0, 0.3, 0.5, -0.2, 100.0, 120.0], [1.5, -0.1, -1.2, 0.4, 90.0, 130.0]])
    transforms = np.array([transform, [[1.7, 0.0, 5.0], [0.0, 1.7, -30.0]]])
    back = camera_from_crop(crop_cameras, transforms)
    for cam, back_cam, M in zip(crop_cameras, back, transforms):
        crop_points = project(points, cam)[:, :2].astype(np.float64)
        np.testing.assert_allclose(project(points, back_cam)[:, :2], (crop_points - M[:, 2]) / M[0, 0], atol=1e-3)
        np.testing.assert_allclose(camera_in_crop(back_cam, M), cam, atol=1e-9)
    assert back.shape == (2, 6) and crop_cameras[0, 0] == 2.0  # the input is not changed


def test_a_camera_carried_into_a_turned_image_projects_where_the_turn_maps_the_image():
    """camera_in_rotated_image: the model points projected with the carried camera land where the
    image rotation (cv2.getRotationMatrix2D, either sense) maps their projection; depth unchanged."""
    from dffx.align.photo_split import camera_in_rotated_image
    from dffx.geometry.camera import project

    rng = np.random.default_rng(2)
    points = rng.normal(0, 5, (30, 3))
    camera = np.array([3.1, 0.2, -0.7, 0.1, 210.0, 180.0])
    for degrees in (25.0, -12.0):
        rotation = cv2.getRotationMatrix2D((150.0, 120.0), degrees, 1.0)
        before = project(points, camera).astype(np.float64)
        after = project(points, camera_in_rotated_image(camera, rotation)).astype(np.float64)
        np.testing.assert_allclose(after[:, :2], before[:, :2] @ rotation[:, :2].T + rotation[:, 2], atol=1e-3)
        np.testing.assert_allclose(after[:, 2], before[:, 2], atol=1e-3)
        # counter-clockwise on screen is a clockwise head roll for the subject: the angles change
        assert not np.allclose(camera_in_rotated_image(camera, rotation)[1:4], camera[1:4])


def test_turned_photos_join_with_labels_turned_alike(tmp_path):
    """rotations=1: each photo twice, the copy turned about its box centre; its landmarks are the
    original's turned (checked against the image: a photo with a white dot at each annotated point
    shows white at each turned landmark of the turned crop), and the angles are reproducible by
    seed; bad settings are named."""
    from dffx.align.photo_split import photo_split
    from dffx.data import load_300w

    photos, data = _fake_set(tmp_path, held_out=(False, True, False, True))
    dots = np.zeros((160, 200, 3), np.uint8)
    for x, y in load_300w(photos)[0][0].landmarks:
        cv2.circle(dots, (int(round(x)), int(round(y))), 2, (255, 255, 255), -1)
    cv2.imwrite(str(photos / "p0.png"), dots)
    plain = photo_split(data, photos, "train")
    turned = photo_split(data, photos, "train", rotations=1, seed=3)
    assert len(turned["landmarks"]) == 2 * len(plain["landmarks"])
    np.testing.assert_array_equal(turned["landmarks"][0], plain["landmarks"][0])  # the original first
    a, b = turned["landmarks"][0], turned["landmarks"][1]  # a photo and its turned copy
    # a rotation keeps distances between points, and their box shrinks or grows only by the turn
    da = np.linalg.norm(a[:, None] - a[None], axis=-1)
    db = np.linalg.norm(b[:, None] - b[None], axis=-1)
    scale = db.max() / da.max()
    np.testing.assert_allclose(db, da * scale, atol=0.05 * da.max())
    assert not np.allclose(a, b, atol=1.0)
    crop = turned["crops"]([1])[0]
    at = np.clip(np.round(b).astype(int), 0, 223)
    assert crop[at[:, 1], at[:, 0]].mean() > 150  # white at the turned landmarks
    assert crop.mean() < 60  # and mostly black elsewhere
    again = photo_split(data, photos, "train", rotations=1, seed=3)
    np.testing.assert_array_equal(again["landmarks"], turned["landmarks"])
    with pytest.raises(ValueError, match="rotations must be an integer >= 0"):
        photo_split(data, photos, "train", rotations=-1)


def _fake_set(tmp_path, held_out=(False, False, True, True)):
    """Two annotated photos and their mirror images, as a synth set names and fits them."""
    photos, data = tmp_path / "photos", tmp_path / "set"
    photos.mkdir()
    data.mkdir()
    rng = np.random.default_rng(1)
    names = []
    for i in range(2):
        image = rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)
        cv2.imwrite(str(photos / f"p{i}.png"), image)
        pts = rng.uniform([60 + 10 * i, 40], [140, 120], (68, 2))
        (photos / f"p{i}.pts").write_text("version: 1\nn_points: 68\n{\n" +
                                          "".join(f"{x + 1:.3f} {y + 1:.3f}\n" for x, y in pts) + "}\n")
        names.append(f"p{i}.png")
    names += [n + "#mirror" for n in names]
    (data / "manifest.json").write_text(json.dumps({"photos": names}))
    cams = np.tile([2.0, 0.0, 0.1, 0.0, 100.0, 80.0], (4, 1))
    np.savez(data / "fits.npz", camera=cams, p_id=np.zeros((4, 80), np.float32),
             p_exp=np.zeros((4, 55), np.float32), held_out=np.array(held_out))
    return photos, data


def test_photos_are_cropped_at_their_box_with_labels_in_the_crop(tmp_path):
    from dffx.align.photo_split import photo_split
    from dffx.data import load_300w
    from dffx.data.ibug import landmark_box, mirror_landmarks
    from dffx.preprocess import crop_face

    photos, data = _fake_set(tmp_path, held_out=(False, True, False, True))
    train = photo_split(data, photos, "train")
    assert train["landmarks"].shape == (2, 68, 2) and train["cameras"].shape == (2, 6)
    assert train["crops"]([0, 1]).shape == (2, 224, 224, 3)
    samples, _ = load_300w(photos)
    image = cv2.imread(str(photos / "p0.png"))
    for j, (img, pts) in enumerate([(image, samples[0].landmarks),
                                    (image[:, ::-1].copy(), mirror_landmarks(samples[0].landmarks, 200))]):
        crop, transform = crop_face(img, landmark_box(pts))
        np.testing.assert_array_equal(train["crops"]([j])[0], crop)
        np.testing.assert_allclose(train["landmarks"][j], pts * transform[0, 0] + transform[:, 2], atol=1e-4)
        assert train["cameras"][j][0] == pytest.approx(2.0 * transform[0, 0])
    assert len(photo_split(data, photos, "val")["landmarks"]) == 2  # p1 and its mirror image


def test_splits_concatenate_and_bad_sets_are_named(tmp_path):
    from dffx.align.photo_split import concat_splits, photo_split

    photos, data = _fake_set(tmp_path)
    a, b = photo_split(data, photos, "train"), photo_split(data, photos, "val")
    both = concat_splits(a, b)
    assert len(both["landmarks"]) == 4
    np.testing.assert_array_equal(both["crops"]([3, 0]), np.stack([b["crops"]([1])[0], a["crops"]([0])[0]]))
    with pytest.raises(ValueError, match="different arrays"):
        concat_splits(a, {**b, "landmarks160": b["landmarks"]})
    with pytest.raises(ValueError, match="split must be"):
        photo_split(data, photos, "test")
    with pytest.raises(FileNotFoundError, match="not a dffx synth output folder"):
        photo_split(photos, photos)
    (photos / "p1.pts").unlink()
    with pytest.raises(FileNotFoundError, match="p1.png: photo or its .pts missing"):
        photo_split(data, photos, "val")
