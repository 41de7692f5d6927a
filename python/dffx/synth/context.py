"""The photo's own context around a re-rendered face: face profiling (3DDFA, Zhu et al. TPAMI 2019).

A render that pastes the face mask on an unrelated background shows no hair, ears or neck,
and photographs always do. Face profiling meshes the whole photo instead: anchors around the
face (forehead, hair, ears, neck) get a depth extrapolated from the fitted face and turn with
the head; anchors further out are background and keep their place in the picture; Delaunay
triangles (SciPy) join them, and the photo itself is their texture. Rendered under the new
camera, the view shows the person's own head and surroundings; the triangles between the
turning head and the still background stretch, as in 300W-LP.

Anchors lie on rays from the face centre (the projected centroid of the fitted face) at
``RAY_COUNT`` angles. On each ray, ``r_sil`` is the outermost pixel of the face in the photo
(its rasterized mask) and the anchors sit at ``HEAD_RINGS`` x ``r_sil`` (head) and
``BACKGROUND_RINGS`` x ``r_sil`` (background), plus the photo's border. A head anchor at radius
``r`` takes the face's depth at the silhouette minus ``HEAD_SLOPE * (r - r_sil)``: the head
curves away from the viewer beyond the face's outline, about as steeply as a sphere at 45
degrees. In model space (eq. 2 inverted) a head anchor is a fixed point of the head, so any new
camera projects it; a background anchor follows the 2D similarity that takes the face centre and
scale of the photo to those of the new view.

The face itself is drawn over this layer (its texture, labels and visibility are unchanged);
pixels no triangle covers (where the turned face uncovers what the photo never showed) are
filled by inpainting (OpenCV, Telea).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from ..geometry.camera import project, rotation_matrix
from ..ops.raster import rasterize

RAY_COUNT = 72
HEAD_RINGS = (1.0, 1.12, 1.3, 1.55)     # x r_sil: on the outline, hair / ears / neck
BACKGROUND_RINGS = (2.1, 3.0, 4.5)       # x r_sil: still background
HEAD_SLOPE = 1.0                         # depth lost per pixel beyond the outline (45 degrees)
BORDER_STEPS = 8                         # anchors per side of the photo's border
INPAINT_RADIUS = 3


@dataclass
class PhotoContext:
    """The meshed photo of one fitted source (see the module docstring).

    Attributes:
        source_xy: float32 (K, 2) anchor positions in the photo, pixels (the texture coordinates).
        head_points: float64 (K, 3) model-space position (cm) of each anchor seen as a point of
            the head (used for head anchors; for background anchors only their centre offset).
        background: bool (K,) anchors that keep their place instead of turning with the head.
        triangles: int32 (T, 3) Delaunay triangles over ``source_xy``, those inside the face removed.
        centre: float64 (3,) model-space face centre; centre_xy: float64 (2,) its position in
            the photo, pixels; source_scale: the photo camera's s (pixels per cm).
    """

    source_xy: np.ndarray
    head_points: np.ndarray
    background: np.ndarray
    triangles: np.ndarray
    centre: np.ndarray
    centre_xy: np.ndarray
    source_scale: float


def _unproject(screen: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """Model-space points (N, 3) of screen points (N, 3) under camera w (eq. 2 inverted)."""
    s, tx, ty = camera[0], camera[4], camera[5]
    R = rotation_matrix(camera[1], camera[2], camera[3])
    rotated = np.stack([(screen[:, 0] - tx) / s, -(screen[:, 1] - ty) / s, screen[:, 2] / s], axis=1)
    return rotated @ R  # R^T applied to each row


def build_context(image: np.ndarray, face_depth: np.ndarray, face_screen: np.ndarray,
                  camera: np.ndarray) -> PhotoContext:
    """Mesh a photo around its fitted face.

    Args:
        image: uint8 (H, W, 3) the photo (only its size is used).
        face_depth: float32 (H, W) depth buffer of the fitted face in the photo (-inf off the face).
        face_screen: (n, 3) the fitted face's vertices in the photo's screen space (eq. 2).
        camera: (6,) the photo's fitted camera w.

    Returns:
        :class:`PhotoContext`.

    Raises:
        ValueError: the face covers no pixel of the photo, or shapes disagree.
    """
    h, w = image.shape[:2]
    if face_depth.shape != (h, w):
        raise ValueError(f"face_depth must have the photo's shape {(h, w)}, got {face_depth.shape}")
    mask = np.isfinite(face_depth)
    if not mask.any():
        raise ValueError("the fitted face covers no pixel of the photo")
    camera = np.asarray(camera, np.float64)
    centre_screen = np.asarray(face_screen, np.float64).mean(axis=0)
    c = centre_screen[:2]
    angles = np.linspace(0.0, 2.0 * np.pi, RAY_COUNT, endpoint=False)
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    reach = int(np.ceil(np.hypot(h, w)))
    radii = np.arange(reach, dtype=np.float64)
    # outermost face pixel on each ray, and the face's depth there
    xy = c[None, None] + radii[None, :, None] * directions[:, None]
    px = np.clip(np.round(xy).astype(np.int64), 0, [w - 1, h - 1])
    inside = mask[px[..., 1], px[..., 0]] & (xy[..., 0] >= 0) & (xy[..., 0] <= w - 1) \
        & (xy[..., 1] >= 0) & (xy[..., 1] <= h - 1)
    last = np.where(inside.any(axis=1), reach - 1 - np.argmax(inside[:, ::-1], axis=1), 0)
    r_sil = np.maximum(last.astype(np.float64), 1.0)
    sil_px = px[np.arange(RAY_COUNT), last]
    z_sil = face_depth[sil_px[:, 1], sil_px[:, 0]]
    z_sil = np.where(np.isfinite(z_sil), z_sil, centre_screen[2])

    points, depth, background = [], [], []
    for ring in HEAD_RINGS:
        r = r_sil * ring
        points.append(c + r[:, None] * directions)
        depth.append(z_sil - HEAD_SLOPE * (r - r_sil))
        background.append(np.zeros(RAY_COUNT, bool))
    far = float(np.min(z_sil) - HEAD_SLOPE * 4.0 * r_sil.max())
    for ring in BACKGROUND_RINGS:
        points.append(c + (r_sil * ring)[:, None] * directions)
        depth.append(np.full(RAY_COUNT, far))
        background.append(np.ones(RAY_COUNT, bool))
    t = np.linspace(0.0, 1.0, BORDER_STEPS + 1)
    border = np.concatenate([np.stack([t * (w - 1), np.zeros_like(t)], 1), np.stack([t * (w - 1), np.full_like(t, h - 1)], 1),
                             np.stack([np.zeros_like(t), t * (h - 1)], 1), np.stack([np.full_like(t, w - 1), t * (h - 1)], 1)])
    points.append(border)
    depth.append(np.full(len(border), far))
    background.append(np.ones(len(border), bool))
    points = np.concatenate(points)
    depth = np.concatenate(depth)
    background = np.concatenate(background)
    # keep anchors inside the photo (the texture ends there), one per pixel position
    ok = (points[:, 0] >= 0) & (points[:, 0] <= w - 1) & (points[:, 1] >= 0) & (points[:, 1] <= h - 1)
    _, first = np.unique(np.round(points[ok] * 4).astype(np.int64), axis=0, return_index=True)
    keep = np.flatnonzero(ok)[np.sort(first)]
    points, depth, background = points[keep], depth[keep], background[keep]

    tri = Delaunay(points).simplices
    centroid = points[tri].mean(axis=1)
    cpx = np.clip(np.round(centroid).astype(np.int64), 0, [w - 1, h - 1])
    tri = tri[~mask[cpx[:, 1], cpx[:, 0]]]
    head = _unproject(np.column_stack([points, depth]), camera)
    return PhotoContext(source_xy=points.astype(np.float32), head_points=head, background=background,
                        triangles=np.ascontiguousarray(tri, dtype=np.int32),
                        centre=_unproject(centre_screen[None], camera)[0], centre_xy=c.copy(),
                        source_scale=float(camera[0]))


def render_context(image: np.ndarray, context: PhotoContext, camera: np.ndarray, size: int,
                   threads: int = 0) -> np.ndarray:
    """The photo's context seen by a new camera: uint8 (size, size, 3) BGR.

    Head anchors are projected by ``camera`` (eq. 2); background anchors follow the similarity
    that maps the face centre and scale of the photo to the new view; holes are inpainted.

    Args:
        image: uint8 (H, W, 3) the source photo (the texture).
        context: :func:`build_context` of that photo.
        camera: (6,) the new view's camera w in the output's pixels.
        size: output side in pixels.
        threads: rasterizer threads (0 = all).
    """
    camera = np.asarray(camera, np.float64)
    screen = project(context.head_points, camera)
    centre_new = project(context.centre[None], camera)[0]
    ratio = camera[0] / context.source_scale
    bg = context.background
    screen[bg, :2] = (context.source_xy[bg] - context.centre_xy) * ratio + centre_new[:2]
    screen[bg, 2] = screen[~bg, 2].min() - 10.0 * size if (~bg).any() else 0.0
    raster = rasterize(screen.astype(np.float32), context.triangles, size, threads=threads)
    tri = raster.triangle_id
    covered = tri >= 0
    corners = context.triangles[tri[covered]]
    uv = np.einsum("pk,pkj->pj", raster.barycentric[covered], context.source_xy[corners])
    map_xy = np.full((size, size, 2), -1.0, np.float32)
    map_xy[covered] = uv
    out = cv2.remap(image, map_xy[..., 0], map_xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if not covered.all():
        out = cv2.inpaint(out, (~covered).astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return out

