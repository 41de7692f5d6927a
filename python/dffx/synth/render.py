"""Re-render a fitted photo in a new pose and expression (paper Sec. III-A, Fig. 2).

Texturing is projective: the photo itself is the texture. A pixel of the new view lies on
model triangle t at barycentric b; the same surface point on the *source* shape (same t, same
b) projects into the photo under the fitted camera, and its colour is read there when the
photo's depth buffer shows that point (it is visible in the photo). Otherwise the mirror point
(same b on the mirrored vertices, the mesh is symmetric) is read when visible, and what neither
covers (under the chin, inside the nostrils) takes per-vertex colours filled by mirror and
diffusion over the mesh. This keeps the photo's full resolution; a UV texture of ICT's layout
would resample twice.

Then: Lambertian relighting by a random directional light on the new view's normals, a real
background (a crop of another photo, :mod:`.background`), a feathered face edge and photometric
augmentation (contrast, brightness, gamma, saturation, channel gains, blur, noise). JPEG
compression is applied when the sample is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..geometry.camera import project, rotation_matrix
from ..ops.raster import landmark_visibility, rasterize
from ..preprocess import CROP_SCALE
from .context import build_context, render_context
from .mesh import SynthMesh

MAX_PITCH_DEG = 30.0
MAX_ROLL_DEG = 30.0
MAX_YAW_DEG = 90.0
SOURCE_DEPTH_TOLERANCE_CM = 0.1   # a surface point is "seen in the photo" within 1 mm of the depth buffer


@dataclass
class SynthSample:
    """One synthesized training sample (all pixel quantities in the size x size image).

    Attributes:
        image: uint8 (size, size, 3) BGR.
        triangle_id: int32 (size, size), the model triangle seen at each pixel; -1 for the
            background and for the eye/mouth caps (no model surface).
        camera: float64 (6,) w = (s, pitch, yaw, roll, tx, ty) of this image, radians.
        p_id: float32 (m1,); p_exp: float32 (m2,) shape parameters of the rendered face.
        landmarks68: float32 (68, 2); visible68: bool (68,) (depth-buffer visibility).
        landmarks160: float32 (160, 2); visible160: bool (160,).
        source: index of the photo it was rendered from.
    """

    image: np.ndarray
    triangle_id: np.ndarray
    camera: np.ndarray
    p_id: np.ndarray
    p_exp: np.ndarray
    landmarks68: np.ndarray
    visible68: np.ndarray
    landmarks160: np.ndarray
    visible160: np.ndarray
    source: int = -1


@dataclass
class ViewParams:
    """The random choices of one sample (angles in radians)."""

    pitch: float
    yaw: float
    roll: float
    p_exp: np.ndarray
    box_scale: float          # crop side / (CROP_SCALE * landmark box side): detector jitter
    box_shift: np.ndarray     # (2,) box centre shift, fraction of the box side
    light_dir: np.ndarray     # (3,) unit, camera space (z towards the viewer)
    light_strength: float     # 0 = keep the photo's shading


def sample_view(rng: np.random.Generator, n_expression: int, source_p_exp: np.ndarray,
                expression_names=None) -> ViewParams:
    """Draw a new view: yaw uniform in [-90, 90] deg, pitch and roll N(0, 12 deg) clipped to +-30,
    expression kept from the photo (40%) or 1-3 random blendshapes at weight U(0.3, 1),
    face-box jitter (scale U(0.9, 1.1), shift U(-0.05, 0.05) of the box), light from the front
    hemisphere with strength U(0, 0.6)."""
    yaw = np.radians(rng.uniform(-MAX_YAW_DEG, MAX_YAW_DEG))
    pitch = np.radians(np.clip(rng.normal(0.0, 12.0), -MAX_PITCH_DEG, MAX_PITCH_DEG))
    roll = np.radians(np.clip(rng.normal(0.0, 12.0), -MAX_ROLL_DEG, MAX_ROLL_DEG))
    if rng.random() < 0.4:
        p_exp = np.asarray(source_p_exp, np.float32).copy()
    else:
        p_exp = np.zeros(n_expression, np.float32)
        chosen = rng.choice(n_expression, size=rng.integers(1, 4), replace=False)
        p_exp[chosen] = rng.uniform(0.3, 1.0, size=len(chosen))
    d = rng.normal(size=3)
    d[2] = abs(d[2]) + 0.5
    return ViewParams(pitch=float(pitch), yaw=float(yaw), roll=float(roll), p_exp=p_exp,
                      box_scale=float(rng.uniform(0.9, 1.1)), box_shift=rng.uniform(-0.05, 0.05, size=2),
                      light_dir=d / np.linalg.norm(d), light_strength=float(rng.uniform(0.0, 0.6)))


def crop_camera(landmark_points: np.ndarray, pitch: float, yaw: float, roll: float, size: int,
                box_scale: float = 1.0, box_shift=(0.0, 0.0)) -> np.ndarray:
    """Camera that frames a face the way :func:`dffx.preprocess.crop_face` frames a detected one.

    The 68 landmark vertices (model space, (68, 3) cm) are rotated; their image box, scaled by
    ``box_scale`` and shifted by ``box_shift`` (fractions of the box side), becomes the face box,
    and the crop of side ``CROP_SCALE * max(w, h)`` around it is the size x size image.

    Returns:
        float64 (6,) camera w in the crop's pixels.
    """
    rotated = np.asarray(landmark_points, np.float64) @ rotation_matrix(pitch, yaw, roll).T
    xy = rotated[:, :2] * np.array([1.0, -1.0])
    lo, hi = xy.min(0), xy.max(0)
    side = max(hi - lo) * box_scale
    s = size / (CROP_SCALE * side)
    centre = (lo + hi) / 2 + np.asarray(box_shift) * side
    t = (size - 1) / 2 - s * centre
    return np.array([s, pitch, yaw, roll, t[0], t[1]])


class PreparedSource:
    """A fitted photo ready to be re-rendered: source shape on screen, its depth buffer, vertex colours.

    Args:
        synth: the :class:`Synthesizer`.
        image: uint8 (H, W, 3) BGR photo.
        camera, p_id, p_exp: the photo's fit (:class:`dffx.synth.fit.PhotoFit` fields).
        index: the photo's index in the set (stored with each sample).
    """

    def __init__(self, synth: "Synthesizer", image: np.ndarray, camera, p_id, p_exp, index: int = -1):
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
            raise ValueError("source image must be a non-empty uint8 (H, W, 3) BGR array")
        mesh = synth.mesh
        self.image, self.index = image, index
        self.camera = np.asarray(camera, np.float64)
        self.p_id = np.asarray(p_id, np.float32)
        self.p_exp = np.asarray(p_exp, np.float32)
        self.shape = synth.model.shape(self.p_id, self.p_exp)
        self.screen = project(mesh.extend(self.shape), self.camera)
        h, w = image.shape[:2]
        self.depth = rasterize(self.screen, mesh.triangles, (h, w), threads=synth.threads).depth
        self.tolerance = SOURCE_DEPTH_TOLERANCE_CM * self.camera[0]
        seen = landmark_visibility(self.screen, np.arange(len(self.screen)), self.depth, self.tolerance)
        colours = self.sample(self.screen[:, :2])
        self.vertex_colours = mesh.fill_colours(colours, seen)
        self.skin = np.median(self.vertex_colours[: mesh.n_model_vertices], axis=0)
        # the photo meshed around the face (face profiling), when the synthesizer keeps the context
        self.context = (build_context(image, self.depth, self.screen[: mesh.n_model_vertices], self.camera)
                        if synth.context else None)

    def sample(self, xy: np.ndarray) -> np.ndarray:
        """Bilinear colours (P, 3) float32 of the photo at (P, 2) pixel positions (black outside)."""
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        n = len(xy)
        if n == 0:
            return np.zeros((0, 3), np.float32)
        # remap wants maps under 32767 rows or columns: lay the points out 256 to a row
        grid = np.zeros((-(-n // 256) * 256, 2), np.float32)
        grid[:n] = xy
        grid = grid.reshape(-1, 256, 2)
        out = cv2.remap(self.image, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return out.reshape(-1, 3)[:n].astype(np.float32)


class Synthesizer:
    """Renders new views of fitted photos (see the module docstring for the method).

    Args:
        model: :class:`dffx.FaceModel`.
        size: output side in pixels (224 in the paper).
        threads: native threads for rasterization (1 inside worker processes).
        context: draw the face over the photo's own context turned with the head
            (:mod:`dffx.synth.context`, face profiling) instead of a given background.
    """

    def __init__(self, model, size: int = 224, threads: int = 0, context: bool = False):
        if size < 32:
            raise ValueError(f"size must be >= 32 pixels, got {size}")
        self.model, self.size, self.threads, self.context = model, int(size), threads, bool(context)
        self.mesh = SynthMesh(model)

    def prepare(self, image, camera, p_id, p_exp, index: int = -1) -> PreparedSource:
        """See :class:`PreparedSource`."""
        return PreparedSource(self, image, camera, p_id, p_exp, index)

    def render(self, src: PreparedSource, view: ViewParams, background: np.ndarray | None,
               rng: np.random.Generator) -> SynthSample:
        """Render ``src`` under ``view`` over ``background`` (uint8 (size, size, 3) BGR), or over
        the photo's own context when ``src`` was prepared with it (``background`` may be None).

        Returns:
            :class:`SynthSample` (image before JPEG compression).

        Raises:
            ValueError: a background of the wrong shape, or none where the source has no context.
        """
        model, mesh, size = self.model, self.mesh, self.size
        if src.context is None and (background is None or background.shape != (size, size, 3)):
            got = None if background is None else background.shape
            raise ValueError(f"background must have shape ({size}, {size}, 3), got {got}")
        shape = src.shape + np.einsum("nkm,m->nk", model.expression_basis, view.p_exp - src.p_exp, dtype=np.float32)
        camera = crop_camera(shape[model.landmarks68], view.pitch, view.yaw, view.roll, size,
                             view.box_scale, view.box_shift)
        if src.context is not None:
            background = render_context(src.image, src.context, camera, size, self.threads)
        ext = mesh.extend(shape)
        screen = project(ext, camera)
        raster = rasterize(screen, mesh.triangles, size, threads=self.threads)
        tri = raster.triangle_id
        fg = tri >= 0
        tri_f, bary_f = tri[fg], raster.barycentric[fg].astype(np.float64)
        corners = mesh.triangles[tri_f]
        colour = self._surface_colours(src, corners, bary_f)
        # the mouth cap is the inside of the mouth: dark, not the lips it spans in the photo
        is_cap = tri_f >= mesh.n_model_triangles
        mouth = np.zeros_like(is_cap)
        mouth[is_cap] = mesh.cap_hole[tri_f[is_cap] - mesh.n_model_triangles] == mesh.mouth_hole
        colour[mouth] = src.skin * np.float32(0.25)
        colour *= self._shading(ext, camera, corners, bary_f, view)[:, None]
        face = np.zeros((size, size, 3), np.float32)
        face[fg] = colour
        image = _composite(face, fg, background)
        image = _photometric(image, rng)
        lm68, lm160 = screen[model.landmarks68], screen[model.landmarks160]
        vis = landmark_visibility(screen, model.landmarks160, raster.depth)
        stored_tri = np.where(tri < mesh.n_model_triangles, tri, -1).astype(np.int32)
        return SynthSample(image=image, triangle_id=stored_tri, camera=camera, p_id=src.p_id.copy(),
                           p_exp=view.p_exp.astype(np.float32), landmarks68=lm68[:, :2].astype(np.float32),
                           visible68=vis[:68].copy(), landmarks160=lm160[:, :2].astype(np.float32),
                           visible160=vis, source=src.index)

    def _surface_colours(self, src: PreparedSource, corners: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """Colour (P, 3) of surface points (triangle corners (P, 3), barycentrics (P, 3)) from the photo."""
        mesh = self.mesh
        points = np.einsum("pk,pkj->pj", bary, src.screen[corners].astype(np.float64)).astype(np.float32)
        seen = landmark_visibility(points, np.arange(len(points)), src.depth, src.tolerance)
        mirrored = np.einsum("pk,pkj->pj", bary, src.screen[mesh.mirror[corners]].astype(np.float64)).astype(np.float32)
        seen_mirror = ~seen & landmark_visibility(mirrored, np.arange(len(points)), src.depth, src.tolerance)
        colour = np.einsum("pk,pkj->pj", bary, src.vertex_colours[corners]).astype(np.float32)
        colour[seen] = src.sample(points[seen, :2])
        colour[seen_mirror] = src.sample(mirrored[seen_mirror, :2])
        return colour

    def _shading(self, ext, camera, corners, bary, view: ViewParams) -> np.ndarray:
        """Relighting factor (P,): 1 - k + k * 1.6 * max(0, n . l) on the new view's normals."""
        R = rotation_matrix(camera[1], camera[2], camera[3])
        normals = self.mesh.vertex_normals(ext) @ R.T  # camera space, z towards the viewer
        n = np.einsum("pk,pkj->pj", bary, normals[corners])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
        k = view.light_strength
        return (1.0 - k + k * 1.6 * np.clip(n @ view.light_dir, 0.0, None)).astype(np.float32)


def _composite(face: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Face over background with a 1-pixel feathered edge (only inwards: the labels stay exact)."""
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0.8) * mask
    bg = background.astype(np.float32)
    return face * alpha[..., None] + bg * (1.0 - alpha[..., None])


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast, brightness, gamma, saturation, channel gains, blur and noise; float -> uint8."""
    x = image / 255.0
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.6, 1.25)                   # saturation
    x = x * rng.uniform(0.9, 1.1, size=3)                             # white balance
    x = (x - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)  # contrast, brightness
    x = np.clip(x, 0.0, 1.0) ** rng.uniform(0.8, 1.25)                # gamma
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), rng.uniform(0.5, 1.5))
    x = x * 255.0 + rng.normal(0.0, rng.uniform(0.0, 5.0), size=x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)

