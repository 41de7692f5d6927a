"""End-to-end latency per face, stage by stage, each against its reference in the same run.

Stages of the alignment pipeline (paper Sec. III-C) that exist today:

* ``latency-preprocess``: face box -> canonical 224x224 crop (``dffx.preprocess.crop_face``,
  OpenCV) vs the NumPy twin ``crop_face_reference``;
* ``latency-iteration-geometry``: the geometry of one cascade iteration at 224x224 -- shape
  S(p) (eq. 3), projection (eq. 2), visibility of the 160 landmarks (depth only where the test
  reads it, as the cascade does), shape fit to 68 targets (eq. 6-8) -- with the native kernels
  vs the NumPy twins (full depth buffer, then the test);
* ``latency-mean-shape``: the ``mean-shape`` predictor of ``dffx eval`` on one face;
* ``latency-align``: ``FaceAligner.align`` with a given box (crop, DFF extraction, three cascade
  iterations, mesh and pose out) vs the same with NumPy's BLAS free to use every core inside the
  cascade, which its spinning worker threads made 3x slower on a 2-core CPU
  (docs/experiments/2026-12-03-latency.md), vs the network in bfloat16 (``precision="bfloat16"``,
  whose landmarks must stay within 3% of the face size of the float32 ones), and vs mirror
  averaging (``mirror=True``: the face aligned twice, within 3% of the plain result); all
  single-pass (``refine=0``), the paper's pipeline;
* ``latency-refine``: ``FaceAligner.align`` with one re-crop pass (``refine=1``: the cascade
  twice and the alignment score) for every face, vs the default that skips it for faces whose
  box has converged (``converged_iou=0.85``), vs the single pass; on the portrait's given box
  and on the MTCNN boxes of the dlib group photo (six faces);
* ``latency-video``: a 10-frame clip of the portrait moving, turning and zooming, aligned with
  ``FaceTracker.update`` (each face starts from its previous landmarks; the detector runs on the
  first frame only) vs detecting and aligning every frame (``FaceAligner.align``), both with the
  default passes; both must find the face in every frame;
* ``cascade-batch``: ``dffx::Cascade::run`` on the DFF maps of 24 AFLW faces in one call, stage
  by stage (every face's update, then all meshes in one pass over the shape basis), vs the same
  faces one per call on two threads (how a batch ran until 2026-12-08); the results are
  identical to the bit;
* ``latency-detect``: face detection on two photos (a 450x450 AFLW2000-3D face, a 500x332 dlib
  group photo), the default MTCNN vs the Haar cascades; both must find the same faces.

DFF extraction alone is in ``test_bench_dff.py``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import dffx
from dffx.detect import box_iou
from dffx.eval.metrics import nme_box
from dffx.eval import MeanShapePredictor
from dffx.ops import _reference
from dffx.preprocess import crop_face, crop_face_reference

from conftest import REPO_ROOT

PHOTO = REPO_ROOT.parent / "shared" / "data" / "dev" / "aflw2000-3d-sample" / "image00050.jpg"
BOX = np.array([150.0, 160.0, 310.0, 370.0])


@pytest.fixture(scope="module")
def photo():
    image = cv2.imread(str(PHOTO))
    if image is None:
        pytest.skip(f"sample photo not found: {PHOTO}")
    return image


@pytest.mark.benchmark(group="latency-preprocess")
def test_preprocess_opencv(benchmark, photo):
    crop, _ = benchmark(crop_face, photo, BOX)
    assert np.percentile(np.abs(crop.astype(int) - crop_face_reference(photo, BOX).astype(int)), 99) <= 1


@pytest.mark.benchmark(group="latency-preprocess")
def test_preprocess_reference(benchmark, photo):
    crop = benchmark(crop_face_reference, photo, BOX)
    assert crop.shape == (224, 224, 3)


def _iteration_inputs(model):
    rng = np.random.default_rng(3)
    p_id, p_exp = rng.normal(size=model.n_identity), rng.uniform(0, 0.4, model.n_expression)
    camera = np.array([6.5, 0.2, 0.6, -0.1, 111.5, 111.5], np.float32)
    targets = dffx.project(model.mean[model.landmarks68], camera)[:, :2] + rng.normal(size=(68, 2)).astype(np.float32)
    return p_id, p_exp, camera, targets


def _iteration_native(model, p_id, p_exp, camera, targets):
    screen = dffx.project(model.shape(p_id, p_exp), camera)
    visible = dffx.ops.mesh_landmark_visibility(screen, model.triangles, model.landmarks160, 224)
    return visible, dffx.fit_shape(model, targets, camera)


def _iteration_reference(model, landmark_model, p_id, p_exp, camera, targets):
    screen = dffx.project(model.shape(p_id, p_exp), camera)[None]
    depth = _reference.rasterize_reference(screen, model.triangles, 224, 224)[0]
    visible = _reference.landmark_visibility_reference(screen, model.landmarks160, depth, 1.0)[0]
    mean, basis, prior = landmark_model
    return visible, _reference.fit_shape_reference(mean, basis, prior, targets[None], None, camera[None])[0]


@pytest.mark.benchmark(group="latency-iteration-geometry")
def test_iteration_geometry_native(benchmark, face_model):
    args = _iteration_inputs(face_model)
    visible, p = benchmark(_iteration_native, face_model, *args)
    ref_visible, ref_p = _iteration_reference(face_model, face_model.landmark_model(), *args)
    np.testing.assert_array_equal(visible, ref_visible)
    np.testing.assert_allclose(p, ref_p, rtol=1e-3, atol=1e-3)


@pytest.mark.benchmark(group="latency-iteration-geometry")
def test_iteration_geometry_reference(benchmark, face_model):
    args = _iteration_inputs(face_model)
    landmark_model = face_model.landmark_model()
    benchmark.pedantic(_iteration_reference, args=(face_model, landmark_model, *args), rounds=5, iterations=1)


@pytest.mark.benchmark(group="latency-mean-shape")
def test_mean_shape_predictor(benchmark, face_model, photo):
    predictor = MeanShapePredictor(face_model)
    pred = benchmark(predictor.predict, photo, BOX)
    assert pred.landmarks.shape == (68, 2)


@pytest.fixture(scope="module")
def aligner(face_model):
    pytest.importorskip("torch")
    return dffx.FaceAligner("dff", model=face_model, device="cpu", refine=0)


@pytest.fixture(scope="module")
def refining_aligner(face_model):
    pytest.importorskip("torch")
    return dffx.FaceAligner("dff", model=face_model, device="cpu", refine=1, converged_iou=None)


@pytest.fixture(scope="module")
def default_aligner(face_model):
    pytest.importorskip("torch")
    return dffx.FaceAligner("dff", model=face_model, device="cpu")


@pytest.mark.benchmark(group="latency-align")
def test_align_dff(benchmark, aligner, photo):
    faces = benchmark(aligner.align, photo, BOX[None])
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2)


@pytest.mark.benchmark(group="latency-align")
def test_align_dff_multithreaded_blas(benchmark, aligner, photo, monkeypatch):
    import contextlib

    from dffx import _blas

    monkeypatch.setattr(_blas, "single_threaded_blas", contextlib.nullcontext)
    faces = benchmark(aligner.align, photo, BOX[None])
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2)


@pytest.mark.benchmark(group="latency-align")
def test_align_dff_bfloat16(benchmark, face_model, aligner, photo):
    from dffx.nn import cpu_has_native_bfloat16

    benchmark.extra_info["cpu_has_native_bfloat16"] = cpu_has_native_bfloat16()
    fast = dffx.FaceAligner("dff", model=face_model, device="cpu", refine=0, precision="bfloat16")
    faces = benchmark(fast.align, photo, BOX[None])
    exact = aligner.align(photo, BOX[None])
    assert len(faces) == 1 and nme_box(faces[0].landmarks, exact[0].landmarks) < 0.03


@pytest.mark.benchmark(group="latency-align")
def test_align_dff_onnxruntime(benchmark, face_model, aligner, photo):
    pytest.importorskip("onnxruntime")
    on_ort = dffx.FaceAligner("dff", model=face_model, refine=0, backend="onnxruntime")
    faces = benchmark(on_ort.align, photo, BOX[None])
    exact = aligner.align(photo, BOX[None])
    assert len(faces) == 1 and np.abs(faces[0].landmarks - exact[0].landmarks).max() < 0.2


class _GivenMaps:
    """Landmark features whose maps are computed already: the cascade's work without the network."""

    def __init__(self, features, maps):
        self.features, self.maps = features, maps

    def prepare(self, crops):
        return self.maps

    def sample(self, prepared, points, visible):
        return self.features.sample(prepared, points, visible)


@pytest.fixture(scope="module")
def cascade_inputs(aligner, photo, tmp_path_factory):
    """(C++ cascade, Python cascade's features on given maps, crop, maps) for one face."""
    from dffx import _C
    from dffx.align.export import write_cascade_file

    crop = crop_face(photo, BOX)[0][None]
    maps = aligner.features.extractor.extract(crop).numpy()
    path = write_cascade_file(tmp_path_factory.mktemp("cascade") / "cascade.dffx", aligner.model, aligner.cascade)
    return _C.Cascade.load(str(path)), _GivenMaps(aligner.features, maps), crop, maps


@pytest.mark.benchmark(group="cascade-run")
def test_cascade_run_cpp(benchmark, cascade_inputs):
    """dffx::Cascade::run: 3 iterations and the score on one face's DFF maps (no network)."""
    cpp, _, _, maps = cascade_inputs
    result = benchmark(cpp.run, maps)
    assert result["landmarks"].shape == (1, 68, 2)


@pytest.mark.benchmark(group="cascade-run")
def test_cascade_run_cpp_without_camera_refit(benchmark, cascade_inputs):
    """The same without the camera refit after the last stage (dffx.align.camera_refit): what
    the refit costs (about 1 ms per face on a 2-core CPU, docs/experiments/2026-12-04-camera-refit.md)."""
    cpp, _, _, maps = cascade_inputs
    result = benchmark(cpp.run, maps, camera_refit=False)
    assert not np.allclose(result["cameras"], cpp.run(maps)["cameras"])


@pytest.mark.benchmark(group="cascade-run")
def test_cascade_run_python(benchmark, aligner, cascade_inputs):
    """Its twin, the Python loop of dffx.align.Cascade.run (native=False), on the same maps; the
    landmarks agree within 1e-3 px."""
    cpp, given, crop, maps = cascade_inputs
    state = benchmark(aligner.cascade.run, aligner.model, given, crop, native=False)
    assert np.abs(cpp.run(maps)["landmarks"] - state.X).max() < 1e-3


AFLW_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "dev" / "aflw-3ddfa-protocol-sample"


@pytest.fixture(scope="module")
def batch_inputs(aligner, cascade_inputs):
    """(C++ cascade, DFF maps (24, 32, 224, 224)) of the 24 AFLW sample crops resized to 224."""
    names = (AFLW_SAMPLE / "AFLW_GT_crop.list").read_text().split()[:24]
    crops = [cv2.imread(str(AFLW_SAMPLE / "AFLW_GT_crop" / name)) for name in names]
    if any(c is None for c in crops):
        pytest.skip(f"AFLW sample not found: {AFLW_SAMPLE}")
    crops = np.stack([cv2.resize(c, (224, 224), interpolation=cv2.INTER_AREA) for c in crops])
    return cascade_inputs[0], np.ascontiguousarray(aligner.features.extractor.extract(crops).numpy())


@pytest.mark.benchmark(group="cascade-batch")
def test_cascade_batch_stage_by_stage(benchmark, batch_inputs):
    """24 faces in one dffx::Cascade::run call (all cores)."""
    cpp, maps = batch_inputs
    result = benchmark(cpp.run, maps)
    assert result["landmarks"].shape == (24, 68, 2)


@pytest.mark.benchmark(group="cascade-batch")
def test_cascade_batch_face_by_face(benchmark, batch_inputs):
    """The reference: the same faces one per call, two calls at a time on two threads (the GIL is
    released inside), each face's kernels on one thread: the work as the batch did it before."""
    from concurrent.futures import ThreadPoolExecutor

    cpp, maps = batch_inputs
    with ThreadPoolExecutor(2) as pool:
        def one_by_one():
            return list(pool.map(lambda i: cpp.run(maps[i:i + 1], threads=1), range(len(maps))))

        results = benchmark(one_by_one)
    batched = cpp.run(maps)
    for key in ("landmarks", "cameras", "params", "visible", "scores"):
        np.testing.assert_array_equal(np.concatenate([r[key] for r in results]), batched[key], err_msg=key)


def _clip(photo, count: int = 10) -> list:
    """The portrait moved 3 / 2 px, turned 1 deg and zoomed 1.2% per frame (tests/align/test_tracker.py)."""
    h, w = photo.shape[:2]
    frames = []
    for k in range(count):
        M = cv2.getRotationMatrix2D((w / 2, h / 2), 1.0 * k, 1 + 0.012 * k)
        M[:, 2] += (3 * k - 30, 2 * k - 20)
        frames.append(cv2.warpAffine(photo, M, (w, h), borderMode=cv2.BORDER_REPLICATE))
    return frames


@pytest.mark.benchmark(group="latency-video")
@pytest.mark.parametrize("how", ["tracker", "detect-and-align"])
def test_video_clip(benchmark, default_aligner, photo, how):
    frames = _clip(photo)
    tracker = dffx.FaceTracker(default_aligner)

    def track():
        tracker.reset()
        return [tracker.update(frame) for frame in frames]

    def detect_and_align():
        return [default_aligner.align(frame) for frame in frames]

    found = benchmark.pedantic(track if how == "tracker" else detect_and_align, rounds=3, iterations=1,
                               warmup_rounds=1)
    assert [len(faces) for faces in found] == [1] * len(frames)
    if how == "tracker":
        assert tracker.detector_runs == 1


@pytest.mark.benchmark(group="latency-align")
def test_align_dff_mirror(benchmark, face_model, aligner, photo):
    both = dffx.FaceAligner("dff", model=face_model, device="cpu", refine=0, mirror=True)
    faces = benchmark(both.align, photo, BOX[None])
    assert len(faces) == 1 and nme_box(faces[0].landmarks, aligner.align(photo, BOX[None])[0].landmarks) < 0.03


GROUP_PHOTO = REPO_ROOT.parent / "shared" / "data" / "dev" / "dlib-examples" / "2008_002470.jpg"


@pytest.fixture(scope="module", params=["portrait", "group"])
def faces_to_align(request, photo):
    """(image, boxes): the portrait with its given box, or the group photo with its MTCNN boxes."""
    if request.param == "portrait":
        return photo, BOX[None]
    group = cv2.imread(str(GROUP_PHOTO))
    if group is None:
        pytest.skip(f"sample photo not found: {GROUP_PHOTO}")
    return group, dffx.detect_faces(group)[:, :4]


@pytest.mark.benchmark(group="latency-refine")
@pytest.mark.parametrize("passes", ["every-face", "until-converged", "single"])
def test_align_dff_refine(benchmark, passes, faces_to_align, refining_aligner, default_aligner, aligner):
    chosen = {"every-face": refining_aligner, "until-converged": default_aligner, "single": aligner}[passes]
    image, boxes = faces_to_align
    faces = benchmark(chosen.align, image, boxes)
    assert len(faces) == len(boxes) and all(face.score is not None for face in faces)


@pytest.fixture(scope="module")
def detection_photos(photo):
    group = cv2.imread(str(GROUP_PHOTO))
    if group is None:
        pytest.skip(f"sample photo not found: {GROUP_PHOTO}")
    return photo, group


def _detect_both(photos, detector):
    return [dffx.detect_faces(image, detector=detector) for image in photos]


@pytest.mark.benchmark(group="latency-detect")
@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_detect(benchmark, detection_photos, detector):
    face, group = benchmark(_detect_both, detection_photos, detector)
    # One face in the portrait; the group photo's six faces (Haar's threshold drops one).
    assert len(face) == 1 and box_iou(face, BOX)[0] > 0.5
    assert len(group) >= 5
