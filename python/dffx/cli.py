"""The ``dffx`` command line: ``dffx info``, ``dffx render-depth``, ``dffx eval``.

Later issues add ``align``, ``eval``, ``synth``, ``train`` and ``match`` here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _cmd_info(args) -> int:
    from .info import cmake_dir, info

    if args.cmake_dir:
        print(cmake_dir())
        return 0
    facts = info()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(map(len, facts))
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _cmd_render_depth(args) -> int:
    import cv2

    from .model import load_face_model
    from .render import depth_to_image, frame_camera, render_depth

    model = load_face_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for yaw in args.yaw:
        camera = frame_camera(model.mean, np.radians(args.pitch), np.radians(yaw), np.radians(args.roll), args.size)
        result = render_depth(model, camera, args.size)
        path = out / f"mean_face_depth_yaw{yaw:+04.0f}.png"
        if not cv2.imwrite(str(path), depth_to_image(result.depth)):
            raise OSError(f"could not write {path}")
        print(f"{path}  ({int((result.triangle_id >= 0).sum())} face pixels)")
    return 0


def _cmd_eval(args) -> int:
    from .eval import EvalOptions, evaluate, format_table
    from .eval.protocols import write_per_image_csv
    from .model import load_face_model

    opts = EvalOptions(dataset=args.dataset, root=Path(args.root), method=args.method, limit=args.limit,
                       yaw_csv=Path(args.yaw_csv) if args.yaw_csv else None, detector=args.detector,
                       progress=not args.no_progress)
    summary, rows = evaluate(opts, load_face_model(args.model))
    if args.per_image:
        write_per_image_csv(rows, Path(args.per_image))
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``dffx`` command."""
    parser = argparse.ArgumentParser(prog="dffx", description="Large-pose face alignment with the Deep Face Feature")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="version, native backend, CUDA, data locations")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--cmake-dir", action="store_true", help="print only the folder holding dffxConfig.cmake")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("render-depth", help="write depth-map PNGs of the mean face at given yaw angles")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--yaw", type=float, nargs="+", default=[0.0, 45.0, 90.0], help="yaw angles in degrees")
    p.add_argument("--pitch", type=float, default=0.0, help="pitch in degrees")
    p.add_argument("--roll", type=float, default=0.0, help="roll in degrees")
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.set_defaults(run=_cmd_render_depth)

    p = sub.add_parser("eval", help="benchmark protocols: NME by yaw bin (AFLW2000-3D, AFLW) or subset (300W)")
    p.add_argument("dataset", choices=["aflw2000-3d", "aflw", "300w"])
    p.add_argument("root", help="dataset folder in its official layout")
    p.add_argument("--method", default="mean-shape", help="predictor (mean-shape; dff and sift come with alignment)")
    p.add_argument("--limit", type=int, default=None, help="first N faces in the dataset's order")
    p.add_argument("--yaw-csv", default=None, help="AFLW2000-3D: name,yaw_deg lines that decide the yaw bins")
    p.add_argument("--detector", action="store_true", help="start from detected boxes instead of ground truth")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--per-image", metavar="CSV", default=None, help="write per-face errors to CSV")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_eval)
    return parser


def main(argv=None) -> int:
    """Entry point; returns the process exit code. Errors print one line, exit code 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"dffx {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
