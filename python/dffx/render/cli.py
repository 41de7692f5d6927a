"""``dffx render-depth``: depth maps of the mean face."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _cmd_render_depth(args) -> int:
    import cv2

    from ..model import load_face_model
    from ..render import depth_to_image, frame_camera, render_depth

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


def add_parsers(sub, train_sub) -> None:
    """Register ``dffx render-depth`` (the ``add_parsers`` of :mod:`dffx.cli`)."""
    p = sub.add_parser("render-depth", help="write depth-map PNGs of the mean face at given yaw angles")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--yaw", type=float, nargs="+", default=[0.0, 45.0, 90.0], help="yaw angles in degrees")
    p.add_argument("--pitch", type=float, default=0.0, help="pitch in degrees")
    p.add_argument("--roll", type=float, default=0.0, help="roll in degrees")
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.set_defaults(run=_cmd_render_depth)
