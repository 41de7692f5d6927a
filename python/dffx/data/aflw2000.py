"""AFLW2000-3D (Zhu et al., 3DDFA): 2000 450x450 images with 68 fitted 3D landmarks each."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import scipy.io

from .ibug import _check_limit, _check_root, landmark_box
from .sample import DatasetFormatError, FaceSample, LoadReport

__all__ = ["load_aflw2000_3d", "read_yaw_csv"]

_IMAGE_SUFFIX = ".jpg"
_MAT_SUFFIX = ".mat"


def read_yaw_csv(path) -> dict[str, float]:
    """Read a ``name,yaw_deg`` table (one face a line; an optional ``name,yaw_deg`` header).

    Names may carry a ``.jpg`` / ``.mat`` suffix, which is dropped. Blank lines are ignored.

    Returns:
        ``{name: yaw in degrees}``.

    Raises:
        DatasetFormatError: (message names the file and line) unreadable file, a line without
            exactly two fields, a non-numeric or non-finite yaw, or one name with two different yaws.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError(f"cannot read yaw table {path}: {exc}") from None
    yaws: dict[str, float] = {}
    for lineno, row in enumerate(rows, start=1):
        row = [f.strip() for f in row]
        if not any(row):
            continue
        if len(row) != 2:
            raise DatasetFormatError(f"{path} line {lineno}: expected 'name,yaw_deg', got {','.join(row)!r}")
        name, value = row
        if lineno == 1 and name.lower() == "name" and value.lower() == "yaw_deg":
            continue
        for suffix in (_IMAGE_SUFFIX, _MAT_SUFFIX):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
        try:
            yaw = float(value)
        except ValueError:
            raise DatasetFormatError(f"{path} line {lineno}: yaw {value!r} is not a number") from None
        if not math.isfinite(yaw):
            raise DatasetFormatError(f"{path} line {lineno}: yaw {value!r} is not finite")
        if name in yaws and yaws[name] != yaw:
            raise DatasetFormatError(f"{path} line {lineno}: {name} appears twice with yaws {yaws[name]} and {yaw}")
        yaws[name] = yaw
    return yaws


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(pt3d_68 (3, 68), Pose_Para (7,), roi (4,) or None) of one AFLW2000-3D .mat file."""
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["pt3d_68", "Pose_Para", "roi"])
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError, OSError... on garbage
        raise DatasetFormatError(f"cannot read AFLW2000-3D annotation {path}: {type(exc).__name__}: {exc}") from None
    missing = [k for k in ("pt3d_68", "Pose_Para") if k not in mat]
    if missing:
        raise DatasetFormatError(f"AFLW2000-3D annotation {path} lacks {', '.join(missing)}")
    try:
        pt3d = np.asarray(mat["pt3d_68"], dtype=np.float64)
        pose = np.asarray(mat["Pose_Para"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"AFLW2000-3D annotation {path}: pt3d_68 / Pose_Para are not numeric") from None
    if pt3d.shape != (3, 68):
        raise DatasetFormatError(f"AFLW2000-3D annotation {path}: pt3d_68 has shape {pt3d.shape}, expected (3, 68)")
    if pose.size != 7 or pose.ndim > 2 or (pose.ndim == 2 and 1 not in pose.shape):
        raise DatasetFormatError(f"AFLW2000-3D annotation {path}: Pose_Para has shape {pose.shape}, expected (1, 7)")
    pose = pose.reshape(7)
    if not np.isfinite(pt3d[:2]).all() or not np.isfinite(pose[1]):
        raise DatasetFormatError(f"AFLW2000-3D annotation {path}: non-finite pt3d_68 or Pose_Para yaw")
    roi = None
    if "roi" in mat:
        try:
            roi = np.asarray(mat["roi"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            roi = None
    return pt3d, pose, roi


def load_aflw2000_3d(root, yaw_csv=None, limit: int | None = None) -> tuple[list[FaceSample], LoadReport]:
    """Load AFLW2000-3D: every ``imageNNNNN.jpg`` of ``root`` with its same-stem ``.mat``.

    Samples are in the dataset's order: sorted by file name. Each :class:`FaceSample` has:

    - ``name``: the file stem (``image00050``); ``image_path``: the ``.jpg`` (450x450 in the
      release); ``crop_box``: None (the landmarks are in that image's pixels);
    - ``landmarks``: float64 (68, 2) = ``pt3d_68[:2].T`` unchanged. 3DDFA's benchmark uses
      ``pt3d_68`` directly as 0-based pixel coordinates (x right, y down), and so does dffx;
    - ``face_box``: float64 (4,) ``(min x, min y, max x, max y)`` of those 68 points (the
      ground-truth box rule of the AFLW2000-3D protocol);
    - ``yaw_deg``: from ``yaw_csv`` when given (``yaw_source`` = that file's name, e.g.
      ``"yaw.csv"``); a face missing from the table is skipped and recorded. Otherwise
      ``degrees(Pose_Para[0, 1])`` (signed; ``yaw_source = "Pose_Para"``). Note the two differ:
      the table may hold absolute yaws from another estimate (the shared sample's ``yaw.csv`` does);
    - ``extra``: ``pose_para`` float64 (7,) (pitch, yaw, roll in radians, tx, ty, tz, scale),
      ``pose_deg`` float64 (3,) its pitch, yaw and roll in degrees (the signs of dffx's camera,
      ``docs/design.md``),
      ``pt3d_68`` float64 (3, 68), ``roi`` float64 (4,) as stored (or None if the .mat lacks it;
      it is in the coordinates of the original AFLW photo, not of the 450x450 image).

    A ``.jpg`` without ``.mat`` or a ``.mat`` without ``.jpg`` is skipped and recorded in
    ``report.skipped`` as ``(file name, reason)``. Other files (``yaw.csv``...) are ignored.

    Args:
        root: the AFLW2000-3D folder (``.jpg`` and ``.mat`` side by side).
        yaw_csv: optional ``name,yaw_deg`` table (see :func:`read_yaw_csv`).
        limit: stop after ``limit`` loaded samples (the first ones in sorted order; skipped
            files before them are still reported); None loads all.

    Returns:
        ``(samples, report)``.

    Raises:
        DatasetFormatError: ``root`` missing, not a folder, or without any ``.jpg`` / ``.mat``; a
            ``.mat`` that cannot be read, lacks ``pt3d_68`` / ``Pose_Para`` or has wrong shapes
            (message names the file); a malformed ``yaw_csv``.
        ValueError: a bad ``limit``.
    """
    limit = _check_limit(limit)
    root = _check_root(root, "AFLW2000-3D")
    yaws = None
    yaw_source = "Pose_Para"
    if yaw_csv is not None:
        yaws = read_yaw_csv(yaw_csv)
        yaw_source = Path(yaw_csv).name

    images: dict[str, Path] = {}
    mats: dict[str, Path] = {}
    for entry in root.iterdir():
        suffix = entry.suffix.lower()
        if suffix == _IMAGE_SUFFIX and entry.is_file():
            images[entry.stem] = entry
        elif suffix == _MAT_SUFFIX and entry.is_file():
            mats[entry.stem] = entry
    if not images and not mats:
        raise DatasetFormatError(f"AFLW2000-3D folder {root} holds no .jpg or .mat file")

    report = LoadReport(dataset="AFLW2000-3D", root=root)
    samples: list[FaceSample] = []
    for name in sorted(set(images) | set(mats)):
        if limit is not None and len(samples) >= limit:
            break
        if name not in mats:
            report.skipped.append((images[name].name, f"no {name}.mat annotation next to the image"))
            continue
        if name not in images:
            report.skipped.append((mats[name].name, f"no {name}.jpg image next to the annotation"))
            continue
        pt3d, pose, roi = _read_mat(mats[name])
        if yaws is not None:
            if name not in yaws:
                report.skipped.append((images[name].name, f"no yaw for {name} in {yaw_source}"))
                continue
            yaw = yaws[name]
        else:
            yaw = math.degrees(pose[1])
        landmarks = np.ascontiguousarray(pt3d[:2].T)
        samples.append(FaceSample(
            name=name,
            image_path=images[name],
            landmarks=landmarks,
            face_box=landmark_box(landmarks),
            yaw_deg=float(yaw),
            yaw_source=yaw_source,
            extra={"pose_para": pose, "pose_deg": np.degrees(pose[:3]), "pt3d_68": pt3d, "roi": roi},
        ))
    report.loaded = len(samples)
    return samples, report
