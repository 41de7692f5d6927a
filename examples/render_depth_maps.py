"""Write depth-map PNGs of the ICT-FaceKit mean face at yaw 0, 45 and 90 degrees.

    python examples/render_depth_maps.py [--model ../shared/data/ict-facekit] [--out examples/out]

Uses the public API step by step (model -> camera -> projection -> rasterizer); the CLI
equivalent is ``dffx render-depth``.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

import dffx
from dffx.render import depth_to_image, frame_camera

REPO = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=REPO.parent / "shared" / "data" / "ict-facekit")
    parser.add_argument("--out", default=REPO / "examples" / "out")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    model = dffx.load_face_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for yaw_deg in (0, 45, 90):
        camera = frame_camera(model.mean, pitch=0.0, yaw=np.radians(yaw_deg), roll=0.0, size=args.size)
        screen = dffx.project(model.mean, camera)                     # (N, 3) pixels + depth
        raster = dffx.rasterize(screen, model.triangles, args.size)   # depth, triangle id, barycentrics
        visible = dffx.landmark_visibility(screen, model.landmarks68, raster.depth)
        path = out / f"mean_face_depth_yaw{yaw_deg:02d}.png"
        cv2.imwrite(str(path), depth_to_image(raster.depth))
        print(f"{path}: {int((raster.triangle_id >= 0).sum())} face pixels, {int(visible.sum())}/68 landmarks visible")


if __name__ == "__main__":
    main()
