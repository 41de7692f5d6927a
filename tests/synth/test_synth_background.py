"""Backgrounds of synthesized samples (dffx.synth.background): crops beside the annotated face."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHARED

PHOTOS = SHARED / "data" / "300w-train"


def _points_in_box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """68 points spread over the box (x0, y0, x1, y1): only their box matters here."""
    rng = np.random.default_rng(0)
    points = rng.uniform([x0, y0], [x1, y1], size=(68, 2))
    points[0], points[1] = (x0, y0), (x1, y1)
    return points


def test_head_box_grows_the_landmark_box():
    from dffx.synth.background import head_box

    box = head_box(_points_in_box(100, 200, 200, 300))
    np.testing.assert_allclose(box, [75, 160, 225, 315])
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        head_box(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="finite"):
        head_box(np.full((68, 2), np.nan))


def test_crops_never_show_the_head_region():
    """A photo whose head region is pure red: no crop, at any seed or face position, shows red."""
    from dffx.synth.background import face_free_background, head_box

    size = 64
    for seed in range(200):
        rng = np.random.default_rng(seed)
        height, width = rng.integers(120, 400, size=2)
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        half = rng.uniform(0.1, 0.25) * min(height, width)
        points = _points_in_box(cx - half, cy - half, cx + half, cy + half)
        photo = np.zeros((height, width, 3), np.uint8)
        photo[..., 0] = np.arange(width) % 200           # blue/green texture, never red
        photo[..., 1] = (np.arange(height) % 150)[:, None]
        x0, y0, x1, y1 = head_box(points)
        photo[max(int(y0), 0):max(int(np.ceil(y1)), 0), max(int(x0), 0):max(int(np.ceil(x1)), 0)] = (0, 0, 255)
        crop = face_free_background(photo, points, size, rng)
        assert crop is not None and crop.shape == (size, size, 3) and crop.dtype == np.uint8
        assert crop[..., 2].max() == 0, f"seed {seed}: the crop shows the head region"


def test_no_crop_when_the_face_fills_the_photo():
    from dffx.synth.background import face_free_background

    photo = np.full((100, 100, 3), 128, np.uint8)
    assert face_free_background(photo, _points_in_box(10, 20, 90, 85), 64, np.random.default_rng(0)) is None


def test_face_free_crops_of_real_photos_hold_no_detectable_face():
    """On real 300-W photos MTCNN finds a face in many random crops and in almost no face-free crop."""
    import cv2

    from dffx.data import load_300w
    from dffx.detect import detect_faces
    from dffx.synth.background import face_free_background, random_background

    samples, _ = load_300w(PHOTOS / "afw")
    rng = np.random.default_rng(0)
    with_face = {"random": 0, "face-free": 0}
    photos = samples[::8][:30]
    for sample in photos:
        photo = cv2.imread(str(sample.image_path))
        with_face["random"] += len(detect_faces(random_background(photo, 224, rng), min_size=20)) > 0
        crop = face_free_background(photo, sample.landmarks, 224, rng)
        with_face["face-free"] += crop is not None and len(detect_faces(crop, min_size=20)) > 0
    assert with_face["random"] >= 0.25 * len(photos), with_face
    assert with_face["face-free"] <= 0.07 * len(photos), with_face


def test_old_sets_resume_as_background_any(tmp_path, ict_dir):
    """A manifest written before the background setting existed reads as ``background="any"``, and one
    written before 2026-12-06 as ICT's landmarks without mirror images or original views."""
    from test_synth import _copy_photos

    from dffx.synth import SynthConfig, synthesize

    photos = _copy_photos(tmp_path / "photos", 3)
    config = SynthConfig(photos=str(photos), out=str(tmp_path / "set"), views=4, shard_size=4, workers=1,
                         background="any", landmarks="ict", mirror_photos=False, model=str(ict_dir), progress=False)
    assert config.original_views == 0.0
    synthesize(config)
    manifest_path = tmp_path / "set" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for key in ("background", "landmarks", "mirror_photos", "original_views"):
        del manifest["settings"][key]
    manifest_path.write_text(json.dumps(manifest))
    assert synthesize(config)["rendered_now"] == 0
    with pytest.raises(ValueError, match="other settings"):
        synthesize(SynthConfig(**{**config.__dict__, "background": "no-face"}))
    with pytest.raises(ValueError, match="background must be one of"):
        synthesize(SynthConfig(**{**config.__dict__, "background": "grey"}))
