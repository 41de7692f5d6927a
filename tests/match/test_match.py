"""Feature matching (paper Sec. IV-A): sparse DFF / SIFT, dense DFF, synthesized-pair truth, CLI."""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest
import torch

from conftest import SHARED

PHOTOS = SHARED / "data" / "300w-train"
SHIFT = np.array([5, 3])  # (dx, dy) of the hand-made target maps


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread: on a small machine shared with other jobs, OpenMP threads spin-waiting
    in the many block-sized ops of the matcher make two threads 2-4x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_map(h, w, seed=0, dim=32, freq=0.4):
    """A smooth, position-unique (dim, h, w) unit descriptor map: random plane waves."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    k = rng.normal(0.0, freq, (dim // 2, 2))
    phase = rng.uniform(0, 2 * np.pi, dim // 2)
    a = k[:, 0, None, None] * xs + k[:, 1, None, None] * ys + phase[:, None, None]
    return (np.concatenate([np.cos(a), np.sin(a)]) / np.sqrt(dim / 2)).astype(np.float32)


def shifted_pair(h=40, w=48, seed=0):
    """src = M[:, :h, :w], dst = M[:, dy:, dx:]: source pixel p is target pixel p - SHIFT."""
    big = smooth_map(h + SHIFT[1], w + SHIFT[0], seed)
    return big[:, :h, :w], big[:, SHIFT[1]:, SHIFT[0]:]


def disc(h, w, cx, cy, r):
    ys, xs = np.mgrid[0:h, 0:w]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


def inside_after_shift(xy, shape):
    t = xy - SHIFT
    return (t[:, 0] >= 0) & (t[:, 1] >= 0) & (t[:, 0] < shape[1]) & (t[:, 1] < shape[0])


# ------------------------------------------------------------------ nearest-neighbour core
def test_blocked_search_equals_unblocked_and_reference():
    """Tiny blocks, one block and the float64 full-matrix twin give the same matches."""
    from dffx.match import dense_match, dense_match_reference, nearest_by_angle

    rng = np.random.default_rng(0)
    src, dst = rng.normal(size=(16, 23, 19)), rng.normal(size=(16, 21, 25))
    sm = rng.random((23, 19)) < 0.7
    dm = rng.random((21, 25)) < 0.8
    ref = dense_match_reference(src, dst, sm, dm, max_angle_deg=None)
    whole = dense_match(src, dst, sm, dm, max_angle_deg=None, chunk_rows=10 ** 6, max_elements=10 ** 9)
    for rows, elements in [(7, 500), (1, 1), (64, 3000), (1000, 64)]:
        blocked = dense_match(src, dst, sm, dm, max_angle_deg=None, chunk_rows=rows, max_elements=elements)
        for m in (blocked, whole):
            np.testing.assert_array_equal(m.src_xy, ref.src_xy)
            np.testing.assert_array_equal(m.dst_xy, ref.dst_xy)
            np.testing.assert_allclose(m.angle_deg, ref.angle_deg, atol=1e-3)
    # top-2 (ratio test) over blocks agrees with a full sort
    q, d = rng.normal(size=(50, 8)), rng.normal(size=(301, 8))
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    idx, c = nearest_by_angle(q, d, 2, chunk_rows=3, max_elements=40)
    np.testing.assert_array_equal(idx.numpy(), np.argsort(-cos, axis=1)[:, :2])
    np.testing.assert_allclose(c.numpy(), -np.sort(-cos, axis=1)[:, :2], atol=1e-6)


def test_search_input_errors():
    from dffx.match import dense_match, nearest_by_angle

    with pytest.raises(ValueError, match="share C"):
        nearest_by_angle(np.zeros((3, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="k must be"):
        nearest_by_angle(np.ones((3, 4)), np.ones((5, 4)), k=3)
    with pytest.raises(ValueError, match="mask"):
        dense_match(np.ones((4, 5, 6)), np.ones((4, 5, 6)), np.ones((6, 5), bool))
    with pytest.raises(ValueError, match="empty"):
        dense_match(np.ones((4, 5, 6)), np.ones((4, 5, 6)), None, np.zeros((5, 6), bool))
    with pytest.raises(ValueError, match="NaN"):
        dense_match(np.full((4, 5, 6), np.nan), np.ones((4, 5, 6)))


# ------------------------------------------------------------------ dense
def test_dense_recovers_shift_exactly():
    """Every source pixel whose shifted copy is in the target maps onto it (angle ~0); those
    without one are left unmatched by the 12 degree threshold."""
    from dffx.match import dense_match, mask_pixels

    src, dst = shifted_pair()
    sm = disc(40, 48, 20, 17, 19)
    m = dense_match(src, dst, sm, None)
    xy = mask_pixels(sm)
    inside = inside_after_shift(xy, dst.shape[1:])
    assert m.n_source == sm.sum() and inside.sum() > 500 and (~inside).sum() > 50
    np.testing.assert_array_equal(m.src_index, np.flatnonzero(inside))
    np.testing.assert_array_equal(m.dst_xy, m.src_xy - SHIFT)
    assert m.angle_deg.max() < 0.1


@pytest.mark.parametrize("limit", [12.0, 30.0])
def test_angle_thresholds_respected(limit):
    """With noisy targets, exactly the nearest matches below the threshold are kept (dense and sparse)."""
    from dffx.match import dense_match, dense_match_reference, match_dff_points

    src, dst = shifted_pair(seed=1)
    rng = np.random.default_rng(2)
    dst = dst + rng.normal(0, 0.03, dst.shape).astype(np.float32)
    everything = dense_match(src, dst, max_angle_deg=None)
    assert everything.angle_deg.min() < limit < everything.angle_deg.max()
    kept = dense_match(src, dst, max_angle_deg=limit)
    below = everything.angle_deg < limit
    np.testing.assert_array_equal(kept.src_index, everything.src_index[below])
    np.testing.assert_array_equal(kept.dst_xy, everything.dst_xy[below])
    assert kept.angle_deg.max() < limit
    ref = dense_match_reference(src, dst, max_angle_deg=limit)
    assert abs(len(ref) - len(kept)) <= 2  # float32 vs float64 at the threshold only
    pts = np.stack(np.meshgrid(np.arange(3, 45, 4), np.arange(3, 38, 4)), -1).reshape(-1, 2).astype(np.float32)
    sparse_all = match_dff_points(src, dst, pts, None, max_angle_deg=None)
    sparse = match_dff_points(src, dst, pts, None, max_angle_deg=limit)
    np.testing.assert_array_equal(sparse.src_index, np.flatnonzero(sparse_all.angle_deg < limit))
    assert sparse.angle_deg.max() < limit


# ------------------------------------------------------------------ sparse
def test_sparse_dff_recovers_shift():
    """Integer points map exactly onto their shifted copies; sub-pixel points to the nearest pixel
    of their copy (bilinear descriptors); only target-mask pixels are candidates."""
    from dffx.match import match_dff_points

    src, dst = shifted_pair()
    pts = np.array([[10, 8], [24, 20], [40, 30], [30, 12], [15, 33]], np.float32)
    m = match_dff_points(src, dst, pts, None)
    assert len(m) == len(pts) and m.n_source == len(pts)
    np.testing.assert_array_equal(m.dst_xy, pts - SHIFT)
    assert m.angle_deg.max() < 0.1
    sub = pts + np.float32(0.3)
    ms = match_dff_points(src, dst, sub, None)
    assert np.abs(ms.dst_xy - (pts - SHIFT)).max() <= 1
    # a target mask that hides the true pixel of point 1 forces another (worse) target pixel
    dm = np.ones(dst.shape[1:], bool)
    x, y = (pts[1] - SHIFT).astype(int)
    dm[y - 1:y + 2, x - 1:x + 2] = False
    mm = match_dff_points(src, dst, pts, dm, max_angle_deg=None)
    assert np.abs(mm.dst_xy[1] - (pts[1] - SHIFT)).max() >= 2 and dm[int(mm.dst_xy[1, 1]), int(mm.dst_xy[1, 0])]
    assert mm.angle_deg[1] > 5


@pytest.fixture(scope="module")
def aflw_faces():
    from dffx.data import load_aflw2000_3d

    samples = load_aflw2000_3d(SHARED / "data" / "dev" / "aflw2000-3d-sample", limit=2)[0]
    return [(cv2.imread(str(s.image_path)), s.face_box) for s in samples]


def test_sift_baseline_recovers_rigid_transform(aflw_faces):
    """SIFT + ratio test on a photo and its rotated, scaled, shifted copy: most matches obey the transform."""
    from dffx.match import sift_keypoints, sparse_match

    image, box = aflw_faces[0]
    A = cv2.getRotationMatrix2D((225.0, 225.0), 12.0, 0.9)
    A[:, 2] += (9.0, -6.0)
    warped = cv2.warpAffine(image, A, (450, 450), flags=cv2.INTER_LINEAR)
    mask = np.zeros((450, 450), bool)
    mask[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = True
    kp = sift_keypoints(image, mask)
    assert len(kp) > 40 and mask[np.round(kp.xy[:, 1]).astype(int), np.round(kp.xy[:, 0]).astype(int)].all()
    assert len(np.unique(np.round(kp.xy * 100), axis=0)) == len(kp)  # one keypoint per location
    res = sparse_match(image, warped, src_mask=mask, src_keypoints=kp)
    m = res["sift"]
    assert "dff" not in res and m.n_source == len(kp)
    err = np.linalg.norm(m.src_xy @ A[:, :2].T + A[:, 2] - m.dst_xy, axis=1)
    assert len(m) >= 20 and np.mean(err < 2.0) > 0.85
    # a stricter ratio keeps a subset of the matches
    strict = sparse_match(image, warped, src_mask=mask, src_keypoints=kp, ratio=0.5)["sift"]
    assert set(strict.src_index) <= set(m.src_index) and len(strict) < len(m)


def test_random_network_features_follow_an_image_shift(aflw_faces):
    """A convolutional DFF net (random weights) on a face crop and the crop shifted by 16 px:
    dense matching recovers the shift for almost every interior face pixel."""
    nn = pytest.importorskip("dffx.nn")
    from dffx.match import dense_match, sparse_match
    from dffx.match.cli import ellipse_face_mask
    from dffx.preprocess import crop_face

    image, box = aflw_faces[0]
    crop, _ = crop_face(image, box, 224)
    shifted = np.zeros_like(crop)
    shifted[:, 16:] = crop[:, :-16]
    torch.manual_seed(0)
    extractor = nn.DFFExtractor(nn.DFFNet(), device="cpu")
    f = extractor.extract([crop, shifted])
    mask = ellipse_face_mask(224)
    m = dense_match(f[0], f[1], mask, None)
    ok = np.all(m.dst_xy == m.src_xy + np.array([16, 0]), axis=1)
    assert len(m) > 0.9 * mask.sum() and ok.mean() > 0.9
    res = sparse_match(crop, shifted, f[0], f[1], mask, None)
    assert res["dff"].n_source == res["sift"].n_source == len(res["keypoints"]) > 20


# ------------------------------------------------------------------ visualisation
def test_dense_picture_paints_targets_with_source_colours():
    from dffx.match import dense_colour_code, dense_match, draw_dense, position_colours

    src, dst = shifted_pair()
    sm = disc(40, 48, 24, 20, 17)
    m = dense_match(src, dst, sm, None)
    field = position_colours(sm)
    _, dst_code, hit = dense_colour_code(m, (40, 48), dst.shape[1:], sm)
    s = m.src_xy.astype(int)
    d = m.dst_xy.astype(int)
    np.testing.assert_array_equal(dst_code[d[:, 1], d[:, 0]], field[s[:, 1], s[:, 0]])
    assert hit.sum() == len(m)
    # distinct positions get distinct colours (smooth field, no repeats across the face)
    assert len(np.unique(field[sm], axis=0)) > 0.5 * sm.sum()
    picture = draw_dense(np.zeros((40, 48, 3), np.uint8), np.zeros(dst.shape[1:] + (3,), np.uint8), m, sm)
    assert picture.dtype == np.uint8 and picture.shape[1] >= 48 + dst.shape[2]


# ------------------------------------------------------------------ synthesized pairs
@pytest.fixture(scope="module")
def synthesizer(face_model):
    from dffx.synth import Synthesizer

    return Synthesizer(face_model, 224)


@pytest.fixture(scope="module")
def source(synthesizer):
    from dffx.match import fit_sources

    return fit_sources(synthesizer, PHOTOS / "lfpw_trainset", limit=1)[0]


def test_pair_truth_of_identical_views_is_identity(synthesizer, source, face_model):
    """The same view rendered twice (different noise and background): every face pixel maps to
    itself and is visible."""
    from dffx.match import pair_truth
    from dffx.synth import sample_view

    rng = np.random.default_rng(4)
    for yaw in (0.0, 70.0):
        view = sample_view(rng, face_model.n_expression, source.p_exp)
        view.yaw = np.radians(yaw)
        a = synthesizer.render(source, view, np.zeros((224, 224, 3), np.uint8), rng)
        b = synthesizer.render(source, view, np.full((224, 224, 3), 90, np.uint8), rng)
        truth = pair_truth(a, b, face_model, synthesizer)
        assert np.array_equal(truth.defined, a.triangle_id >= 0)
        ys, xs = np.nonzero(truth.defined)
        np.testing.assert_allclose(truth.target_xy[ys, xs], np.stack([xs, ys], 1), atol=5e-3)
        assert truth.visible[truth.defined].all() and not truth.visible[~truth.defined].any()
        assert np.isnan(truth.target_xy[~truth.defined]).all()


def test_pair_truth_carries_landmarks_across_views(synthesizer, source, face_model):
    """Inner landmarks visible in both renders: the truth at the source landmark's pixel lands on
    the target landmark; turning 80 degrees hides a large part of the face."""
    from dffx.match import render_pair, pair_truth

    rng = np.random.default_rng(6)
    pair = render_pair(synthesizer, source, -25.0, 30.0, rng)
    assert pair.group == "medium" and pair.yaw_diff_deg == pytest.approx(55.0)
    truth = pair_truth(pair.src, pair.dst, face_model, synthesizer)
    inner = np.arange(17, 68)
    both = pair.src.visible68[inner] & pair.dst.visible68[inner]
    t_xy, vis, defined = truth.at(pair.src.landmarks68[inner][both])
    err = np.linalg.norm(t_xy[defined] - pair.dst.landmarks68[inner][both][defined], axis=1)
    assert defined.sum() > 40 and vis[defined].mean() > 0.95
    assert np.median(err) < 1.0 and np.mean(err < 2.5) > 0.9
    far = render_pair(synthesizer, source, -40.0, 40.0, rng)
    t2 = pair_truth(far.src, far.dst, face_model, synthesizer)
    assert 0.2 < 1 - t2.visible[t2.defined].mean() < 0.8


def _oracle_features(sample, model, mesh, W):
    """Perfect descriptors: plane waves of the mean-shape surface point seen at each pixel."""
    from dffx import rasterize
    from dffx.match.evaluate import sample_screen

    ras = rasterize(sample_screen(sample, model, mesh), mesh.triangles, 224)
    tri = sample.triangle_id
    ok = tri >= 0
    points = np.einsum("pk,pkj->pj", ras.barycentric[ok].astype(np.float64),
                       model.mean.astype(np.float64)[model.triangles[tri[ok]]])
    phase = points @ W.T
    f = np.zeros((224, 224, 2 * len(W)))
    f[..., 0] = 1.0
    f[ok] = np.concatenate([np.cos(phase), np.sin(phase)], 1)
    return torch.from_numpy(f.transpose(2, 0, 1)).float()


def test_evaluation_table_with_perfect_descriptors(synthesizer, source, face_model):
    """Descriptors that encode the true surface point make DFF matching near perfect; the table
    holds every group and method and formats as markdown."""
    from dffx.match import evaluate_pairs, format_table, render_pairs

    pairs = render_pairs(synthesizer, [source], pairs_per_group=1, seed=3)
    assert [p.group for p in pairs] == ["small", "medium", "large"]
    W = np.random.default_rng(1).normal(0.0, 0.5, (16, 3))
    cache = {id(s.image): _oracle_features(s, face_model, synthesizer.mesh, W) for p in pairs for s in (p.src, p.dst)}
    table = evaluate_pairs(pairs, lambda images: torch.stack([cache[id(i)] for i in images]), face_model, synthesizer)
    groups = table["groups"]
    assert set(groups) == {"small", "medium", "large", "all"} and groups["all"]["pairs"] == 3
    for name in ("small", "medium", "large"):
        row = groups[name]
        assert row["pairs"] == 1 and set(row) == {"pairs", "dff", "dff-top", "sift", "dff-dense"}
        assert row["dff-dense"]["correct_rate"] > 0.9 and row["dff-dense"]["valid_rate"] > 0.9
        assert row["dff"]["correct_rate"] > 0.8
        # dff-top: DFF's most confident matches, exactly as many as SIFT made.
        assert row["dff-top"]["matches"] == min(row["sift"]["matches"], row["dff"]["matches"])
        assert row["dff-top"]["correct"] <= row["dff"]["correct"]
        for method in ("dff", "dff-top", "sift", "dff-dense"):
            c = row[method]
            assert 0 <= c["correct"] <= c["matches"] and c["matched_visible"] <= c["visible"] <= c["points"]
            assert c["matching_score"] == c["correct"] / c["visible"]
        # near-perfect descriptors find a correct match for most points whose truth is visible
        assert row["dff"]["matching_score"] > 0.7
    assert groups["large"]["dff-dense"]["hidden"] > groups["small"]["dff-dense"]["hidden"]
    text = format_table(table)
    assert text.count("\n") == 1 + 4 * 4 and "DFF dense (< 12 deg)" in text and "SIFT sparse" in text


# ------------------------------------------------------------------ CLI
def _parser():
    from dffx.match.cli import add_match_parser

    parser = argparse.ArgumentParser(prog="dffx")
    add_match_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv):
    args = _parser().parse_args(["match", *argv])
    return args.run(args)


def _box_arg(box):
    return ",".join(f"{v:.1f}" for v in box)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    nn = pytest.importorskip("dffx.nn")
    torch.manual_seed(0)
    return nn.save_weights(tmp_path_factory.mktemp("w") / "random_dff.pt", nn.DFFNet(base_channels=8))


@pytest.mark.parametrize("dense", [False, True])
def test_cli_writes_picture(tmp_path, capsys, aflw_faces, weights_file, dense):
    from dffx.data import load_aflw2000_3d

    samples = load_aflw2000_3d(SHARED / "data" / "dev" / "aflw2000-3d-sample", limit=2)[0]
    out = tmp_path / "viz.png"
    argv = [str(samples[0].image_path), str(samples[1].image_path), "--out", str(out), "--weights", str(weights_file),
            "--box-src", _box_arg(samples[0].face_box), "--box-dst", _box_arg(samples[1].face_box)]
    assert _run(argv + (["--dense"] if dense else [])) == 0
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] > 224 and picture.shape[1] > 2 * 224
    text = capsys.readouterr().out
    assert ("DFF dense:" in text) if dense else ("DFF sparse:" in text and "SIFT sparse:" in text)


def test_cli_sift_only_with_detected_faces(tmp_path, capsys):
    image = SHARED / "data" / "dev" / "aflw2000-3d-sample" / "image00050.jpg"
    out = tmp_path / "sift.jpg"
    assert _run([str(image), str(image), "--out", str(out), "--sift-only"]) == 0
    assert cv2.imread(str(out)) is not None
    text = capsys.readouterr().out
    assert "SIFT sparse:" in text and "DFF" not in text


def test_cli_fails_cleanly(tmp_path, capsys):
    from conftest import _png_header_only

    image = SHARED / "data" / "dev" / "aflw2000-3d-sample" / "image00050.jpg"
    huge = _png_header_only(tmp_path / "huge.png", 60000, 60000)  # issue 28 (7): was a cv2.error traceback
    out = tmp_path / "x.png"
    for argv, message in [([str(tmp_path / "missing.jpg"), str(image)], "no such image"),
                          ([str(image), str(image.with_suffix(".mat"))], "not an image OpenCV can decode"),
                          ([str(image), str(huge)], "huge.png: 60000 x 60000"),
                          ([str(image), str(image), "--dense", "--sift-only"], "--dense needs")]:
        assert _run(argv + ["--out", str(out), "--sift-only" if "--sift-only" not in argv else "--mask=ellipse"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("dffx match: error:") and message in err and "\n" not in err
    assert not out.exists()
