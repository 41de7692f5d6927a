"""Error metrics of the face-alignment benchmarks (paper Sec. IV-B, as 3DDFA computes them).

All landmarks are (K, 2) float pixels, 0-based; NaN rows mark ground-truth points that are not
annotated and are left out of every mean.
"""

from __future__ import annotations

import numpy as np

YAW_BINS = ("0-30", "30-60", "60-90")

# 1-based iBUG indices averaged into each of AFLW's 21 points (3DDFA's benchmark_aflw.py):
# brows 18 20 22 | 23 25 27, eyes 37 mean(37-42) 40 | 43 mean(43-48) 46, ear lobes ~ jaw 3 | 15,
# nose 32 31 36, mouth 49 mean(61-68) 55, chin 9.
AFLW21_FROM_68 = [[18], [20], [22], [23], [25], [27], [37], [37, 38, 39, 40, 41, 42], [40], [43],
                  [43, 44, 45, 46, 47, 48], [46], [3], [32], [31], [36], [15], [49],
                  [61, 62, 63, 64, 65, 66, 67, 68], [55], [9]]

INNER_68 = np.arange(17, 68)  # iBUG points 18-68 (1-based): everything but the jaw contour


def landmark_box_size(points: np.ndarray) -> tuple[float, float]:
    """(width, height) of the bounding box of the non-NaN points."""
    p = np.asarray(points, np.float64)
    p = p[~np.isnan(p).any(1)]
    if len(p) == 0:
        raise ValueError("no annotated points to build a box from")
    return float(np.ptp(p[:, 0])), float(np.ptp(p[:, 1]))


def nme(pred: np.ndarray, gt: np.ndarray, norm: float, mask: np.ndarray | None = None) -> float:
    """Normalised mean error: mean Euclidean distance over the valid points, divided by ``norm``.

    Args:
        pred, gt: (K, 2) pixels; NaN rows of ``gt`` are ignored.
        norm: normalising length in pixels (> 0).
        mask: optional (K,) bool, points to include (ANDed with the annotated ones).

    Returns:
        The NME as a fraction (multiply by 100 for %); NaN if no point is left.

    Raises:
        ValueError: shapes differ or norm <= 0.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"pred and gt must both be (K, 2), got {pred.shape} and {gt.shape}")
    if not norm > 0:
        raise ValueError(f"normalising length must be > 0, got {norm}")
    valid = ~np.isnan(gt).any(1)
    if mask is not None:
        valid &= np.asarray(mask, bool)
    if not valid.any():
        return float("nan")
    return float(np.linalg.norm(pred[valid] - gt[valid], axis=1).mean() / norm)


def nme_box(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """NME normalised by sqrt(w * h) of the ground-truth landmark box (AFLW2000-3D protocol)."""
    w, h = landmark_box_size(gt)
    return nme(pred, gt, np.sqrt(w * h), mask)


def aflw21_from_68(points68: np.ndarray) -> np.ndarray:
    """Map 68 iBUG points (68, 2) to AFLW's 21 points (21, 2) with 3DDFA's index groups."""
    p = np.asarray(points68, np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"expected (68, 2) points, got {p.shape}")
    return np.stack([p[np.asarray(group) - 1].mean(0) for group in AFLW21_FROM_68])


def interpupil_distance(gt68: np.ndarray) -> float:
    """Distance between the pupils, each the mean of its eye's 6 points (iBUG 37-42, 43-48)."""
    gt68 = np.asarray(gt68, np.float64)
    return float(np.linalg.norm(gt68[36:42].mean(0) - gt68[42:48].mean(0)))


def interocular_distance(gt68: np.ndarray) -> float:
    """Distance between the outer eye corners (iBUG points 37 and 46)."""
    gt68 = np.asarray(gt68, np.float64)
    return float(np.linalg.norm(gt68[36] - gt68[45]))


def yaw_bin(yaw_deg: float) -> str:
    """Bin of |yaw|: "0-30" for [0, 30], "30-60" for (30, 60], "60-90" above (|yaw| > 90 too)."""
    a = abs(float(yaw_deg))
    return "0-30" if a <= 30 else ("30-60" if a <= 60 else "60-90")


def summarize_bins(errors: np.ndarray, yaws_deg: np.ndarray) -> dict:
    """Per-bin mean NME (%) and the paper's Mean / Std over the three bin means.

    Mean = mean of the bin means; Std = their sample standard deviation (ddof = 1), which is how
    the paper's tables are built (3DDFA 3.78 / 4.54 / 7.93 -> 5.42 / 2.21). Bins without samples
    are None and left out of Mean / Std (``complete`` says whether all three were present).

    Args:
        errors: (N,) NME fractions (NaN entries are ignored).
        yaws_deg: (N,) yaw in degrees.

    Returns:
        dict with ``bins`` {bin: mean % or None}, ``counts`` {bin: n}, ``mean``, ``std``, ``complete``.
    """
    errors, yaws = np.asarray(errors, np.float64), np.asarray(yaws_deg, np.float64)
    labels = np.array([yaw_bin(y) for y in yaws])
    bins, counts = {}, {}
    for b in YAW_BINS:
        sel = (labels == b) & ~np.isnan(errors)
        counts[b] = int(sel.sum())
        bins[b] = float(100 * errors[sel].mean()) if sel.any() else None
    present = [v for v in bins.values() if v is not None]
    return {
        "bins": bins,
        "counts": counts,
        "mean": float(np.mean(present)) if present else None,
        "std": float(np.std(present, ddof=1)) if len(present) > 1 else None,
        "complete": len(present) == len(YAW_BINS),
    }


POSE_ANGLES = ("pitch", "yaw", "roll")


def pose_errors(pred_deg, truth_deg) -> dict:
    """Head-pose errors of one face, in degrees.

    Args:
        pred_deg, truth_deg: (3,) pitch, yaw, roll in degrees, both in dffx's camera convention
            (R = Rx(-pitch) Ry(-yaw) Rz(-roll), ``docs/design.md``; the signs of AFLW2000-3D's
            ``Pose_Para``).

    Returns:
        dict: ``pitch``, ``yaw``, ``roll``: signed errors pred - truth wrapped to [-180, 180)
        (the per-angle errors whose absolute means are the head-pose benchmarks' MAE);
        ``rotation``: the geodesic angle of R_pred R_truth^T in [0, 180], which no choice of
        Euler convention changes.

    Raises:
        ValueError: an input is not 3 finite numbers.
    """
    from ..geometry.camera import rotation_matrix

    pred, truth = (np.asarray(v, np.float64) for v in (pred_deg, truth_deg))
    if pred.shape != (3,) or truth.shape != (3,) or not (np.isfinite(pred).all() and np.isfinite(truth).all()):
        raise ValueError(f"poses must be 3 finite angles (pitch, yaw, roll), got {pred} and {truth}")
    signed = (pred - truth + 180.0) % 360.0 - 180.0
    relative = rotation_matrix(*np.radians(pred)) @ rotation_matrix(*np.radians(truth)).T
    cos_angle = np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)
    out = {name: float(e) for name, e in zip(POSE_ANGLES, signed)}
    out["rotation"] = float(np.degrees(np.arccos(cos_angle)))
    return out


def summarize_pose(errors: list[dict], yaws_deg: np.ndarray) -> dict:
    """Head-pose errors over a set: the benchmarks' MAE per angle and by |yaw| bin.

    Args:
        errors: one :func:`pose_errors` dict per face.
        yaws_deg: (N,) the faces' yaw in degrees (for the bins, as :func:`yaw_bin`).

    Returns:
        dict: ``mae`` {pitch, yaw, roll, mean (of the three), rotation}: mean absolute error over
        all faces in degrees (how head-pose papers report AFLW2000); ``bias`` {pitch, yaw, roll}:
        mean signed error (a constant offset between two head frames shows here); ``bins``
        {bin: mean of the three angles' MAE or None}; ``counts`` {bin: n}.

    Raises:
        ValueError: no faces, or as many yaws as faces not given.
    """
    yaws = np.asarray(yaws_deg, np.float64)
    if not errors or len(errors) != len(yaws):
        raise ValueError(f"need one yaw per face and at least one face, got {len(errors)} faces and {len(yaws)} yaws")
    signed = np.array([[e[a] for a in POSE_ANGLES] for e in errors])
    mae = dict(zip(POSE_ANGLES, np.abs(signed).mean(0).tolist()))
    mae["mean"] = float(np.mean(list(mae.values())))
    mae["rotation"] = float(np.mean([e["rotation"] for e in errors]))
    labels = np.array([yaw_bin(y) for y in yaws])
    per_face = np.abs(signed).mean(1)
    bins = {b: (float(per_face[labels == b].mean()) if (labels == b).any() else None) for b in YAW_BINS}
    return {"mae": mae, "bias": dict(zip(POSE_ANGLES, signed.mean(0).tolist())), "bins": bins,
            "counts": {b: int((labels == b).sum()) for b in YAW_BINS}}
