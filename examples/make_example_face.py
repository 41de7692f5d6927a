"""Render the example photo of the README's main command: a generated face, no dataset image.

The ICT-FaceKit face (a random identity, a slight smile) is shaded with a skin albedo and
one directional light, the eye and mouth holes are capped dark, and it is turned 35 degrees
on a grey gradient. Output: examples/face_generated.png (400 x 400).

    python examples/make_example_face.py [--out PATH]
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

import dffx
from dffx.geometry import rotation_matrix
from dffx.render import frame_camera
from dffx.synth import SynthMesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("face_generated.png")))
    args = parser.parse_args()
    model = dffx.load_face_model()
    mesh = SynthMesh(model)
    p_id = np.random.default_rng(7).normal(0, 0.6, model.n_identity).astype(np.float32)
    p_exp = np.zeros(model.n_expression, np.float32)
    for name, weight in (("mouthSmile_L", 0.4), ("mouthSmile_R", 0.4)):
        if name in model.expression_names:
            p_exp[model.expression_names.index(name)] = weight
    size, pitch, yaw, roll = 400, np.radians(-5), np.radians(35), np.radians(4)
    shape = mesh.extend(model.shape(p_id, p_exp))
    camera = frame_camera(shape, pitch, yaw, roll, size, margin=0.22)
    screen = dffx.project(shape, camera)
    raster = dffx.rasterize(screen, mesh.triangles, size)
    fg = raster.triangle_id >= 0
    R = rotation_matrix(pitch, yaw, roll)
    normals = mesh.vertex_normals(shape) @ R.T
    tri = raster.triangle_id[fg]
    n = np.einsum("pk,pkj->pj", raster.barycentric[fg], normals[mesh.triangles[tri]])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    light = np.array([-0.4, 0.3, 0.87])
    shade = 0.35 + 0.75 * np.clip(n @ light, 0, None)
    albedo = np.where((tri >= model.triangles.shape[0])[:, None], [40, 40, 60], [150, 175, 215])  # BGR skin
    image = np.tile(np.linspace(90, 170, size, dtype=np.float32)[:, None, None], (1, size, 3))
    image[fg] = albedo * shade[:, None]
    image = cv2.GaussianBlur(image, (0, 0), 0.7)
    cv2.imwrite(args.out, np.clip(image, 0, 255).astype(np.uint8))
    print(args.out)


if __name__ == "__main__":
    main()
