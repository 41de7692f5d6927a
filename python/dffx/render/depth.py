"""Depth-map rendering of the face model, e.g. for checking poses by eye."""

from __future__ import annotations

import numpy as np

from .._validate import image_size
from ..geometry.camera import project, rotation_matrix
from ..ops.raster import rasterize


def frame_camera(vertices, pitch: float, yaw: float, roll: float, size, margin: float = 0.1) -> np.ndarray:
    """Camera (s, pitch, yaw, roll, tx, ty) that centres the rotated mesh in the image.

    Args:
        vertices: (N, 3) model-space vertices (cm).
        pitch, yaw, roll: radians.
        size: int or (height, width) in pixels.
        margin: fraction of the image left free on each side (0 <= margin < 0.5).

    Returns:
        float64 (6,) camera whose projection of ``vertices`` fills the image minus the margin.
    """
    h, w = image_size(size)
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    rotated = np.asarray(vertices, np.float64) @ rotation_matrix(pitch, yaw, roll).T
    lo, hi = rotated[:, :2].min(0), rotated[:, :2].max(0)
    s = min((1 - 2 * margin) * (w - 1) / (hi[0] - lo[0]), (1 - 2 * margin) * (h - 1) / (hi[1] - lo[1]))
    centre = (lo + hi) / 2
    return np.array([s, pitch, yaw, roll, (w - 1) / 2 - s * centre[0], (h - 1) / 2 + s * centre[1]])


def render_depth(model, camera, size, p_id=None, p_exp=None):
    """Rasterize the face model's shape S(p) under a camera.

    Args:
        model: :class:`dffx.FaceModel`.
        camera: (6,) camera w.
        size: int or (height, width).
        p_id, p_exp: optional shape parameters (eq. 3).

    Returns:
        :class:`dffx.ops.RasterResult` of (H, W) arrays.
    """
    screen = project(model.shape(p_id, p_exp), camera)
    return rasterize(screen, model.triangles, size)


def depth_to_image(depth: np.ndarray) -> np.ndarray:
    """Depth buffer (H, W) -> uint8 grey image: near = bright (255), far = 40, background = 0."""
    depth = np.asarray(depth, dtype=np.float64)
    fg = np.isfinite(depth)
    out = np.zeros(depth.shape, np.uint8)
    if fg.any():
        lo, hi = depth[fg].min(), depth[fg].max()
        out[fg] = np.round(40 + 215 * (depth[fg] - lo) / max(hi - lo, 1e-9)).astype(np.uint8)
    return out
