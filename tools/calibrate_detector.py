"""Calibrate and check dffx.detect's face boxes on training data (never on evaluation data).

Two calibration sets, both from a ``dffx synth`` folder:

* ``photos``: the annotated photos the set was synthesized from (300w-train); the truth is the
  box of the 68 landmarks of each photo's 3DMM fit (``fits.npz``), i.e. the 3D landmark
  convention. Mostly near-frontal faces.
* ``renders``: random training-split renders (every yaw up to 90 deg), padded by 64 grey
  pixels so that the face does not touch the border; the truth is the box of their 68 landmarks.

``--detector haar`` (one set at a time) prints, per cascade and per |yaw| bin and side, the
medians that ``dffx.detect.haar.BOX_CALIBRATION`` holds (centre shift relative to the cascade
box's w and h, with mirrored profile hits mirrored back; size ratios), then how good the final
boxes of :func:`dffx.detect.haar.faces_from_hits` are for several ``profile_margin`` values: the
share of found faces whose box is within 10% of the truth in centre (relative to sqrt(w h)) and
in size.

``--detector mtcnn`` pools both sets, prints the share of faces each detector finds per |yaw|
bin, fits the linear map from MTCNN's box and five points to the face box
(:func:`dffx.detect.mtcnn.box_features` -> :func:`dffx.detect.mtcnn.box_targets`, ridge
regression) on a random half and reports the other half against a constant (median) map, then
fits on everything and, with ``--write``, stores it as ``dffx/weights/mtcnn_box_calibration.json``.

    python tools/calibrate_detector.py --synth DATA --detector haar --set photos --every 4
    python tools/calibrate_detector.py --synth DATA --detector haar --set renders --count 2000
    python tools/calibrate_detector.py --synth DATA --detector mtcnn --every 2 --count 2500 \
        --write python/dffx/weights/mtcnn_box_calibration.json

Uses $DFFX_FACE_MODEL (or --model) for the 3DMM.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dffx.detect.boxes import box_iou
from dffx.detect.haar import PROFILE_PREFERENCE_MARGIN, cascade_hits, faces_from_hits, haar_detect
from dffx.detect.mtcnn import apply_box_targets, box_features, box_targets, mtcnn_detect
from dffx.geometry.camera import project
from dffx.model import load_face_model
from dffx.synth.dataset import SynthDataset
from dffx.synth.store import read_manifest

RENDER_PAD = 64
MARGINS = (0.0, 1.0, 2.0, PROFILE_PREFERENCE_MARGIN, 4.0, np.inf)
YAW_BINS = ((0, 15), (15, 30), (30, 60), (60, 91))
RIDGE = 0.1  # MTCNN calibration: ridge weight (0.001-1 gave the same held-out accuracy)
FIT_IOU = 0.4  # MTCNN calibration: fit on detections overlapping the truth at least this much


def photo_faces(root: Path, every: int, model):
    """(BGR image, truth box, yaw in degrees) for every ``every``-th photo of the set."""
    manifest = read_manifest(root)
    with np.load(root / "fits.npz") as z:
        fits = {k: z[k] for k in z.files}
    photos = Path(manifest["settings"]["photos"])
    for k in range(0, len(manifest["photos"]), every):
        path = photos / manifest["photos"][k]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"could not read {path}")
        vertices = project(model.shape(fits["p_id"][k], fits["p_exp"][k]), fits["camera"][k])
        points = vertices[model.landmarks68, :2]
        yield image, np.r_[points.min(0), points.max(0)], float(np.degrees(fits["camera"][k][2]))


def render_faces(root: Path, count: int, seed: int):
    """(BGR padded render, truth box, yaw in degrees) for ``count`` random training renders."""
    data = SynthDataset(root, "train")
    for k in np.random.default_rng(seed).choice(len(data), count, replace=False):
        sample = data.raw(int(k))
        image = cv2.copyMakeBorder(sample["image"], *[RENDER_PAD] * 4, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        points = sample["landmarks68"] + RENDER_PAD
        yield image, np.r_[points.min(0), points.max(0)], float(np.degrees(sample["camera"][2]))


def box_error(box: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (K, 4+) against truths (K, 4): (centre distance / sqrt(w h) of the truth, |log| of
    the side ratio), each (K,)."""
    box, truth = np.atleast_2d(box), np.atleast_2d(truth)
    side = np.sqrt((truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1]))
    centre = np.hypot(*((box[:, :2] + box[:, 2:4]) - (truth[:, :2] + truth[:, 2:4])).T / 2) / side
    return centre, np.abs(np.log(np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])) / side))


def in_bin(yaw: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.abs(yaw) >= lo) & (np.abs(yaw) < hi)


def calibrate_haar(faces) -> None:
    """Print the Haar cascades' calibration medians and the final boxes' accuracy per margin."""
    calibration = []  # kind, yaw folded to the cascade's side, shift x, shift y, size ratio x, y
    boxes = {m: [] for m in MARGINS}  # per margin: (|yaw|, centre error, size error) of found faces
    for image, truth, yaw in tqdm(faces, unit="face"):
        hits = cascade_hits(cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)))
        best = {}
        for hit in hits:
            x, y, w, h = hit[0]
            iou = float(box_iou(np.array([[x, y, x + w, y + h]]), truth)[0])
            if iou > 0.15 and iou > best.get(hit[2:], (0.0,))[0]:
                best[hit[2:]] = (iou, hit)
        for _, ((x, y, w, h), _, kind, mirrored) in best.values():
            side = -1.0 if mirrored else 1.0
            calibration.append((kind, side * yaw, side * ((truth[0] + truth[2]) / 2 - x - w / 2) / w,
                                ((truth[1] + truth[3]) / 2 - y - h / 2) / h, (truth[2] - truth[0]) / w,
                                (truth[3] - truth[1]) / h))
        for margin in MARGINS:
            found = [b for b in faces_from_hits(hits, profile_margin=margin) if box_iou(b[None], truth)[0] >= 0.1]
            if found:
                box = max(found, key=lambda b: box_iou(b[None], truth)[0])
                boxes[margin].append((abs(yaw), *(e[0] for e in box_error(box, truth))))

    print("calibration medians: centre shift (x, y), size ratio (x, y); yaw > 0 = the cascade's own side")
    for kind in sorted({c[0] for c in calibration}):
        rows = np.array([c[1:] for c in calibration if c[0] == kind])
        for lo, hi in YAW_BINS:
            for sign in (1, -1):
                sel = in_bin(rows[:, 0], lo, hi) & (np.sign(rows[:, 0]) == sign)
                if sel.sum() >= 3:
                    m = np.median(rows[sel, 1:], axis=0)
                    print(f"  {kind:8s} |yaw| [{lo:2d},{hi:2d}) side {sign:+d}: {sel.sum():4d} hits  "
                          f"({m[0]:+.2f}, {m[1]:+.2f}), ({m[2]:.2f}, {m[3]:.2f})")
        for name, sel in (("all", np.ones(len(rows), bool)), ("|yaw| >= 30", np.abs(rows[:, 0]) >= 30)):
            if sel.any():
                m = np.median(rows[sel, 1:], axis=0)
                print(f"  {kind:8s} {name}: {sel.sum()} hits  ({m[0]:+.2f}, {m[1]:+.2f}), ({m[2]:.2f}, {m[3]:.2f})")
    print("final boxes within 10% of the truth in centre and size, share of found faces:")
    for margin, rows in boxes.items():
        rows = np.array(rows).reshape(-1, 3)
        cells = [f"[{lo},{hi}) {np.mean((rows[sel, 1] < 0.1) & (rows[sel, 2] < 0.1)):.2f} of {sel.sum()}"
                 for lo, hi in YAW_BINS if (sel := in_bin(rows[:, 0], lo, hi)).any()]
        print(f"  profile_margin {margin:4}: " + " | ".join(cells))


def best_detection(boxes: np.ndarray, truth: np.ndarray) -> int | None:
    """Index of the detection overlapping the truth most (IoU > 0.1), or None."""
    if not len(boxes):
        return None
    iou = box_iou(boxes, truth)
    return int(np.argmax(iou)) if iou.max() > 0.1 else None


def collect_mtcnn(sets: dict) -> dict:
    """Run MTCNN (and, for comparison, Haar) on every face of the sets.

    Args:
        sets: set name -> iterable of (BGR image, truth box, yaw).

    Returns:
        arrays, one row per face: ``names`` (set), ``yaw`` (degrees), ``truth`` (4), ``detection``
        (14: the best MTCNN box's 4 corners and its 5 points; NaN when none overlaps the truth
        with IoU > 0.1), ``haar_found`` (bool).
    """
    rows = []
    for name, faces in sets.items():
        for image, truth, yaw in tqdm(faces, unit="face", desc=name):
            boxes, points = mtcnn_detect(image)
            k = best_detection(boxes, truth)
            haar_found = best_detection(haar_detect(image), truth) is not None
            detection = np.r_[boxes[k, :4], points[k].ravel()] if k is not None else np.full(14, np.nan)
            rows.append((name, yaw, truth, detection, haar_found))
    return {key: np.array([r[i] for r in rows]) for i, key in
            enumerate(("names", "yaw", "truth", "detection", "haar_found"))}


def calibrate_mtcnn(collected: dict, seed: int) -> dict:
    """Fit MTCNN's box calibration; print recall and held-out accuracy.

    The map is fitted on the found faces whose MTCNN box overlaps the truth with IoU >=
    ``FIT_IOU``: below it MTCNN has mostly boxed another face (on renders made before
    2026-12-02, a face in the background crop), which would drag a least-squares fit. The held-out
    accuracy counts every found face.

    Args:
        collected: :func:`collect_mtcnn` output.

    Returns:
        the calibration file's content (coefficients fitted on all such faces).
    """
    names, yaw, truth = collected["names"], collected["yaw"], collected["truth"]
    detection, haar_found = collected["detection"], collected["haar_found"]
    found = ~np.isnan(detection[:, 0])

    print("share of faces found (best detection IoU > 0.1): MTCNN / Haar")
    for name in dict.fromkeys(names):
        cells = [f"[{lo},{hi}) {found[sel].mean():.2f} / {haar_found[sel].mean():.2f} of {sel.sum()}"
                 for lo, hi in YAW_BINS if (sel := (names == name) & in_bin(yaw, lo, hi)).any()]
        print(f"  {name:8s}: " + " | ".join(cells))

    names, yaw, truth = names[found], yaw[found], truth[found]
    boxes, points = detection[found, :4], detection[found, 4:].reshape(-1, 5, 2)
    iou = np.array([box_iou(b[None], t)[0] for b, t in zip(boxes, truth)])
    print("MTCNN box IoU with the truth, 5/10/25/50th percentile:", np.percentile(iou, [5, 10, 25, 50]).round(2),
          f"; {np.mean(iou < FIT_IOU):.1%} below {FIT_IOU} are left out of the fit")
    features, targets = box_features(boxes, points), box_targets(boxes, truth)
    fit_half = np.random.default_rng(seed).random(len(boxes)) < 0.5
    fittable = iou >= FIT_IOU

    def fit(sel):
        x, y = features[sel & fittable], targets[sel & fittable]
        return np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ y)

    coefficients = fit(fit_half)
    median = np.median(targets[fit_half & fittable], axis=0)
    held_out = {}
    print("held-out half, share within 10% of the truth in centre and size: median map / linear map")
    for name in dict.fromkeys(names):
        sel = ~fit_half & (names == name)
        cells = []
        for lo, hi in YAW_BINS:
            b = sel & in_bin(yaw, lo, hi)
            if b.sum() < 5:
                continue
            shares = []
            for predicted in (np.tile(median, (b.sum(), 1)), features[b] @ coefficients):
                centre, size = box_error(apply_box_targets(boxes[b], predicted), truth[b])
                shares.append(float(np.mean((centre < 0.1) & (size < 0.1))))
            held_out[f"{name} |yaw| [{lo},{hi})"] = {"faces": int(b.sum()), "median_map": round(shares[0], 3),
                                                     "linear_map": round(shares[1], 3)}
            cells.append(f"[{lo},{hi}) {shares[0]:.2f} / {shares[1]:.2f} of {b.sum()}")
        print(f"  {name:8s}: " + " | ".join(cells))
    return {"rows": "box_features: x, y of the left eye, right eye, nose, left and right mouth corner; "
                    "log aspect; 1", "columns": "box_targets: centre offset x, y; log width, log height",
            "coefficients": np.round(fit(np.ones(len(boxes), bool)), 5).tolist(),
            "fitted_on": {str(name): int(np.sum((names == name) & fittable)) for name in dict.fromkeys(names)},
            "fit_iou": FIT_IOU, "ridge": RIDGE, "held_out_within_10_percent": held_out,
            "made_by": "tools/calibrate_detector.py --detector mtcnn"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synth", required=True, help="dffx synth folder (manifest.json, fits.npz, shards)")
    ap.add_argument("--detector", choices=["haar", "mtcnn"], default="haar")
    ap.add_argument("--set", choices=["photos", "renders"], default="photos", help="haar: which set")
    ap.add_argument("--every", type=int, default=4, help="photos: use every N-th photo")
    ap.add_argument("--count", type=int, default=2000, help="renders: how many")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--write", default=None, help="mtcnn: write the calibration JSON here")
    ap.add_argument("--detections", default=None,
                    help="mtcnn: .npz cache of the detections (read if it exists, else written)")
    ap.add_argument("--model", default=None, help="ICT-FaceKit folder (default: $DFFX_FACE_MODEL)")
    args = ap.parse_args()
    root = Path(args.synth)
    sets = {"photos": lambda: photo_faces(root, args.every, load_face_model(args.model)),
            "renders": lambda: render_faces(root, args.count, args.seed)}
    if args.detector == "haar":
        calibrate_haar(sets[args.set]())
        return
    cache = Path(args.detections) if args.detections else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            collected = {k: z[k] for k in z.files}
    else:
        collected = collect_mtcnn({name: make() for name, make in sets.items()})
        if cache is not None:
            np.savez_compressed(cache, **collected)
    calibration = calibrate_mtcnn(collected, args.seed)
    if args.write:
        # One line per coefficient row, the rest indented as usual.
        coefficients = calibration.pop("coefficients")
        rows = ",\n  ".join(json.dumps(row) for row in coefficients)
        text = json.dumps(calibration, indent=1)[:-2] + f',\n "coefficients": [\n  {rows}\n ]\n}}\n'
        Path(args.write).write_text(text)
        print(f"calibration -> {args.write}")


if __name__ == "__main__":
    main()
