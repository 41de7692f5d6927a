"""Calibrate and check dffx.detect's face boxes on training data (never on evaluation data).

Two calibration sets, both from a ``dffx synth`` folder:

* ``photos``: the annotated photos the set was synthesized from (300w-train); the truth is the
  box of the 68 landmarks of each photo's 3DMM fit (``fits.npz``), i.e. the 3D landmark
  convention. Mostly near-frontal faces.
* ``renders``: random training-split renders (every yaw up to 90 deg), padded by 64 grey
  pixels so that the face does not touch the border; the truth is the box of their 68 landmarks.

For each set it prints, per cascade and per |yaw| bin and side, the medians that
``dffx.detect.BOX_CALIBRATION`` holds (centre shift relative to the cascade box's w and h, with
mirrored profile hits mirrored back; size ratios), then how good the final boxes of
:func:`dffx.detect.faces_from_hits` are for several ``profile_margin`` values: the share of found
faces whose box is within 10% of the truth in centre (relative to sqrt(w h)) and in size.

    python tools/calibrate_detector.py --synth DATA --set photos --every 4
    python tools/calibrate_detector.py --synth DATA --set renders --count 2000

Uses $DFFX_FACE_MODEL (or --model) for the 3DMM.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dffx.detect import PROFILE_PREFERENCE_MARGIN, box_iou, cascade_hits, faces_from_hits
from dffx.geometry.camera import project
from dffx.model import load_face_model
from dffx.synth.dataset import SynthDataset
from dffx.synth.store import read_manifest

RENDER_PAD = 64
MARGINS = (0.0, 1.0, 2.0, PROFILE_PREFERENCE_MARGIN, 4.0, np.inf)


def photo_faces(root: Path, every: int, model):
    """(grey image, truth box, yaw in degrees) for every ``every``-th photo of the set."""
    manifest = read_manifest(root)
    with np.load(root / "fits.npz") as z:
        fits = {k: z[k] for k in z.files}
    photos = Path(manifest["settings"]["photos"])
    for k in range(0, len(manifest["photos"]), every):
        path = photos / manifest["photos"][k]
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise OSError(f"could not read {path}")
        vertices = project(model.shape(fits["p_id"][k], fits["p_exp"][k]), fits["camera"][k])
        points = vertices[model.landmarks68, :2]
        yield image, np.r_[points.min(0), points.max(0)], float(np.degrees(fits["camera"][k][2]))


def render_faces(root: Path, count: int, seed: int):
    """(grey padded render, truth box, yaw in degrees) for ``count`` random training renders."""
    data = SynthDataset(root, "train")
    for k in np.random.default_rng(seed).choice(len(data), count, replace=False):
        sample = data.raw(int(k))
        image = cv2.copyMakeBorder(cv2.cvtColor(sample["image"], cv2.COLOR_BGR2GRAY), *[RENDER_PAD] * 4,
                                   cv2.BORDER_CONSTANT, value=128)
        points = sample["landmarks68"] + RENDER_PAD
        yield image, np.r_[points.min(0), points.max(0)], float(np.degrees(sample["camera"][2]))


def box_error(box: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(centre distance / sqrt(w h) of the truth, |log| of the side ratio)."""
    side = np.sqrt((truth[2] - truth[0]) * (truth[3] - truth[1]))
    centre = np.hypot(*((box[:2] + box[2:4]) - (truth[:2] + truth[2:])) / 2) / side
    return centre, abs(np.log(np.sqrt((box[2] - box[0]) * (box[3] - box[1])) / side))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synth", required=True, help="dffx synth folder (manifest.json, fits.npz, shards)")
    ap.add_argument("--set", choices=["photos", "renders"], default="photos")
    ap.add_argument("--every", type=int, default=4, help="photos: use every N-th photo")
    ap.add_argument("--count", type=int, default=2000, help="renders: how many")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default=None, help="ICT-FaceKit folder (default: $DFFX_FACE_MODEL)")
    args = ap.parse_args()
    root = Path(args.synth)
    faces = (photo_faces(root, args.every, load_face_model(args.model)) if args.set == "photos"
             else render_faces(root, args.count, args.seed))

    calibration = []  # kind, yaw folded to the cascade's side, shift x, shift y, size ratio x, y
    boxes = {m: [] for m in MARGINS}  # per margin: (|yaw|, centre error, size error) of found faces
    for grey, truth, yaw in tqdm(faces, unit="face"):
        hits = cascade_hits(cv2.equalizeHist(grey))
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
                boxes[margin].append((abs(yaw), *box_error(box, truth)))

    bins = ((0, 15), (15, 30), (30, 60), (60, 91))
    print("calibration medians: centre shift (x, y), size ratio (x, y); yaw > 0 = the cascade's own side")
    for kind in sorted({c[0] for c in calibration}):
        rows = np.array([c[1:] for c in calibration if c[0] == kind])
        for lo, hi in bins:
            for sign in (1, -1):
                sel = (np.abs(rows[:, 0]) >= lo) & (np.abs(rows[:, 0]) < hi) & (np.sign(rows[:, 0]) == sign)
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
        cells = []
        for lo, hi in bins:
            sel = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
            if sel.any():
                good = np.mean((rows[sel, 1] < 0.1) & (rows[sel, 2] < 0.1))
                cells.append(f"[{lo},{hi}) {good:.2f} of {sel.sum()}")
        print(f"  profile_margin {margin:4}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
