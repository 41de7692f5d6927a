"""Tiny faces end to end: FaceAligner(tiny=...), super_resolve, dffx eval --face-size."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import SHARED  # noqa: E402
from dffx.align.options import EVAL_DEFAULTS  # noqa: E402
from dffx.eval import EvalOptions, evaluate  # noqa: E402
from dffx.tiny.degrade import Degradation, shrink_to_face_size  # noqa: E402
from dffx.tiny.path import TINY_NETWORK_MAX_FACE_SIZE  # noqa: E402

AFLW24 = SHARED / "data" / "dev" / "aflw-3ddfa-protocol-sample"


@pytest.fixture(scope="module")
def aligner(face_model):
    import dffx

    return dffx.FaceAligner(model=face_model)


def _tiny_faces(face_size: float, count: int = 8):
    """AFLW crops shrunk so that their face box is ``face_size`` px: (image, box, truth 68?) per face."""
    from dffx.data import load_aflw_crops

    samples, _ = load_aflw_crops(AFLW24, limit=count)
    out = []
    for sample in samples:
        image = sample.load_image()
        box = sample.ground_truth_to_image(sample.face_box.reshape(2, 2), image.shape[:2]).reshape(4)
        small, M = shrink_to_face_size(image, box, face_size, Degradation())
        corners = box.reshape(2, 2) @ M[:, :2].T + M[:, 2]
        out.append((small, corners.reshape(4), sample, image, M))
    return out


def test_auto_sends_small_boxes_to_the_tiny_path_with_3d_outputs(aligner, face_model):
    small, box, *_ = _tiny_faces(10, 1)[0]
    aligner.tiny, aligner.tiny_method = "auto", "network"
    (tiny,) = aligner.align(small, box)
    assert tiny.score is None  # the tiny path reads no DFF features
    assert tiny.landmarks.shape == (68, 2) and np.isfinite(tiny.landmarks).all()
    assert tiny.vertices.shape == (face_model.n_vertices, 3) and tiny.visible.dtype == bool
    assert np.isfinite(tiny.camera).all() and set(tiny.pose) == {"pitch", "yaw", "roll"}
    # the landmarks lie on the face: their box overlaps the face box
    lo, hi = tiny.landmarks.min(0), tiny.landmarks.max(0)
    assert (lo > box[:2] - 0.3 * (box[2:] - box[:2])).all() and (hi < box[2:] + 0.3 * (box[2:] - box[:2])).all()
    aligner.tiny = "never"
    (large,) = aligner.align(small, box)
    assert isinstance(large.score, float)
    aligner.tiny = "auto"
    big = np.array([0, 0, 60, 60.0])  # over the threshold: the cascade
    assert isinstance(aligner.align(np.zeros((80, 80, 3), np.uint8), big)[0].score, float)
    aligner.tiny_method = "sr-cascade"  # the cascade's score on the super-resolved face
    (face,) = aligner.align(small, box)
    assert isinstance(face.score, float) and face.landmarks.shape == (68, 2)


def test_auto_method_aligns_the_smallest_faces_with_the_landmark_network(aligner):
    """tiny_method="auto": a 10-px face by the landmark-only network (score None), an 18-px face
    (between TINY_NETWORK_MAX_FACE_SIZE and TINY_MAX_FACE_SIZE) by the cascade on the
    super-resolved face (a score), both in one call and in box order; each face's result is what
    its own way gives alone."""
    (small, small_box, *_), = _tiny_faces(10, 1)
    (large, large_box, *_), = _tiny_faces(18, 1)
    h, w = small.shape[:2]
    canvas = np.zeros((max(h, large.shape[0]), w + large.shape[1], 3), np.uint8)
    canvas[:h, :w] = small
    canvas[:large.shape[0], w:] = large
    boxes = np.stack([large_box + [w, 0, w, 0], small_box])
    aligner.tiny, aligner.tiny_method = "auto", "auto"
    both = aligner.align(canvas, boxes)
    assert isinstance(both[0].score, float) and both[1].score is None
    aligner.tiny_method = "network"
    (alone,) = aligner.align(canvas, small_box)
    np.testing.assert_allclose(both[1].landmarks, alone.landmarks)
    aligner.tiny_method = "sr-cascade"
    (alone,) = aligner.align(canvas, boxes[0])
    np.testing.assert_allclose(both[0].landmarks, alone.landmarks, atol=1e-6)
    assert not aligner.tiny_route.landmark_path.config["sr"]  # the shipped landmark-only network
    aligner.tiny_method = "auto"


def test_the_cascade_on_the_super_resolved_face_beats_it_on_the_upsampled_one(face_model):
    """The 24 AFLW crops shrunk to 16-px faces: the DFF cascade on the tiny network's
    super-resolved face against the cascade on the plain upsampled face (the dev split: -0.28)."""
    means = {}
    for mode, method in (("never", "network"), ("always", "sr-cascade")):
        summary, _ = evaluate(EvalOptions(dataset="aflw", root=AFLW24, method="dff", progress=False, face_size=16,
                                          align=EVAL_DEFAULTS.replace(tiny=mode, tiny_method=method)), face_model)
        means[mode] = summary["mean"]
    assert means["always"] < means["never"], means


def test_super_resolved_faces_beat_bicubic_upsampling(aligner):
    """x4 from 32-px crops of 16 photos (held out from the network's training): higher PSNR."""
    import cv2

    from dffx.preprocess import crop_face

    gains = []
    for small, box, _, image, M in _tiny_faces(24.0, 16):
        sr = aligner.super_resolve(small, box)
        assert sr.shape == (1, 128, 128, 3) and sr.dtype == np.uint8
        full_box = (box.reshape(2, 2) - M[:, 2]) @ np.linalg.inv(M[:, :2]).T
        truth = crop_face(image, full_box.reshape(4), size=128)[0].astype(np.float64)
        bicubic = cv2.resize(crop_face(small, box, size=32)[0], (128, 128), interpolation=cv2.INTER_CUBIC)

        def psnr(a):
            return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - truth) ** 2))

        gains.append(psnr(sr[0]) - psnr(bicubic))
    assert np.mean(gains) > 0.3, gains


def test_super_resolve_and_the_tiny_setting_refuse_bad_input(aligner):
    import dffx

    with pytest.raises(ValueError, match="boxes must have shape"):
        aligner.super_resolve(np.zeros((50, 50, 3), np.uint8), [1, 2, 3])
    with pytest.raises(ValueError, match="tiny must be one of"):
        dffx.AlignOptions(tiny="small")
    with pytest.raises(ValueError, match="tiny_method must be one of"):
        dffx.AlignOptions(tiny_method="bicubic")


def test_face_size_shrinks_the_image_and_maps_the_landmarks_back(face_model):
    """The mean shape depends on the box only: shrinking the image by any factor and mapping the
    prediction back gives the same NME, so --face-size measures what the pixels lose."""
    full, _ = evaluate(EvalOptions(dataset="aflw", root=AFLW24, method="mean-shape", progress=False), face_model)
    small, rows = evaluate(EvalOptions(dataset="aflw", root=AFLW24, method="mean-shape", progress=False,
                                       face_size=16), face_model)
    assert small["face_size"] == 16 and small["face_already_smaller"] == 0
    # equal up to the rounding of the small image's sides (its x and y scales differ by < 1 px)
    assert small["bins"] == pytest.approx(full["bins"], abs=1e-5)
    larger, _ = evaluate(EvalOptions(dataset="aflw", root=AFLW24, method="mean-shape", progress=False,
                                     face_size=1000), face_model)
    assert larger["face_already_smaller"] == 24 and larger["bins"] == pytest.approx(full["bins"], abs=1e-12)
    with pytest.raises(ValueError, match="face_size must be > 0"):
        evaluate(EvalOptions(dataset="aflw", root=AFLW24, method="mean-shape", progress=False, face_size=0),
                 face_model)


def test_the_dff_pipeline_loses_accuracy_on_tiny_faces(face_model):
    """A 10-px face holds less than a 64-px one: the cascade's NME rises as the face shrinks."""
    nme = {}
    for size in (64, 10):
        summary, _ = evaluate(EvalOptions(dataset="aflw", root=AFLW24, method="dff", progress=False, limit=8,
                                          face_size=size, align=EVAL_DEFAULTS.replace(tiny="never")), face_model)
        nme[size] = summary["mean"]
    assert nme[10] > nme[64] + 2.0, nme


def test_detected_tiny_faces_keep_a_score_to_drop_false_detections(face_model):
    """dlib's bald_guys group photo at 1/8 scale (faces of about 10-25 px): with min_score set,
    tiny_method="auto" aligns detected faces the super-resolved way, so each has the cascade's
    score (a false detection can be dropped); without min_score the smallest take the landmark
    network's way, as given boxes do."""
    import cv2

    import dffx

    image = cv2.imread(str(SHARED / "data" / "dev" / "dlib-examples" / "bald_guys.jpg"))
    if image is None:
        pytest.skip("dlib-examples/bald_guys.jpg not found")
    small = cv2.resize(image, None, fx=1 / 8, fy=1 / 8, interpolation=cv2.INTER_AREA)
    aligner = dffx.FaceAligner(model=face_model, min_face_size=12, refine=0)
    scored = aligner.align(small)
    assert len(scored) >= 15 and all(isinstance(face.score, float) for face in scored)
    aligner.min_score = None
    kept = aligner.align(small)
    sides = np.array([max(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in kept])
    assert (sides < TINY_NETWORK_MAX_FACE_SIZE).any()
    assert all((face.score is None) == (side < TINY_NETWORK_MAX_FACE_SIZE) for face, side in zip(kept, sides))
