"""Learn the 68 landmark vertices in 300-W's annotation convention and write the shipped file.

    python tools/learn_landmarks.py --photos ../shared/data/300w-train \
        --out python/dffx/model/landmarks_300w.json

Method: :func:`dffx.synth.landmark_learning.learn_landmark_vertices`. The file records the
photos, settings, per-round log and, per point, how far the learned vertex lies from ICT's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dffx.data import load_300w
from dffx.model import load_face_model
from dffx.synth.landmark_learning import CANDIDATE_RADIUS_CM, JAW_MAX_YAW_DEG, learn_landmark_vertices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True, help="folder of photos with 68-point iBUG .pts files")
    parser.add_argument("--out", required=True, help="output .json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--radius-cm", type=float, default=CANDIDATE_RADIUS_CM)
    parser.add_argument("--jaw-max-yaw", type=float, default=JAW_MAX_YAW_DEG)
    parser.add_argument("--model", default=None, help="face model (default: $DFFX_FACE_MODEL)")
    args = parser.parse_args()

    model = load_face_model(args.model)
    samples, _ = load_300w(args.photos)
    annotations = np.stack([s.landmarks for s in samples])
    learned, log = learn_landmark_vertices(model, annotations, rounds=args.rounds, radius_cm=args.radius_cm,
                                           jaw_max_yaw_deg=args.jaw_max_yaw)
    moved_cm = np.linalg.norm(model.mean[learned] - model.mean[model.landmarks68], axis=1)
    record = {
        "format": "dffx-landmarks-v1",
        "convention": "300w",
        "landmarks68": learned.tolist(),
        "ict_landmarks68": np.asarray(model.landmarks68).tolist(),
        "moved_cm": np.round(moved_cm, 3).tolist(),
        "photos": f"{Path(args.photos).name}: {len(samples)} photos with 68-point annotations",
        "settings": {"rounds": args.rounds, "radius_cm": args.radius_cm, "jaw_max_yaw_deg": args.jaw_max_yaw},
        "log": log,
        "command": "python tools/learn_landmarks.py --photos ../shared/data/300w-train "
                   "--out python/dffx/model/landmarks_300w.json",
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for row in log:
        print(row)
    print(f"moved {int((moved_cm > 0).sum())} of 68 points, median {np.median(moved_cm):.2f} cm, "
          f"max {moved_cm.max():.2f} cm")


if __name__ == "__main__":
    main()
