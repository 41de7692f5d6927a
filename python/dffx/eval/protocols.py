"""The paper's benchmark protocols (Sec. IV-B) run over a dataset folder: ``dffx eval``.

* ``aflw2000-3d``: 68 points, NME / sqrt(w h) of the ground-truth 68-point box, |yaw| bins
  from ``--yaw-csv`` (AFLW's own yaw) or Pose_Para; Mean / Std over the bin means (Table II);
  plus the Table III variant over the visible inner points (iBUG 18-68).
* ``aflw``: 3DDFA's AFLW protocol on its 120x120 crops; 68 predicted points are mapped to the
  21 AFLW points (3DDFA's index groups), NME over the annotated points / max(w, h) of the
  68-point face box = roi side / sqrt(2) (the published protocol divides by sqrt(w h) of that
  box, which this layout lacks).
* ``300w``: NME by inter-pupil and inter-ocular distance for the common (helen + lfpw test),
  challenging (ibug) and full sets, whichever are present.
* ``synth``: the held-out (val) renders of a ``dffx synth`` set (:func:`dffx.synth.val_samples.load_synth_val`),
  scored as ``aflw2000-3d`` but with exact truth: |yaw| bins from the render camera, Table III's
  visible inner points from the depth-buffer visibility stored with each render.

Head pose: where the truth is known (AFLW2000-3D's ``Pose_Para``, the render camera) each face
also gets its pitch / yaw / roll errors and the summary their mean absolute error (MAE, degrees),
the metric head-pose papers report on AFLW2000 (:func:`dffx.eval.metrics.summarize_pose`), over
the faces whose true angles all lie within ±99 degrees, as they do (``excluded`` counts the rest).
AFLW2000-3D's angles were fitted with the BFM's head frame, not ICT-FaceKit's: the ``bias`` of
the summary shows the offset between the two (docs/design.md, "Angle signs").

Face boxes: by default every method starts from the ground-truth face box, i.e. the bounding
box of the ground-truth landmarks (AFLW: the 68-point box rebuilt from the crop's roi), which is
how 3DDFA's protocols crop. ``detector="mtcnn"`` (or ``"haar"``) uses :func:`dffx.detect.detect_faces`
(the detection overlapping the ground-truth box most; a miss falls back to the ground-truth box
and is counted in ``detector_missed``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..align.options import EVAL_DEFAULTS, AlignOptions
from .metrics import (INNER_68, POSE_ANGLES, YAW_BINS, aflw21_from_68, interocular_distance, interpupil_distance,
                      landmark_box_size, nme, nme_box, pose_errors, summarize_bins, summarize_pose, yaw_bin)
from .predictors import make_predictor

DATASETS = ("aflw2000-3d", "aflw", "300w", "synth")
# Head-pose papers score AFLW2000 on the faces whose true angles are all within +-99 degrees.
POSE_RANGE_DEG = 99.0


@dataclass
class EvalOptions:
    """What ``dffx eval`` was asked for."""

    dataset: str
    root: Path
    method: str = "mean-shape"
    limit: int | None = None
    yaw_csv: Path | None = None
    detector: str | None = None  # a dffx.detect.DETECTORS name: start from detected boxes
    progress: bool = True
    cascade: Path | None = None  # dff/sift: descent directions other than the shipped ones
    # dff/sift: the alignment settings (those of EVAL_SETTINGS apply to a given box); default: the
    # paper's protocol, one pass from the given box (EVAL_DEFAULTS)
    align: AlignOptions = EVAL_DEFAULTS
    # tiny faces: shrink each image so that its ground-truth face box's longer side is this many
    # pixels before aligning (None: as it is); the tiny-face network to use (None: the shipped one)
    face_size: float | None = None
    tiny_weights: Path | None = None


def _load(opts: EvalOptions):
    from .. import data

    if opts.dataset == "aflw2000-3d":
        return data.load_aflw2000_3d(opts.root, yaw_csv=opts.yaw_csv, limit=opts.limit)
    if opts.dataset == "aflw":
        return data.load_aflw_crops(opts.root, limit=opts.limit)
    if opts.dataset == "300w":
        return data.load_300w(opts.root, limit=opts.limit)
    if opts.dataset == "synth":
        from ..synth.val_samples import load_synth_val

        return load_synth_val(opts.root, limit=opts.limit)
    raise ValueError(f"unknown dataset '{opts.dataset}'; choose one of {', '.join(DATASETS)}")


def _shrink(image: np.ndarray, box: np.ndarray, face_size: float | None, stats: dict):
    """The image as a camera would have taken it with the face box ``face_size`` px on its
    longer side (area downscaling of the region around the face, :func:`dffx.tiny.degrade.shrink_to_face_size`),
    and the affine (2, 3) map from ``image`` pixels to it. A face already that small, or
    ``face_size`` None, keeps the image (identity map; counted in ``stats``)."""
    from ..tiny.degrade import Degradation, shrink_to_face_size

    if face_size is None:
        return image, np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if face_size >= max(box[2] - box[0], box[3] - box[1]):
        stats["face_already_smaller"] += 1
        return image, np.array([[1.0, 0, 0], [0, 1.0, 0]])
    return shrink_to_face_size(image, box, face_size, Degradation(interpolation="area"))


def _start_box(image, corners, detector: str | None, stats: dict) -> np.ndarray:
    """Face box in image pixels: ``corners`` (the ground-truth box), or the best-overlapping detection."""
    if detector is None:
        return corners
    from ..detect import box_iou, detect_faces

    found = detect_faces(image, detector=detector)
    if len(found):
        iou = box_iou(found, corners)
        if iou.max() > 0:
            return found[int(np.argmax(iou)), :4]
    stats["detector_missed"] += 1
    return corners


def evaluate(opts: EvalOptions, model=None) -> tuple[dict, list[dict]]:
    """Run one protocol.

    Args:
        opts: dataset, folder, method and options.
        model: a loaded :class:`dffx.FaceModel` (default: ``load_face_model()``).

    Returns:
        (summary, per_image rows). ``summary`` is the JSON object of ``dffx eval --json``:
        ``dataset``, ``method``, ``n``, ``bins``, ``mean``, ``std`` (AFLW2000-3D and AFLW),
        the protocol notes, what was skipped, and for 300W the per-subset NMEs.

    Raises:
        ValueError / DatasetFormatError: unknown dataset or method, malformed folder, no samples.
    """
    from tqdm import tqdm

    from ..model import load_face_model
    from .visibility import ground_truth_visibility

    model = model if model is not None else load_face_model()
    if opts.face_size is not None and not opts.face_size > 0:
        raise ValueError(f"face_size must be > 0 pixels, got {opts.face_size}")
    predictor = make_predictor(opts.method, model, opts.cascade, opts.align, tiny_weights=opts.tiny_weights)
    samples, report = _load(opts)
    if not samples:
        raise ValueError(f"no usable samples under '{opts.root}' ({len(report.skipped)} skipped)")
    stats = {"detector_missed": 0, "face_already_smaller": 0}
    rows = []
    for sample in tqdm(samples, desc=f"{opts.dataset} / {opts.method}", unit="face", disable=not opts.progress):
        image = sample.load_image()
        size = image.shape[:2]
        truth_box = sample.ground_truth_to_image(sample.face_box.reshape(2, 2), size).reshape(4)
        small, to_small = _shrink(image, truth_box, opts.face_size, stats)
        box = _start_box(small, _affine(to_small, truth_box.reshape(2, 2)).reshape(4), opts.detector, stats)
        prediction = predictor.predict(small, box)
        # back in the image's pixels (the camera's angles do not change with the scale)
        landmarks = _affine(np.linalg.inv(np.vstack([to_small, [0, 0, 1]]))[:2], prediction.landmarks)
        pred68 = sample.image_to_ground_truth(landmarks, size)
        row = {"name": sample.name, "yaw": sample.yaw_deg}
        gt = sample.landmarks
        if opts.dataset in ("aflw2000-3d", "synth"):
            row["nme"] = nme_box(pred68, gt)
            visible = sample.extra.get("visible68")
            if visible is None:
                visible = ground_truth_visibility(model, gt, size)
            inner_visible = np.zeros(68, bool)
            inner_visible[INNER_68] = visible[INNER_68]
            row["nme_inner_visible"] = nme_box(pred68, gt, mask=inner_visible)
            row["visible_inner"] = int(inner_visible.sum())
        elif opts.dataset == "aflw":
            row["nme"] = nme(aflw21_from_68(pred68), gt, max(landmark_box_size(sample.face_box.reshape(2, 2))))
            row["points"] = int((~np.isnan(gt).any(1)).sum())
        else:
            row["subset"] = sample.extra.get("subset", "other")
            row["nme_ipn"] = nme(pred68, gt, interpupil_distance(gt))
            row["nme_ion"] = nme(pred68, gt, interocular_distance(gt))
        if "pose_deg" in sample.extra and sample.crop_box is None:  # a crop's resize would distort angles
            if np.abs(sample.extra["pose_deg"]).max() <= POSE_RANGE_DEG:
                pose = pose_errors(np.degrees(prediction.camera[1:4]), sample.extra["pose_deg"])
                row.update({f"pose_{k}": v for k, v in pose.items()})
            else:
                row["pose_excluded"] = True
        elif opts.dataset == "aflw" and sample.yaw_deg is not None and _uniform_resize(sample, size) \
                and abs(sample.yaw_deg) <= POSE_RANGE_DEG:
            # AFLW knows the yaw only (dffx's sign: checked on the 24-crop sample, correlation 0.97)
            row["pred_yaw"] = float(np.degrees(prediction.camera[2]))
            row["yaw_error"] = (row["pred_yaw"] - sample.yaw_deg + 180.0) % 360.0 - 180.0
        if sample.yaw_deg is not None:
            row["bin"] = yaw_bin(sample.yaw_deg)
        rows.append(row)
    summary = _summarize(opts, rows, report, samples, stats)
    return summary, rows


def _affine(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (K, 2) through the affine (2, 3) ``M``."""
    return np.asarray(points, np.float64) @ M[:, :2].T + M[:, 2]


def _uniform_resize(sample, size) -> bool:
    """True when a crop was resized by one scale in x and y (so its angles are the photo's)."""
    if sample.crop_box is None:
        return True
    x0, y0, x1, y1 = sample.crop_box
    return abs((x1 - x0) / (y1 - y0) - size[1] / size[0]) < 0.01 * size[1] / size[0]


def _summarize(opts, rows, report, samples, stats) -> dict:
    """The JSON summary of an evaluation: what ran, the NME per yaw bin or subset, pose errors."""
    summary = {"dataset": opts.dataset, "method": opts.method, "n": len(rows),
               "face_boxes": f"detector (dffx.detect, {opts.detector})" if opts.detector
               else "ground truth: bounding box of the ground-truth landmarks",
               "skipped": [{"name": n, "reason": r} for n, r in report.skipped]}
    if opts.detector:
        summary["detector_missed"] = stats["detector_missed"]
    if opts.face_size is not None:
        summary["face_size"] = opts.face_size
        summary["face_already_smaller"] = stats["face_already_smaller"]
    if opts.tiny_weights is not None:
        summary["tiny_weights"] = str(opts.tiny_weights)
    if opts.cascade is not None:
        summary["cascade"] = str(opts.cascade)
    summary.update(_settings_summary(opts))
    if opts.dataset == "300w":
        summary.update(_subsets_summary(rows))
    else:
        summary.update(_bins_summary(opts, rows, samples))
    pose = _pose_summary(opts, rows)
    if pose:
        summary["pose"] = pose
    yaw_error = _yaw_error_summary(rows, samples)
    if yaw_error:
        summary["yaw_error"] = yaw_error
    return summary


def _settings_summary(opts) -> dict:
    """The alignment settings that differ from the paper's protocol."""
    align, out = opts.align, {}
    if align.refine:
        out["refine"] = align.refine
        if align.converged_iou is not None:
            out["converged_iou"] = align.converged_iou
    if align.mirror:
        out["mirror"] = True
    if not align.camera_refit and opts.method != "mean-shape":
        out["camera_refit"] = False
    if align.precision != "float32":
        out["precision"] = align.precision
    if align.backend != "torch":
        out["backend"] = align.backend
    if align.tiny != EVAL_DEFAULTS.tiny and opts.method != "mean-shape":
        out["tiny"] = align.tiny
    if align.tiny_method != EVAL_DEFAULTS.tiny_method and opts.method != "mean-shape":
        out["tiny_method"] = align.tiny_method
    return out


def _bins_summary(opts, rows, samples) -> dict:
    """NME per yaw bin (AFLW2000-3D, AFLW, renders), with the visible inner landmarks' where known."""
    yaws = np.array([r["yaw"] for r in rows], np.float64)
    out = dict(summarize_bins(np.array([r["nme"] for r in rows]), yaws))
    out["yaw_source"] = samples[0].yaw_source
    if opts.dataset in ("aflw2000-3d", "synth"):
        out["normalisation"] = "sqrt(w * h) of the ground-truth 68-point box"
        inner = summarize_bins(np.array([r["nme_inner_visible"] for r in rows]), yaws)
        inner["visibility"] = ("depth test of the ICT model fitted to the ground truth (dffx.eval.visibility)"
                               if opts.dataset == "aflw2000-3d" else "the depth-buffer visibility stored with each render")
        inner["visibility"] += "; inner = iBUG points 18-68"
        out["inner_visible"] = inner
    else:
        out["normalisation"] = ("max(w, h) of the 68-point face box = roi side / sqrt(2) (the published "
                                "protocol uses sqrt(w * h) of that box, which this layout lacks)")
        out["points"] = "21 AFLW points, annotated ones only; 68 -> 21 by 3DDFA's index groups"
    return out


def _subsets_summary(rows) -> dict:
    """300-W: NME per subset, normalised two ways."""
    def stats(sel):
        return {"n": len(sel), "nme_ipn": 100 * float(np.mean([r["nme_ipn"] for r in sel])),
                "nme_ion": 100 * float(np.mean([r["nme_ion"] for r in sel]))}

    subsets = {}
    groups = {"common": ("common",), "challenging": ("challenging",), "full": ("common", "challenging")}
    for name, members in groups.items():
        sel = [r for r in rows if r["subset"] in members]
        if sel:
            subsets[name] = stats(sel)
    if not subsets or any(r["subset"] == "other" for r in rows):
        subsets["all"] = stats(rows)
    return {"subsets": subsets, "normalisation": ("nme_ipn: inter-pupil distance (pupil = mean of the 6 eye "
                                                  "points); nme_ion: inter-ocular distance (outer eye corners)")}


def _pose_summary(opts, rows) -> dict | None:
    """Head-pose errors where the truth knows all three angles (None elsewhere)."""
    posed = [r for r in rows if "pose_yaw" in r]
    if not posed:
        return None
    pose = summarize_pose([{k: r[f"pose_{k}"] for k in (*POSE_ANGLES, "rotation")} for r in posed],
                          np.array([r["yaw"] for r in posed], np.float64))
    pose["truth"] = ("Pose_Para (fitted with the BFM's head frame)" if opts.dataset == "aflw2000-3d"
                     else "the render camera")
    pose["excluded"] = sum(bool(r.get("pose_excluded")) for r in rows)
    return pose


def _yaw_error_summary(rows, samples) -> dict | None:
    """The yaw error where the truth knows the yaw only (AFLW; None elsewhere)."""
    yawed = [r for r in rows if "yaw_error" in r]
    if not yawed:
        return None
    errors = np.abs([r["yaw_error"] for r in yawed])
    truth = np.array([r["yaw"] for r in yawed], np.float64)
    yaw = summarize_bins(errors / 100.0, truth)  # summarize_bins reports percent: back to degrees
    return {"mae": float(errors.mean()), "bias": float(np.mean([r["yaw_error"] for r in yawed])),
            "bins": yaw["bins"], "counts": yaw["counts"], "faces": len(yawed), "truth": samples[0].yaw_source}


def _cell(v) -> str:
    return "   -  " if v is None else f"{v:6.2f}"


def format_table(summary: dict) -> str:
    """The summary as a table in the paper's layout (NME in %)."""
    lines = [f"{summary['dataset']}: {summary['n']} faces, method {summary['method']}; boxes: {summary['face_boxes']}"]
    if "face_size" in summary:
        lines.append(f"images shrunk so that the face box is {summary['face_size']:g} px "
                     f"({summary['face_already_smaller']} faces already smaller kept as they are)")
    lines += _settings_lines(summary)
    if "bins" in summary:
        lines += _bins_lines(summary)
    if "pose" in summary:
        lines += _pose_lines(summary)
    if "yaw_error" in summary:
        yaw = summary["yaw_error"]
        lines += ["", f"Yaw error, degrees (truth: {yaw['truth']}; {yaw['faces']} faces)",
                  f"{'MAE':<24}" + "".join(f"{b:>8} " for b in YAW_BINS) + f"{'all':>8} {'bias':>8}",
                  f"{summary['method']:<24}" + "".join(f"{_cell(yaw['bins'][b]):>8} " for b in YAW_BINS)
                  + f"{_cell(yaw['mae']):>8} {_cell(yaw['bias']):>8}"]
    if "subsets" in summary:
        lines += [f"NME normalised by {summary['normalisation']}", "",
                  f"{'Subset':<14}{'n':>6}{'NME ipn %':>12}{'NME ion %':>12}"]
        lines += [f"{name:<14}{part['n']:>6}{part['nme_ipn']:>12.2f}{part['nme_ion']:>12.2f}"
                  for name, part in summary["subsets"].items()]
    if summary.get("skipped"):
        lines.append(f"\nskipped {len(summary['skipped'])}: " +
                     "; ".join(f"{s['name']} ({s['reason']})" for s in summary["skipped"][:5]))
    if "detector_missed" in summary:
        lines.append(f"detector missed {summary['detector_missed']} faces (ground-truth box used for them)")
    return "\n".join(lines)


def _settings_lines(summary: dict) -> list[str]:
    lines = []
    if "cascade" in summary:
        lines.append(f"cascade: {summary['cascade']}")
    if "refine" in summary:
        until = f" (a face stops at box IoU >= {summary['converged_iou']})" if "converged_iou" in summary else ""
        lines.append(f"re-crop passes: {summary['refine']}{until}")
    if summary.get("mirror"):
        lines.append("mirror averaging: each face also aligned in the mirror image, the two averaged")
    if summary.get("camera_refit") is False:
        lines.append("camera refit: off (the paper's cascade)")
    if "precision" in summary:
        lines.append(f"network precision: {summary['precision']}")
    if "backend" in summary:
        lines.append(f"network backend: {summary['backend']}")
    if "tiny" in summary or "tiny_method" in summary:
        lines.append(f"tiny-face path: {summary.get('tiny', 'auto')}, {summary.get('tiny_method', EVAL_DEFAULTS.tiny_method)}")
    return lines


def _bins_lines(summary: dict) -> list[str]:
    lines = [f"yaw bins from {summary['yaw_source']}; NME normalised by {summary['normalisation']}"]
    header = f"{'Method':<24}{'[0,30]':>8}{'[30,60]':>9}{'[60,90]':>9}{'Mean':>8}{'Std':>8}"
    tables = [("", summary)]
    if "inner_visible" in summary:
        tables.append((" (visible inner, Table III)", summary["inner_visible"]))
    for title, part in tables:
        lines += ["", header] if not title else ["", f"Visible inner landmarks{title}; visibility: "
                                                     f"{part['visibility']}", header]
        lines.append(f"{summary['method']:<24}" + "".join(f"{_cell(part['bins'][b]):>8} " for b in YAW_BINS)
                     + f"{_cell(part['mean']):>7} {_cell(part['std']):>7}")
        lines.append(f"{'(faces per bin)':<24}" + "".join(f"{part['counts'][b]:>8} " for b in YAW_BINS))
    return lines


def _pose_lines(summary: dict) -> list[str]:
    pose = summary["pose"]
    excluded = f"; {pose['excluded']} faces with a true angle beyond 99 degrees left out" if pose["excluded"] else ""
    names = (*POSE_ANGLES, "mean", "rotation")
    return ["", f"Head pose, degrees (truth: {pose['truth']}{excluded}); bins: mean of the three angles' MAE",
            f"{'MAE':<24}" + "".join(f"{name:>8} " for name in names) + "".join(f"{b:>8} " for b in YAW_BINS),
            f"{summary['method']:<24}" + "".join(f"{_cell(pose['mae'][k]):>8} " for k in names)
            + "".join(f"{_cell(pose['bins'][b]):>8} " for b in YAW_BINS),
            f"{'bias (mean signed)':<24}" + "".join(f"{_cell(pose['bias'][k]):>8} " for k in POSE_ANGLES)]


def write_per_image_csv(rows: list[dict], path: Path) -> None:
    """One CSV line per face with every per-image field (NME as fractions)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
