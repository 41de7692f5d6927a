"""AFLW under 3DDFA's protocol: 120x120 face crops with 21 landmarks in the original photos.

Folder layout (as 3DDFA's ``test.data`` ships it)::

    AFLW_GT_crop/                 the crops, 120x120 .jpg
    AFLW_GT_crop.list             crop file names, one a line: the order of every array below
    AFLW_GT_pts21.npy             (N, 2, 21) landmarks in ORIGINAL-photo pixels, x = -1 if missing
    AFLW_GT_crop_roi_box.npy      (N, 4) x0, y0, x1, y1 of each crop in the original photo
    AFLW_GT_crop_yaws.npy         (N,) yaw in degrees
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .ibug import _check_limit, _check_root
from .sample import DatasetFormatError, FaceSample, LoadReport

__all__ = ["load_aflw_crops", "restore_roi"]

LIST_FILE = "AFLW_GT_crop.list"
PTS_FILE = "AFLW_GT_pts21.npy"
ROI_FILE = "AFLW_GT_crop_roi_box.npy"
YAW_FILE = "AFLW_GT_crop_yaws.npy"
CROP_DIR = "AFLW_GT_crop"


def restore_roi(roi) -> np.ndarray:
    """Undo the clipping of a crop box at the photo border (the crops themselves are not clipped).

    3DDFA crops a square of side ``sqrt(2) * max(w, h)`` of the 68-point face box around its centre,
    padding with black where it leaves the photo, and resizes it to 120x120. The stored roi,
    however, is clipped at the photo border in about 1% of the set (non-square rois), while the
    crop image is still the full square: in the shared sample, ``image02788`` has roi
    ``(54, 103, 413, 450)`` (359 x 347) and its crop ends in 4 black rows = 120 * 12 / 359, i.e.
    the crop covers ``y`` in [103, 462], past the 450-px photo. Mapping crop pixels with the
    clipped roi would be off by up to 3% of the box there.

    Rule: ``side = max(w, h)``; on the shorter axis, if the box starts at 0 (clipped at the
    top/left border) the start is moved to ``end - side``, otherwise the end is moved to
    ``start + side``. A square roi is returned unchanged (a box clipped on both axes, or on both
    ends of one axis, cannot be told from the roi alone and is left as it is).

    Args:
        roi: (4,) ``(x0, y0, x1, y1)``.

    Returns:
        float64 (4,) square box.
    """
    x0, y0, x1, y1 = (float(v) for v in np.asarray(roi, dtype=np.float64).reshape(4))
    w, h = x1 - x0, y1 - y0
    side = max(w, h)
    if w < side:
        if x0 <= 0:
            x0 = x1 - side
        else:
            x1 = x0 + side
    elif h < side:
        if y0 <= 0:
            y0 = y1 - side
        else:
            y1 = y0 + side
    return np.array([x0, y0, x1, y1], dtype=np.float64)


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetFormatError(f"AFLW crop protocol file {path} is missing")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError / OSError / EOFError on a corrupt file
        raise DatasetFormatError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


def load_aflw_crops(root, limit: int | None = None,
                    restore_clipped_roi: bool = True) -> tuple[list[FaceSample], LoadReport]:
    """Load the AFLW test set of 3DDFA's protocol (crops + 21 original-photo landmarks).

    Each :class:`FaceSample` (in the list file's order) has:

    - ``name``: the crop's file stem; ``image_path``: ``root/AFLW_GT_crop/<list entry>``;
    - ``landmarks``: float64 (21, 2) = ``pts21[i].T`` in ORIGINAL-photo pixels (0-based, x right,
      y down), with NaN rows where the point is missing: where either coordinate is -1 (the
      release marks missing points by x = -1; their y holds a filler value, 452 in the sample);
    - ``crop_box``: float64 (4,), the box of the original photo the 120x120 crop shows, so that
      :meth:`FaceSample.image_to_ground_truth` maps crop pixels to ground truth with 3DDFA's rule
      ``x = x0 + u * (x1 - x0) / 120``. It is the stored roi, or with ``restore_clipped_roi``
      (default) the roi with its border clipping undone by :func:`restore_roi` (which changes
      only non-square rois, about 1% of the set);
    - ``face_box``: float64 (4,) the 68-point face box the crop was made from, reconstructed as
      the square with the crop box's centre and side ``max(w, h) / sqrt(2)`` of the crop box
      (the max, so a roi clipped on one axis still gives the unclipped side);
    - ``yaw_deg``: ``AFLW_GT_crop_yaws.npy[i]`` (degrees, signed), ``yaw_source`` =
      ``"AFLW_GT_crop_yaws.npy"``;
    - ``extra``: ``roi`` float64 (4,) as stored, ``roi_clipped`` (bool, the stored roi is not
      square), ``index`` (row in the arrays).

    A listed crop whose image file is missing is skipped and recorded in ``report.skipped``.

    Args:
        root: the folder holding the list, the three arrays and ``AFLW_GT_crop/``.
        limit: stop after ``limit`` loaded samples (in list order); None loads all.
        restore_clipped_roi: see ``crop_box``; False uses the stored roi as is.

    Returns:
        ``(samples, report)``.

    Raises:
        DatasetFormatError: ``root`` missing or not a folder; the list, an array or the crop folder
            missing or unreadable; arrays whose shapes disagree with each other or with the list
            (pts21 must be (N, 2, 21), roi (N, 4), yaws (N,) for the N list entries; the message
            names the file and the shapes); an empty list; a degenerate roi.
        ValueError: a bad ``limit``.
    """
    limit = _check_limit(limit)
    root = _check_root(root, "AFLW (3DDFA crops)")
    list_path = root / LIST_FILE
    if not list_path.is_file():
        raise DatasetFormatError(f"AFLW crop list {list_path} is missing")
    try:
        entries = [ln.strip() for ln in list_path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"cannot read {list_path}: {exc}") from None
    entries = [e for e in entries if e]
    if not entries:
        raise DatasetFormatError(f"AFLW crop list {list_path} is empty")
    crop_dir = root / CROP_DIR
    if not crop_dir.is_dir():
        raise DatasetFormatError(f"AFLW crop folder {crop_dir} is missing")

    pts = _load_npy(root / PTS_FILE)
    rois = _load_npy(root / ROI_FILE)
    yaws = _load_npy(root / YAW_FILE)
    n = len(entries)
    shapes = (f"{LIST_FILE}: {n} entries, {PTS_FILE}: {pts.shape}, {ROI_FILE}: {rois.shape}, "
              f"{YAW_FILE}: {yaws.shape}")
    for fname, arr, want in ((PTS_FILE, pts, (n, 2, 21)), (ROI_FILE, rois, (n, 4)), (YAW_FILE, yaws, (n,))):
        if arr.shape != want:
            raise DatasetFormatError(f"{root / fname} has shape {arr.shape}, expected {want} ({shapes})")
        if not np.issubdtype(arr.dtype, np.number):
            raise DatasetFormatError(f"{root / fname} has non-numeric dtype {arr.dtype}")
    pts = pts.astype(np.float64)
    rois = rois.astype(np.float64)  # stored as uint16: never subtract before converting
    yaws = yaws.astype(np.float64)

    report = LoadReport(dataset="AFLW", root=root)
    samples: list[FaceSample] = []
    for i, entry in enumerate(entries):
        if limit is not None and len(samples) >= limit:
            break
        image_path = crop_dir / entry
        if not image_path.is_file():
            report.skipped.append((entry, f"crop image {image_path} is missing"))
            continue
        roi = rois[i]
        w, h = roi[2] - roi[0], roi[3] - roi[1]
        if not (np.isfinite(roi).all() and w > 0 and h > 0):
            raise DatasetFormatError(f"{root / ROI_FILE} row {i} ({entry}): degenerate roi {roi.tolist()}")
        crop_box = restore_roi(roi) if restore_clipped_roi else roi.copy()
        cx, cy = (crop_box[0] + crop_box[2]) / 2, (crop_box[1] + crop_box[3]) / 2
        half = max(crop_box[2] - crop_box[0], crop_box[3] - crop_box[1]) / math.sqrt(2) / 2
        landmarks = pts[i].T.copy()
        landmarks[(landmarks == -1).any(axis=1)] = np.nan
        samples.append(FaceSample(
            name=Path(entry).stem,
            image_path=image_path,
            landmarks=landmarks,
            face_box=np.array([cx - half, cy - half, cx + half, cy + half]),
            yaw_deg=float(yaws[i]),
            yaw_source=YAW_FILE,
            crop_box=crop_box,
            extra={"roi": roi.copy(), "roi_clipped": bool(w != h), "index": i},
        ))
    report.loaded = len(samples)
    return samples, report
