"""Training-data synthesis (Sec. III-A): photo fits, re-rendering, storage, dataset, CLI."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from conftest import SHARED

PHOTOS = SHARED / "data" / "300w-train"


def _copy_photos(dst, count):
    names = sorted((PHOTOS / "afw").glob("*.jpg"))[:count]
    dst.mkdir(parents=True, exist_ok=True)
    for jpg in names:
        shutil.copy(jpg, dst / jpg.name)
        shutil.copy(jpg.with_suffix(".pts"), dst / (jpg.stem + ".pts"))
    return dst


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    return _copy_photos(tmp_path_factory.mktemp("photos"), 6)


@pytest.fixture(scope="module")
def synth_set(photo_dir, tmp_path_factory, ict_dir):
    from dffx.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("synth")
    summary = synthesize(SynthConfig(photos=str(photo_dir), out=str(out), views=30, shard_size=8, seed=3,
                                     workers=1, holdout_fraction=0.34, model=str(ict_dir), progress=False))
    return out, summary


@pytest.fixture(scope="module")
def synthesizer(face_model):
    from dffx.synth import Synthesizer

    return Synthesizer(face_model, 224)


# ------------------------------------------------------------------ fit
def test_fit_recovers_a_known_face(face_model):
    """Landmarks projected from known parameters and camera are fitted to sub-pixel error."""
    from dffx import project
    from dffx.synth import ContourLines, fit_photo

    rng = np.random.default_rng(0)
    p_id = rng.normal(0, 0.7, face_model.n_identity).astype(np.float32)
    p_exp = np.zeros(face_model.n_expression, np.float32)
    p_exp[[3, 17]] = 0.6
    camera = np.array([9.0, np.radians(8), np.radians(25), np.radians(-5), 240.0, 260.0])
    contour = ContourLines(face_model)
    shape = face_model.shape(p_id, p_exp)
    X = project(shape[contour.select(shape, camera)], camera)[:, :2]
    fit = fit_photo(face_model, X, contour=contour)
    assert fit.rms_px < 1.0
    assert abs(np.degrees(fit.camera[2] - camera[2])) < 2.0
    assert abs(fit.camera[0] / camera[0] - 1) < 0.03
    assert fit.p_exp.min() >= 0 and fit.p_exp.max() <= 1


def test_fixed_vertex_fits_evaluate_the_model_at_the_landmarks_only(face_model):
    """With fixed landmark vertices ("published", "fixed") the fit reads eq. 3 at the 68 vertices
    only: the same points as the full mesh's rows, and the contour strategies that read the mesh
    say so."""
    from dffx.synth.fit import ContourLines, _landmark_points

    rng = np.random.default_rng(1)
    p = np.concatenate([rng.normal(0, 1, face_model.n_identity), rng.uniform(0, 1, face_model.n_expression)])
    p = p.astype(np.float32)
    contour = ContourLines(face_model)
    full = face_model.shape(p[:face_model.n_identity], p[face_model.n_identity:])[contour.fixed]
    np.testing.assert_allclose(_landmark_points(face_model, p, contour.fixed), full, atol=1e-4)
    assert [ContourLines(face_model, m).reads_mesh for m in ("published", "fixed", "march", "weight")] == [
        False, False, True, True]


def test_fit_on_real_photos_predicts_held_out_points(face_model):
    """On real 300W photos, a fit that leaves 12 inner points out predicts them to a few
    percent of the inter-ocular distance, for every jaw strategy (docs/synthesis.md)."""
    from dffx import project
    from dffx.data import load_300w
    from dffx.synth import ContourLines, fit_photo

    samples, _ = load_300w(PHOTOS / "helen_trainset", limit=40)
    for mode in ("march", "fixed", "published", "weight"):
        contour, errors = ContourLines(face_model, mode), []
        for n, s in enumerate(samples):
            out = 17 + np.random.default_rng(n).choice(51, 12, replace=False)
            weights = np.ones(68)
            weights[out] = 0
            fit = fit_photo(face_model, s.landmarks, contour=contour, weights=weights)
            shape = face_model.shape(fit.p_id, fit.p_exp)
            pred = project(shape[fit.landmark_vertices[out]], fit.camera)[:, :2]
            iod = np.linalg.norm(s.landmarks[36] - s.landmarks[45])
            errors.append(np.linalg.norm(pred - s.landmarks[out], axis=1).mean() / iod)
        assert np.mean(errors) < 0.05, mode


def test_contour_strategies_on_a_turned_face(face_model):
    """Yaw 60 deg: marching moves the far-side jaw points towards the nose (the outline), the
    weight strategy drops them, the near side keeps its points."""
    from dffx.synth import ContourLines

    camera = np.array([10.0, 0.0, np.radians(60), 0.0, 200.0, 200.0])
    shape = face_model.mean
    march = ContourLines(face_model, "march").select(shape, camera)
    fixed = ContourLines(face_model, "fixed").select(shape, camera)
    # positive yaw turns the subject's right side (x < 0, iBUG 0-7) away from the camera
    far, near = np.arange(1, 6), np.arange(11, 16)
    assert np.all(shape[march[far], 0] > shape[fixed[far], 0])
    assert np.all(shape[march[far], 0] < -2.0)  # beside the nose, not on it
    weights = ContourLines(face_model, "weight").weights(shape, camera)
    assert weights[far].sum() < len(far) and weights[near].all() and weights[17:].all()


def test_fit_rejects_bad_landmarks(face_model):
    from dffx.synth import fit_photo

    with pytest.raises(ValueError, match="68, 2"):
        fit_photo(face_model, np.zeros((5, 2)))
    bad = np.zeros((68, 2))
    bad[3] = np.nan
    with pytest.raises(ValueError):
        fit_photo(face_model, bad)


# ------------------------------------------------------------------ mesh
def test_mesh_caps_and_mirror(face_model):
    from dffx.synth import SynthMesh

    mesh = SynthMesh(face_model)
    assert len(mesh.hole_loops) == 3  # two eyes and the mouth
    mean = mesh.extend(face_model.mean)
    assert np.allclose(mean[mesh.mirror] * [-1, 1, 1], mean, atol=0.05)
    assert np.array_equal(mesh.mirror[mesh.mirror], np.arange(mesh.n_vertices))
    # caps face the viewer like the rest of the face
    t = mesh.triangles[face_model.triangles.shape[0]:]
    normal_z = np.cross(mean[t[:, 1]] - mean[t[:, 0]], mean[t[:, 2]] - mean[t[:, 0]])[:, 2]
    assert (normal_z > 0).mean() > 0.9
    known = np.zeros(mesh.n_vertices, bool)
    known[mean[:, 0] > 0] = True  # only the left half coloured: the mirror fills the right
    colours = np.where(known[:, None], mean, 0.0)
    filled = mesh.fill_colours(colours, known)
    right = mean[:, 0] < -0.01
    assert np.allclose(filled[right][:, 1:], mean[right][:, 1:], atol=0.06)


# ------------------------------------------------------------------ render
def _source(synthesizer, face_model):
    from dffx.data import load_300w
    from dffx.synth import fit_photo

    sample = load_300w(PHOTOS / "lfpw_trainset", limit=1)[0][0]
    image = cv2.imread(str(sample.image_path))
    fit = fit_photo(face_model, sample.landmarks)
    return synthesizer.prepare(image, fit.camera, fit.p_id, fit.p_exp, 0)


def test_render_stores_consistent_geometry(synthesizer, face_model):
    """Stored landmarks are the stored mesh projected by the stored camera; the label map is
    the rasterized mesh; the face box follows the inference crop convention."""
    from dffx import project, rasterize
    from dffx.preprocess import CROP_SCALE
    from dffx.synth import sample_view

    src = _source(synthesizer, face_model)
    rng = np.random.default_rng(5)
    for _ in range(3):
        view = sample_view(rng, face_model.n_expression, src.p_exp)
        out = synthesizer.render(src, view, np.zeros((224, 224, 3), np.uint8), rng)
        screen = project(face_model.shape(out.p_id, out.p_exp), out.camera)
        np.testing.assert_allclose(out.landmarks68, screen[face_model.landmarks68, :2], atol=1e-3)
        np.testing.assert_allclose(out.landmarks160, screen[face_model.landmarks160, :2], atol=1e-3)
        ids = rasterize(screen, face_model.triangles, 224).triangle_id
        # identical except where a cap (eyes, mouth) covers the face or the face shows through a hole
        assert np.mean(ids == out.triangle_id) > 0.97
        side = (out.landmarks68.max(0) - out.landmarks68.min(0)).max()
        assert 224 / (CROP_SCALE * side) == pytest.approx(view.box_scale, rel=1e-3)
        assert out.image.dtype == np.uint8 and out.image.shape == (224, 224, 3)


def test_same_surface_point_gets_same_patch_label(synthesizer, face_model):
    """Triangle centroids seen in two renders of one face carry the same patch label in both."""
    from dffx import project
    from dffx.segment import label_map, random_segmentations
    from dffx.synth import sample_view

    lut = random_segmentations(face_model.mean, face_model.triangles, count=1, n_patches=100, iterations=3,
                               progress=False)
    src = _source(synthesizer, face_model)
    rng = np.random.default_rng(9)
    renders = []
    for yaw in (-30.0, 35.0):
        view = sample_view(rng, face_model.n_expression, src.p_exp)
        view.yaw, view.pitch, view.roll = np.radians(yaw), 0.0, 0.0
        renders.append(synthesizer.render(src, view, np.zeros((224, 224, 3), np.uint8), rng))
    labels, hits = [], []
    tri = face_model.triangles
    for r in renders:
        screen = project(face_model.shape(r.p_id, r.p_exp), r.camera)
        centre = screen[tri].mean(1)
        px = np.round(centre[:, :2]).astype(int).clip(0, 223)
        hits.append(r.triangle_id[px[:, 1], px[:, 0]] == np.arange(len(tri)))  # centroid seen
        labels.append(label_map(lut[0], r.triangle_id)[px[:, 1], px[:, 0]])
    both = hits[0] & hits[1]
    assert both.sum() > 1000
    assert np.array_equal(labels[0][both], labels[1][both])


# ------------------------------------------------------------------ pipeline, storage, dataset
def test_synth_set_contents(synth_set, face_model):
    import torch

    from dffx.synth import SynthDataset

    out, summary = synth_set
    assert summary["samples"] == 30 and summary["shards"] == 4
    data = SynthDataset(out, "all")
    assert len(data) == 30
    item = data[0]
    assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.float32
    assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    assert item["triangle_id"].dtype == torch.int64 and int(item["triangle_id"].min()) == -1
    assert int(item["triangle_id"].max()) < face_model.triangles.shape[0]
    assert item["landmarks160"].shape == (160, 2) and item["visible160"].dtype == torch.bool
    train, val = SynthDataset(out, "train"), SynthDataset(out, "val")
    assert len(train) + len(val) == 30
    src = lambda d: {int(d.raw(i)["source"]) for i in range(len(d))}  # noqa: E731
    assert src(train).isdisjoint(src(val))
    yaws = np.degrees([data.raw(i)["camera"][2] for i in range(len(data))])
    assert yaws.min() >= -90 and yaws.max() <= 90 and yaws.min() < -30 and yaws.max() > 30


def test_labels_follow_the_landmark_convention(synth_set, face_model):
    """The set's labels sit at the learned (300w) vertices; the cascade trainer's labels, recomputed
    from each render's camera and shape at a model's landmarks, equal them for that convention
    and differ for ICT's published vertices."""
    from dffx.align import synth_split
    from dffx.model.annotated_landmarks import model_for_convention

    out, _ = synth_set
    stored = synth_split(out, "train")
    learned = synth_split(out, "train", model=model_for_convention(face_model, "300w"))
    np.testing.assert_allclose(learned["landmarks"], stored["landmarks"], atol=2e-3)
    np.testing.assert_allclose(learned["landmarks160"], stored["landmarks160"], atol=2e-3)
    assert (learned["visible160"] == stored["visible160"]).mean() > 0.97  # the caps' depth differs a little
    ict = synth_split(out, "train", model=face_model)
    shift = np.linalg.norm(ict["landmarks"] - stored["landmarks"], axis=2)
    assert shift.max() > 1.0 and np.median(shift) < 3.0  # pixels: nearby points, another convention


def test_yaw_histogram_is_uniform(face_model):
    """The view sampler draws yaw uniformly over [-90, 90] (Kolmogorov-Smirnov)."""
    from scipy.stats import kstest

    from dffx.synth import sample_view

    rng = np.random.default_rng(0)
    views = [sample_view(rng, face_model.n_expression, np.zeros(face_model.n_expression)) for _ in range(4000)]
    yaw = np.degrees([v.yaw for v in views])
    assert kstest(yaw, "uniform", args=(-90, 180)).pvalue > 1e-3
    pitch = np.degrees([v.pitch for v in views])
    assert np.abs(pitch).max() <= 30 and 8 < pitch.std() < 14


def test_synth_is_reproducible_and_resumable(synth_set, photo_dir, tmp_path, ict_dir):
    """Same seed -> same bytes with 2 workers; a deleted shard is rebuilt identically on rerun."""
    from dffx.synth import SynthConfig, synthesize

    first, _ = synth_set
    config = SynthConfig(photos=str(photo_dir), out=str(tmp_path / "again"), views=30, shard_size=8, seed=3,
                         workers=2, holdout_fraction=0.34, model=str(ict_dir), progress=False)
    synthesize(config)
    for k in range(4):
        for name in ("images.bin", "triangles.bin"):
            assert (first / f"shard_{k:05d}" / name).read_bytes() == (tmp_path / "again" / f"shard_{k:05d}" / name).read_bytes()
    shutil.rmtree(tmp_path / "again" / "shard_00002")
    summary = synthesize(config)
    assert summary["rendered_now"] == 8
    assert (first / "shard_00002" / "images.bin").read_bytes() == (tmp_path / "again" / "shard_00002" / "images.bin").read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        synthesize(SynthConfig(**{**config.__dict__, "seed": 4}))


def test_synth_bad_input(tmp_path):
    from dffx.synth import SynthConfig, SynthDataset, synthesize

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image with a same-stem .pts"):
        synthesize(SynthConfig(photos=str(tmp_path / "empty"), out=str(tmp_path / "o"), views=4, progress=False))
    with pytest.raises(ValueError, match="views"):
        synthesize(SynthConfig(photos=str(tmp_path), out=str(tmp_path / "o"), views=0))
    with pytest.raises(FileNotFoundError, match="dffx synth"):
        SynthDataset(tmp_path)


def test_cli_synth_and_preview(photo_dir, tmp_path, synth_set, ict_dir):
    from dffx.cli import main
    from dffx.segment import random_segmentations, save_segmentations
    from dffx import load_face_model

    out, _ = synth_set
    model = load_face_model(ict_dir)
    lut = random_segmentations(model.mean, model.triangles, count=1, n_patches=50, iterations=2, progress=False)
    seg = save_segmentations(tmp_path / "seg.npz", lut, n_patches=50, triangles=model.triangles)
    png = tmp_path / "grid.png"
    assert main(["synth-preview", str(out), "--out", str(png), "--segmentations", str(seg), "--count", "4",
                 "--columns", "2"]) == 0
    grid = cv2.imread(str(png))
    assert grid.shape == (448, 2 * 448, 3)
    assert main(["synth", "--photos", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"), "--views", "2",
                 "--no-progress"]) == 1


def test_cli_train_cascade_binds_the_dff_network(synth_set, tmp_path, ict_dir, face_model):
    """`dffx train cascade` on a synthesized set records which DFF network its directions fit;
    FaceAligner then loads exactly that network without being told."""
    import warnings

    from dffx.align import Cascade, FaceAligner
    from dffx.align.predictor import file_sha256
    from dffx.cli import main
    from dffx.nn.extractor import shipped_weights_path

    out, _ = synth_set
    path = tmp_path / "cascade.npz"
    assert main(["train", "cascade", "--data", str(out), "--features", "dff", "--dff", "base8", "--out", str(path),
                 "--train-images", "12", "--val-images", "6", "--boxes", "1", "--stages", "1",
                 "--model", str(ict_dir), "--no-progress"]) == 0
    cascade = Cascade.load(path)
    assert cascade.stages == 1 and cascade.info["train_images"] == 12
    assert cascade.info["dff_network"] == "base8" and cascade.info["dff_weights"] == "dffx/weights/dff_base8.pt"
    assert cascade.info["dff_sha256"] == file_sha256(shipped_weights_path("base8"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aligner = FaceAligner("dff", cascade=path, device="cpu", model=face_model)
    assert aligner.features.extractor.weights_path == shipped_weights_path("base8")
    # the confidence template: one unit mean descriptor per landmark seen in the training faces
    assert cascade.template.shape == (160, 32) and cascade.info["template_images"] == 12
    norms = np.linalg.norm(cascade.template, axis=1)
    assert (norms > 0).sum() > 100 and np.allclose(norms[norms > 0], 1.0, atol=1e-5)
    # `dffx train template` rebuilds it for a cascade file that has none (same 12 faces)
    bare = Cascade.load(path)
    bare.template = None
    bare.save(tmp_path / "bare.npz")
    assert main(["train", "template", "--cascade", str(tmp_path / "bare.npz"), "--data", str(out),
                 "--images", "12", "--out", str(tmp_path / "with_template.npz")]) == 0
    np.testing.assert_allclose(Cascade.load(tmp_path / "with_template.npz").template, cascade.template, atol=1e-5)


def test_cli_train_cascade_mirror_augment_doubles_the_faces(synth_set, tmp_path, ict_dir):
    from dffx.align import Cascade
    from dffx.cli import main

    out, _ = synth_set
    path = tmp_path / "mirrored.npz"
    assert main(["train", "cascade", "--data", str(out), "--features", "sift", "--out", str(path),
                 "--train-images", "6", "--val-images", "4", "--boxes", "1", "--stages", "1", "--mirror-augment",
                 "--model", str(ict_dir), "--no-progress"]) == 0
    cascade = Cascade.load(path)
    assert cascade.info["mirror_augment"] is True and cascade.info["train_images"] == 12
    assert cascade.info["template_images"] == 6  # the template reads the original faces only


def test_cli_train_cascade_adds_the_source_photos_and_degrades_crops(synth_set, photo_dir, tmp_path, ict_dir):
    """`--photos` adds the set's training photos (its source photos and their mirror images, less
    the held-out ones) to the renders, `--photo-rotations 1` a turned copy of each; `--augment` is
    recorded; they train a working cascade."""
    import json

    from dffx.align import Cascade
    from dffx.cli import main

    out, _ = synth_set
    with np.load(out / "fits.npz") as fits:
        training_photos = int((~fits["held_out"]).sum())
    assert len(json.loads((out / "manifest.json").read_text())["photos"]) == 12  # 6 photos, mirrored
    path = tmp_path / "photos.npz"
    assert main(["train", "cascade", "--data", str(out), "--features", "sift", "--out", str(path),
                 "--train-images", "6", "--val-images", "4", "--boxes", "1", "--stages", "1",
                 "--photos", str(photo_dir), "--photo-rotations", "1", "--augment", "blur,jpeg",
                 "--model", str(ict_dir), "--no-progress"]) == 0
    cascade = Cascade.load(path)
    assert 0 < training_photos < 12 and cascade.info["train_images"] == 6 + 2 * training_photos
    assert cascade.info["photo_rotations"] == 1
    assert cascade.info["augment"] == "blur,jpeg" and cascade.info["photos"] == str(photo_dir)
    assert np.isfinite(cascade.R_X).all() and cascade.template.shape[1] == 128  # SIFT descriptors


def test_eval_synth_scores_the_held_out_renders(synth_set, face_model, tmp_path, capsys):
    """`dffx eval synth`: the val split's renders, padded, with their stored landmarks, visibility
    and camera as the truth; landmark NME and head-pose errors from them."""
    import json

    from dffx.cli import main
    from dffx.synth.val_samples import PAD, load_synth_val
    from dffx.eval import EvalOptions, evaluate
    from dffx.synth import SynthDataset

    out, _ = synth_set
    val = SynthDataset(out, "val")
    samples, report = load_synth_val(out)
    assert len(samples) == report.loaded == len(val) > 0
    with np.load(out / "fits.npz") as fits:
        assert all(fits["held_out"][s.extra["source"]] for s in samples)
    raw = val.raw(0)
    image = samples[0].load_image()
    size = raw["image"].shape[0]
    assert image.shape == (size + 2 * PAD, size + 2 * PAD, 3)
    assert (image[:PAD] == 128).all() and (image[PAD:-PAD, PAD:-PAD] == raw["image"]).all()
    np.testing.assert_allclose(samples[0].landmarks - PAD, raw["landmarks68"], atol=1e-4)
    np.testing.assert_allclose(samples[0].extra["pose_deg"], np.degrees(raw["camera"][1:4]), atol=1e-4)

    mean_shape, rows = evaluate(EvalOptions("synth", out, progress=False), face_model)
    truth = np.array([s.extra["pose_deg"] for s in samples])
    np.testing.assert_allclose([[r["pose_pitch"], r["pose_yaw"], r["pose_roll"]] for r in rows], -truth, atol=1e-9)
    assert [r["visible_inner"] for r in rows] == [int(s.extra["visible68"][17:].sum()) for s in samples]
    assert mean_shape["yaw_source"] == "render camera" and "stored with each render" in \
        mean_shape["inner_visible"]["visibility"]
    dff, _ = evaluate(EvalOptions("synth", out, method="dff", progress=False), face_model)
    nme = {name: np.nanmean([v for v in s["bins"].values() if v is not None]) for name, s in
           (("mean-shape", mean_shape), ("dff", dff))}
    assert nme["dff"] < 0.5 * nme["mean-shape"]
    assert dff["pose"]["mae"]["mean"] < 0.5 * mean_shape["pose"]["mae"]["mean"]

    assert main(["eval", "synth", str(out), "--json", "--limit", "2", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 2 and printed["dataset"] == "synth" and "pose" in printed
    with pytest.raises(FileNotFoundError):
        load_synth_val(tmp_path)
    with pytest.raises(ValueError, match="limit"):
        load_synth_val(out, limit=0)


def test_mirror_images_join_their_photos(synth_set, photo_dir):
    """Every photo is a source twice, as itself and as its mirror image: the mirror's fit is the
    photo's fit mirrored (yaw and roll negated), and a mirror image is held out with its photo."""
    import json

    from dffx.synth.pipeline import MIRROR_SUFFIX, read_source_photo

    out, _ = synth_set
    manifest = json.loads((out / "manifest.json").read_text())
    names = manifest["photos"]
    n = len(names) // 2
    assert n == 6 and names[n:] == [name + MIRROR_SUFFIX for name in names[:n]]
    with np.load(out / "fits.npz") as z:
        fits = {k: z[k] for k in z.files}
    assert np.array_equal(fits["held_out"][:n], fits["held_out"][n:])
    np.testing.assert_allclose(fits["camera"][n:, 2], -fits["camera"][:n, 2], atol=np.radians(3))
    np.testing.assert_allclose(fits["camera"][n:, 3], -fits["camera"][:n, 3], atol=np.radians(3))
    photo = read_source_photo(photo_dir, names[0])
    assert np.array_equal(read_source_photo(photo_dir, names[n]), photo[:, ::-1])
    with pytest.raises(OSError, match="could not read"):
        read_source_photo(photo_dir, "missing.jpg" + MIRROR_SUFFIX)


def test_original_view_shows_the_photo(face_model):
    """A sample at its photo's own pose and expression is the photo itself, framed like a crop: the
    render correlates with the photo warped by the crop's similarity."""
    from dffx.data import read_pts
    from dffx.synth import Synthesizer, sample_view
    from dffx.synth.fit import fit_photo
    from dffx.synth.pipeline import _original_view

    jpg = sorted((PHOTOS / "afw").glob("*.jpg"))[2]
    image = cv2.imread(str(jpg))
    fit = fit_photo(face_model, read_pts(jpg.with_suffix(".pts")))
    synth = Synthesizer(face_model, 224, context=True)
    src = synth.prepare(image, fit.camera, fit.p_id, fit.p_exp)
    rng = np.random.default_rng(0)
    view = _original_view(sample_view(rng, face_model.n_expression, fit.p_exp), fit.camera, fit.p_exp)
    sample = synth.render(src, view, None, rng)
    ratio = sample.camera[0] / fit.camera[0]  # same angles: the crop is a scaled, shifted photo
    np.testing.assert_allclose(sample.camera[1:4], fit.camera[1:4], atol=1e-9)
    affine = np.array([[ratio, 0, sample.camera[4] - ratio * fit.camera[4]],
                       [0, ratio, sample.camera[5] - ratio * fit.camera[5]]])
    expected = cv2.warpAffine(image, affine, (224, 224), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    a = cv2.cvtColor(sample.image, cv2.COLOR_BGR2GRAY).astype(float)
    b = cv2.cvtColor(expected, cv2.COLOR_BGR2GRAY).astype(float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
