"""Face profiling: the photo's own context turned with the head (dffx.synth.context)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import SHARED

PHOTO = SHARED / "data" / "300w-train" / "helen_trainset"


@pytest.fixture(scope="module")
def fitted(face_model):
    from dffx.data import read_pts
    from dffx.synth import Synthesizer
    from dffx.synth.fit import fit_photo

    jpg = sorted(PHOTO.glob("*.jpg"))[3]
    image = cv2.imread(str(jpg))
    fit = fit_photo(face_model, read_pts(jpg.with_suffix(".pts")))
    synth = Synthesizer(face_model, 224, context=True)
    return image, fit, synth, synth.prepare(image, fit.camera, fit.p_id, fit.p_exp)


def test_context_mesh_surrounds_the_face(fitted):
    """Anchors lie in the photo, none inside the face; no triangle's centroid is on the face; head
    anchors are nearer the viewer than background ones."""
    image, fit, synth, src = fitted
    ctx = src.context
    h, w = image.shape[:2]
    assert ctx.source_xy.min() >= 0 and ctx.source_xy[:, 0].max() <= w - 1 and ctx.source_xy[:, 1].max() <= h - 1
    face = np.isfinite(src.depth)
    centroids = np.round(ctx.source_xy[ctx.triangles].mean(axis=1)).astype(int)
    assert not face[centroids[:, 1], centroids[:, 0]].any()
    assert ctx.background.any() and (~ctx.background).any()
    # the head anchors' depth in the photo lies between the background's and the face's front
    from dffx import project

    depth = project(ctx.head_points, fit.camera)[:, 2]
    assert depth[~ctx.background].min() > depth[ctx.background].max()
    assert depth[~ctx.background].max() <= src.depth[face].max() + 1e-3


def test_context_at_the_photo_camera_is_the_photo(fitted):
    """Rendered by the photo's own camera, every anchor lands where it was taken from, so the
    context layer reproduces the photo (away from the face, which is drawn over it)."""
    from dffx.synth.context import render_context

    image, fit, _, src = fitted
    h, w = image.shape[:2]
    side = min(h, w)
    out = render_context(image[:side, :side], src.context, fit.camera, side)
    face = np.isfinite(src.depth[:side, :side])
    ring = cv2.dilate(face.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    diff = np.abs(out.astype(int) - image[:side, :side].astype(int)).max(axis=2)
    assert np.median(diff[~ring]) <= 1
    assert np.mean(diff[~ring] > 8) < 0.01


def test_turned_view_keeps_the_head_around_the_face(fitted, face_model):
    """At 60 degrees of yaw the render is a full picture: the face over its own context, no
    pasted background, the labels of the face unchanged by the context."""
    from dffx.synth import sample_view

    image, fit, synth, src = fitted
    rng = np.random.default_rng(5)
    view = sample_view(rng, face_model.n_expression, fit.p_exp)
    view.yaw, view.pitch, view.roll, view.light_strength = np.radians(60.0), 0.0, 0.0, 0.0
    sample = synth.render(src, view, None, np.random.default_rng(6))
    assert sample.image.shape == (224, 224, 3)
    off_face = sample.triangle_id < 0
    # the context is the photo's: its colours, not the grey of an empty layer
    assert sample.image[off_face].std() > 10
    plain = type(synth)(face_model, 224)
    src_plain = plain.prepare(image, fit.camera, fit.p_id, fit.p_exp)
    grey = np.full((224, 224, 3), 128, np.uint8)
    reference = plain.render(src_plain, view, grey, np.random.default_rng(6))
    assert np.array_equal(reference.triangle_id, sample.triangle_id)
    assert np.allclose(reference.landmarks68, sample.landmarks68)
    with pytest.raises(ValueError, match="background"):
        plain.render(src_plain, view, None, rng)
