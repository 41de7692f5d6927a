"""`dffx eval` end to end on the shared samples in their official layouts, checked against an
independent hand computation from the raw files (scipy.io / numpy only)."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from conftest import SHARED
from dffx.eval import EvalOptions, evaluate, format_table

DEV = SHARED / "data" / "dev"


def mean_shape_by_hand(face_model, box):
    """The mean face's 68 landmarks (frontal, image y down) fitted into box = (x0, y0, x1, y1)."""
    pts = face_model.mean[face_model.landmarks68][:, :2].astype(np.float64) * [1, -1]
    lo, hi = pts.min(0), pts.max(0)
    s = np.sqrt((box[2] - box[0]) * (box[3] - box[1]) / np.prod(hi - lo))
    return (pts - (lo + hi) / 2) * s + [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]


def test_aflw2000_matches_hand_computation(face_model, tmp_path):
    root = DEV / "aflw2000-3d-sample"
    summary, rows = evaluate(EvalOptions("aflw2000-3d", root, yaw_csv=root / "yaw.csv", progress=False), face_model)
    yaw_csv = dict(line.split(",") for line in (root / "yaw.csv").read_text().split()[1:])
    by_hand = {}
    for mat_file in sorted(root.glob("*.mat")):
        gt = scipy.io.loadmat(mat_file)["pt3d_68"][:2].T.astype(np.float64)
        box = np.r_[gt.min(0), gt.max(0)]
        pred = mean_shape_by_hand(face_model, box)
        by_hand[mat_file.stem] = np.linalg.norm(pred - gt, axis=1).mean() / np.sqrt(np.prod(box[2:] - box[:2]))
    assert [r["name"] for r in rows] == sorted(by_hand)
    np.testing.assert_allclose([r["nme"] for r in rows], [by_hand[r["name"]] for r in rows], rtol=1e-5)
    bins = {"0-30": [], "30-60": [], "60-90": []}
    for name, err in by_hand.items():
        a = abs(float(yaw_csv[name]))
        bins["0-30" if a <= 30 else "30-60" if a <= 60 else "60-90"].append(100 * err)
    means = [np.mean(v) for v in bins.values()]
    assert summary["n"] == 16 and summary["yaw_source"] == "yaw.csv"
    np.testing.assert_allclose([summary["bins"][b] for b in bins], means, rtol=1e-5)
    assert summary["mean"] == pytest.approx(np.mean(means), rel=1e-5)
    assert summary["std"] == pytest.approx(np.std(means, ddof=1), rel=1e-5)
    # Table III variant: inner points only, a subset of them visible
    inner = [r["visible_inner"] for r in rows]
    assert all(0 < v <= 51 for v in inner) and min(inner) < 51
    assert summary["inner_visible"]["mean"] is not None
    assert "[0,30]" in format_table(summary) and "Table III" in format_table(summary)
    # head pose: the mean shape is frontal, so its errors are minus the true angles (Pose_Para, float32 in
    # the file, degrees)
    truth = np.array([np.degrees(scipy.io.loadmat(root / f"{r['name']}.mat")["Pose_Para"][0, :3]) for r in rows])
    np.testing.assert_allclose([[r["pose_pitch"], r["pose_yaw"], r["pose_roll"]] for r in rows], -truth, atol=1e-5)
    pose = summary["pose"]
    np.testing.assert_allclose([pose["mae"][k] for k in ("pitch", "yaw", "roll")], np.abs(truth).mean(0), atol=1e-5)
    np.testing.assert_allclose([pose["bias"][k] for k in ("pitch", "yaw", "roll")], -truth.mean(0), atol=1e-5)
    assert "Head pose" in format_table(summary)


def test_aflw2000_yaw_source_decides_the_bins(face_model):
    root = DEV / "aflw2000-3d-sample"
    with_csv, _ = evaluate(EvalOptions("aflw2000-3d", root, yaw_csv=root / "yaw.csv", progress=False), face_model)
    with_pose, _ = evaluate(EvalOptions("aflw2000-3d", root, progress=False), face_model)
    assert with_pose["yaw_source"] == "Pose_Para"
    # image00516 and image02616 change bin between AFLW's yaw and the fitted Pose_Para yaw
    assert with_csv["counts"] != with_pose["counts"]


def test_aflw_crops_match_hand_computation(face_model):
    root = DEV / "aflw-3ddfa-protocol-sample"
    summary, rows = evaluate(EvalOptions("aflw", root, progress=False), face_model)
    names = (root / "AFLW_GT_crop.list").read_text().split()
    pts21 = np.load(root / "AFLW_GT_pts21.npy")
    rois = np.load(root / "AFLW_GT_crop_roi_box.npy").astype(np.float64)
    groups = [[18], [20], [22], [23], [25], [27], [37], [37, 38, 39, 40, 41, 42], [40], [43],
              [43, 44, 45, 46, 47, 48], [46], [3], [32], [31], [36], [15], [49], [61, 62, 63, 64, 65, 66, 67, 68],
              [55], [9]]
    checked = 0
    for i, row in enumerate(rows):
        x0, y0, x1, y1 = rois[i]
        if x1 - x0 != y1 - y0:
            continue  # clipped roi: the loader rebuilds the square crop box (tests/data/test_data_loaders.py)
        side = (x1 - x0) / np.sqrt(2)
        c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        pred68 = mean_shape_by_hand(face_model, np.r_[c - side / 2, c + side / 2])
        pred21 = np.stack([pred68[np.array(g) - 1].mean(0) for g in groups])
        gt = pts21[i].T.astype(np.float64)
        ok = (gt != -1).all(1)
        expected = np.linalg.norm(pred21[ok] - gt[ok], axis=1).mean() / side
        assert row["name"] == names[i].rsplit(".", 1)[0] or row["name"] == names[i]
        assert row["nme"] == pytest.approx(expected, rel=1e-4)
        checked += 1
    assert checked >= 20 and summary["counts"] == {"0-30": 8, "30-60": 8, "60-90": 8}
    assert "sqrt(2)" in summary["normalisation"]


def test_300w_subsets_and_normalisations(face_model, tmp_path):
    train = SHARED / "data" / "300w-train"
    layout = {"helen_testset": sorted((train / "helen_trainset").glob("*.pts"))[:3],
              "lfpw_testset": sorted((train / "lfpw_trainset").glob("*.pts"))[:2],
              "ibug": sorted((train / "afw").glob("*.pts"))[:2]}
    for folder, files in layout.items():
        (tmp_path / folder).mkdir()
        for pts in files:
            for f in (pts, pts.with_suffix(".jpg")):
                os.symlink(f, tmp_path / folder / f.name)
    summary, rows = evaluate(EvalOptions("300w", tmp_path, progress=False), face_model)
    assert {k: v["n"] for k, v in summary["subsets"].items()} == {"common": 5, "challenging": 2, "full": 7}
    pts_file = layout["ibug"][0]
    gt = np.loadtxt(pts_file, skiprows=3, max_rows=68) - 1
    pred = mean_shape_by_hand(face_model, np.r_[gt.min(0), gt.max(0)])
    err = np.linalg.norm(pred - gt, axis=1).mean()
    ipd = np.linalg.norm(gt[36:42].mean(0) - gt[42:48].mean(0))
    iod = np.linalg.norm(gt[36] - gt[45])
    row = next(r for r in rows if r["name"].endswith(pts_file.stem))
    assert row["subset"] == "challenging"
    assert row["nme_ipn"] == pytest.approx(err / ipd, rel=1e-5)
    assert row["nme_ion"] == pytest.approx(err / iod, rel=1e-5)
    assert summary["subsets"]["full"]["nme_ipn"] == pytest.approx(100 * np.mean([r["nme_ipn"] for r in rows]))


def test_detector_boxes_are_used_and_misses_counted(face_model):
    root = DEV / "aflw2000-3d-sample"
    gt_boxes, _ = evaluate(EvalOptions("aflw2000-3d", root, limit=4, progress=False), face_model)
    for detector in ("mtcnn", "haar"):
        detected, _ = evaluate(EvalOptions("aflw2000-3d", root, limit=4, detector=detector, progress=False),
                               face_model)
        assert detected["face_boxes"] == f"detector (dffx.detect, {detector})"
        assert 0 <= detected["detector_missed"] <= 4
        assert detected["bins"] != gt_boxes["bins"]  # different starting boxes, different errors


def test_eval_detector_flag_defaults_to_mtcnn():
    from dffx.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["eval", "aflw2000-3d", "x"]).detector is None
    assert parse(["eval", "aflw2000-3d", "x", "--detector"]).detector == "mtcnn"
    assert parse(["eval", "aflw2000-3d", "x", "--detector", "haar"]).detector == "haar"
    from dffx.align.options import from_args

    assert parse(["align", "a.jpg", "--out", "o"]).detector is None  # unset: AlignOptions' default
    assert from_args(parse(["align", "a.jpg", "--out", "o"])).detector == "mtcnn"
    with pytest.raises(SystemExit):
        parse(["align", "a.jpg", "--out", "o", "--detector", "dlib"])


def test_mirror_and_precision_flags(face_model):
    from dffx.cli import build_parser
    from dffx.eval import make_predictor

    parse = build_parser().parse_args
    assert parse(["align", "a.jpg", "--out", "o"]).mirror is None  # FaceAligner's default
    assert parse(["align", "a.jpg", "--out", "o"]).min_face_size is None
    assert parse(["track", "v.mp4", "--out", "o.jsonl", "--min-face-size", "80"]).min_face_size == 80
    assert parse(["align", "a.jpg", "--out", "o", "--mirror"]).mirror is True
    assert parse(["track", "v.mp4", "--out", "o.jsonl", "--no-mirror"]).mirror is False
    assert parse(["eval", "aflw", "x", "--mirror", "--precision", "bfloat16"]).mirror is True
    with pytest.raises(SystemExit):
        parse(["align", "a.jpg", "--out", "o", "--precision", "float16"])
    with pytest.raises(ValueError, match="mirror averaging and tiny-face weights apply to the dff and sift methods"):
        make_predictor("mean-shape", face_model, mirror=True)


def test_a_cascade_file_replaces_the_shipped_one(face_model, tmp_path):
    from dffx.align import Cascade
    from dffx.align.predictor import default_cascade_path
    from dffx.eval import make_predictor

    root = DEV / "aflw2000-3d-sample"
    shipped, _ = evaluate(EvalOptions("aflw2000-3d", root, method="sift", limit=3, progress=False), face_model)
    # the same directions from another file give the same errors; the summary names the file
    copy = Cascade.load(default_cascade_path("sift")).save(tmp_path / "mine.npz")
    mine, _ = evaluate(EvalOptions("aflw2000-3d", root, method="sift", limit=3, progress=False, cascade=copy),
                       face_model)
    assert mine["bins"] == shipped["bins"] and mine["cascade"] == str(copy) and "cascade" not in shipped
    # one stage fewer is a different predictor
    c = Cascade.load(copy)
    fewer = Cascade(c.features, c.mean_camera, c.R_X[:1], c.R_w[:1], c.w_reg, c.info).save(tmp_path / "k1.npz")
    one_stage, _ = evaluate(EvalOptions("aflw2000-3d", root, method="sift", limit=3, progress=False, cascade=fewer),
                            face_model)
    assert one_stage["bins"] != shipped["bins"]
    with pytest.raises(ValueError, match="trained with 'sift' features"):
        make_predictor("dff", face_model, cascade=copy)
    with pytest.raises(ValueError, match="not mean-shape"):
        make_predictor("mean-shape", face_model, cascade=copy)


def test_refine_passes_change_the_cascade_run_and_are_reported(face_model):
    from dffx.align.options import EVAL_DEFAULTS
    from dffx.eval import make_predictor

    root = DEV / "aflw2000-3d-sample"
    single, _ = evaluate(EvalOptions("aflw2000-3d", root, method="sift", limit=3, progress=False), face_model)
    one_pass = EVAL_DEFAULTS.replace(refine=1)
    refined, _ = evaluate(EvalOptions("aflw2000-3d", root, method="sift", limit=3, progress=False, align=one_pass),
                          face_model)
    assert refined["refine"] == 1 and "refine" not in single
    assert refined["bins"] != single["bins"] and abs(refined["mean"] - single["mean"]) < 0.5 * single["mean"]
    assert "re-crop passes: 1" in format_table(refined)
    # A converged IoU no box reaches leaves every pass; one every box reaches leaves the first only.
    for converged_iou, same_as in ((1.5, refined), (0.01, single)):
        run, _ = evaluate(EvalOptions("aflw2000-3d", root, method="sift", limit=3, progress=False,
                                      align=one_pass.replace(converged_iou=converged_iou)), face_model)
        assert run["bins"] == same_as["bins"] and run["converged_iou"] == converged_iou
        assert f"box IoU >= {converged_iou}" in format_table(run)
    with pytest.raises(ValueError, match="not mean-shape"):
        make_predictor("mean-shape", face_model, refine=1)
    with pytest.raises(ValueError, match="not mean-shape"):
        make_predictor("mean-shape", face_model, converged_iou=0.9)
    with pytest.raises(ValueError, match="converged_iou"):
        make_predictor("sift", face_model, refine=1, converged_iou=-1)
    with pytest.raises(ValueError, match="refine must be >= 0"):
        make_predictor("sift", face_model, refine=-1)


def run_cli(*args):
    env = dict(os.environ, DFFX_FACE_MODEL=str(SHARED / "data" / "ict-facekit"))
    return subprocess.run([sys.executable, "-m", "dffx", "eval", *args, "--no-progress"], capture_output=True,
                          text=True, env=env)


def test_cli_json_table_and_per_image_csv(tmp_path):
    root = DEV / "aflw2000-3d-sample"
    out = run_cli("aflw2000-3d", str(root), "--yaw-csv", str(root / "yaw.csv"), "--json", "--limit", "10",
                  "--per-image", str(tmp_path / "faces.csv"))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert {"dataset", "method", "n", "bins", "mean", "std"} <= set(summary)
    assert summary["n"] == 10 and set(summary["bins"]) == {"0-30", "30-60", "60-90"}
    with open(tmp_path / "faces.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 10
    table = run_cli("aflw", str(DEV / "aflw-3ddfa-protocol-sample"))
    assert table.returncode == 0 and "Mean" in table.stdout and "[60,90]" in table.stdout


def test_cli_reports_malformed_folders_in_one_line(tmp_path):
    shutil.copytree(DEV / "aflw-3ddfa-protocol-sample", tmp_path / "aflw")
    np.save(tmp_path / "aflw" / "AFLW_GT_pts21.npy", np.zeros((3, 2, 21)))
    out = run_cli("aflw", str(tmp_path / "aflw"))
    assert out.returncode == 1 and "AFLW_GT_pts21.npy" in out.stderr and out.stderr.count("\n") == 1
    out = run_cli("aflw2000-3d", str(tmp_path / "missing"))
    assert out.returncode == 1 and "missing" in out.stderr
    out = run_cli("aflw2000-3d", str(DEV / "aflw2000-3d-sample"), "--method", "magic")
    assert out.returncode == 1 and "unknown method" in out.stderr


def test_pose_errors_leave_out_faces_beyond_99_degrees(face_model, tmp_path):
    """The head-pose protocol of AFLW2000 papers: a face whose true angle exceeds 99 degrees has
    landmark NME but no pose error, and is counted as excluded."""
    root = tmp_path / "aflw2000"
    root.mkdir()
    source = DEV / "aflw2000-3d-sample"
    for name in ("image00050", "image00081"):
        shutil.copy(source / f"{name}.jpg", root / f"{name}.jpg")
        mat = scipy.io.loadmat(source / f"{name}.mat")
        if name == "image00081":
            mat["Pose_Para"][0, 0] = np.radians(120.0)  # pitch out of the protocol's range
        scipy.io.savemat(root / f"{name}.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    summary, rows = evaluate(EvalOptions("aflw2000-3d", root, progress=False), face_model)
    assert [("pose_yaw" in r, r.get("pose_excluded", False)) for r in rows] == [(True, False), (False, True)]
    assert all(np.isfinite(r["nme"]) for r in rows)
    assert summary["pose"]["excluded"] == 1 and sum(summary["pose"]["counts"].values()) == 1
    assert "1 faces with a true angle beyond 99 degrees left out" in format_table(summary)


def test_aflw_yaw_error_is_scored_where_only_the_yaw_is_known():
    """AFLW crops know the yaw only; their square crops keep the photo's angles, so dffx eval
    scores the yaw. The mean shape's camera has yaw 0, so its error is minus the true yaw."""
    from dffx.eval import EvalOptions, evaluate

    summary, rows = evaluate(EvalOptions(dataset="aflw", root=DEV / "aflw-3ddfa-protocol-sample", progress=False),
                             None)
    truth = np.array([r["yaw"] for r in rows])
    np.testing.assert_allclose([r["pred_yaw"] for r in rows], 0.0, atol=1e-9)
    np.testing.assert_allclose([r["yaw_error"] for r in rows], -truth, atol=1e-9)
    yaw = summary["yaw_error"]
    assert yaw["faces"] == len(rows) == 24 and yaw["mae"] == pytest.approx(np.abs(truth).mean())
    assert yaw["bins"]["60-90"] == pytest.approx(np.abs(truth[np.abs(truth) > 60]).mean())
    assert "pose" not in summary
