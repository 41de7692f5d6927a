"""The ``dffx`` command line: ``dffx info``, ``dffx render-depth``.

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
