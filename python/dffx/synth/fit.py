"""Fit the morphable model and a weak-perspective camera to a photo's 68 landmarks (Sec. III-A).

Alternates camera and shape: ``fit_camera`` (eq. 2) on the current shape's landmark vertices,
then the regularised shape fit of eq. 6-8 under that camera, five rounds.

The jaw. The 17 contour points of a 2D annotation lie on the face's *outline*, which moves
over the surface as the head turns, so a fixed vertex per point is wrong on turned faces.
:class:`ContourLines` offers four strategies, compared in ``docs/synthesis.md`` by how well
a fit predicts held-out inner points of 300 ``300w-train`` photos:

* ``published`` (default): ICT's published alternative jawline (``../shared/README.md``),
  lower and further back than the iBUG vertices, used for points 0-7 and 9-16;
* ``fixed``: the iBUG vertices;
* ``march``: contour marching, each contour point takes the vertex of a horizontal slice of
  the cheek that projects furthest outwards (the slice's silhouette);
* ``weight``: fixed vertices, with contour points whose vertex normal turns more than ~75 deg
  away from the camera left out of the fit.

All four predict held-out points equally well within 0.15 % of the inter-ocular distance
(under the noise of the comparison); ``published`` measured best overall and is the default.

Expression weights are blendshape activations, meaningful in [0, 1]; the linear fit is
unconstrained, so negative weights are clipped to 0 and the fit repeated with them fixed
(a two-step active set), and identity coefficients are clipped to +-3 sd.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.camera import fit_camera, project, rotation_matrix
from ..ops.shape_fit import fit_shape

CONTOUR_POINTS = np.r_[0:6, 11:17]  # iBUG jaw points that march (6-10 around the chin stay fixed)
INNER_POINTS = np.arange(17, 68)    # brows, nose, eyes, mouth: fixed vertices
DEFAULT_ROUNDS = 5
DEFAULT_W_REG = 0.05                # prior weight against the landmark term in cm^2 (chosen on held-out points)
IDENTITY_CLIP_SD = 3.0
SLICE_HALF_HEIGHT_CM = 0.6
SILHOUETTE_COS = 0.25            # "weight" mode: normals closer than ~75 deg to the image plane
NOSE_HALF_WIDTH_CM = 2.0         # candidates start beside the nose (its wings are no jaw outline)
SLICE_BACK_CM = 1.0              # candidates at most this far behind the fixed vertex (not the ear)


@dataclass
class PhotoFit:
    """The 3DMM + camera fitted to one photo.

    Attributes:
        camera: float64 (6,) w = (s, pitch, yaw, roll, tx, ty) in the photo's pixels, radians.
        p_id: float32 (m1,) identity coefficients (N(0, 1) prior).
        p_exp: float32 (m2,) blendshape weights in [0, 1].
        landmark_vertices: int64 (68,) vertex used for each iBUG point in the last round
            (the jaw points follow the :class:`ContourLines` strategy).
        rms_px: root-mean-square distance of the fitted 68 points to the annotation, pixels.
        nme_io: mean point error over the inter-ocular distance (outer eye corners), unitless.
    """

    camera: np.ndarray
    p_id: np.ndarray
    p_exp: np.ndarray
    landmark_vertices: np.ndarray
    rms_px: float
    nme_io: float


class ContourLines:
    """The jaw strategy of a photo fit: which vertex (and weight) each contour point gets.

    Args:
        model: :class:`dffx.FaceModel`.
        mode: "published", "fixed", "march" or "weight" (module docstring).

    For "march", contour point j with fixed vertex v_j gets a candidate line: the face-region
    vertices on v_j's side whose height is within ``SLICE_HALF_HEIGHT_CM`` of v_j's, beside the
    nose (``|x| > NOSE_HALF_WIDTH_CM``) and at most ``SLICE_BACK_CM`` behind v_j (not the ear).

    Raises:
        ValueError: unknown mode.
    """

    def __init__(self, model, mode: str = "published"):
        if mode not in CONTOUR_MODES:
            raise ValueError(f"contour mode must be one of {CONTOUR_MODES}, got {mode!r}")
        self.mode = mode
        self.fixed = np.asarray(model.landmarks68, np.int64).copy()
        if mode == "published":
            self.fixed[0:8] = PUBLISHED_RIGHT_JAW
            self.fixed[9:17] = PUBLISHED_LEFT_JAW
        mean = model.mean.astype(np.float64)
        self.triangles = np.asarray(model.triangles, np.int64)
        self.lines: list[np.ndarray] = []
        for j in CONTOUR_POINTS:
            v = mean[self.fixed[j]]
            side = np.sign(v[0])
            ok = ((np.abs(mean[:, 1] - v[1]) < SLICE_HALF_HEIGHT_CM) & (side * mean[:, 0] > NOSE_HALF_WIDTH_CM)
                  & (mean[:, 2] > v[2] - SLICE_BACK_CM))
            line = np.flatnonzero(ok)
            self.lines.append(np.union1d(line, [self.fixed[j]]))

    @property
    def reads_mesh(self) -> bool:
        """Whether :meth:`select` or :meth:`weights` read the fitted mesh ("march", "weight");
        with "published" and "fixed" each point keeps its fixed vertex."""
        return self.mode in ("march", "weight")

    def weights(self, vertices: np.ndarray, camera: np.ndarray) -> np.ndarray:
        """float (68,) point weights: in "weight" mode 0 for contour points whose fixed vertex
        faces away from the camera by more than ``SILHOUETTE_COS`` (their annotation then lies
        on the outline, not on the vertex), else 1."""
        w = np.ones(68)
        if self.mode != "weight":
            return w
        v = np.asarray(vertices, np.float64)
        t = self.triangles
        fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
        idx = self.fixed[CONTOUR_POINTS]
        normals = np.zeros((len(v), 3))
        for k in range(3):
            np.add.at(normals, t[:, k], fn)
        n = normals[idx] / np.linalg.norm(normals[idx], axis=1, keepdims=True)
        facing = n @ rotation_matrix(camera[1], camera[2], camera[3])[2]  # z of the rotated normal
        w[CONTOUR_POINTS] = (facing > SILHOUETTE_COS).astype(float)
        return w

    def select(self, vertices: np.ndarray, camera: np.ndarray) -> np.ndarray:
        """int64 (68,): the vertex of each iBUG point for a shape (n, 3) seen by ``camera`` (6,)."""
        index = self.fixed.copy()
        if self.mode != "march":
            return index
        R = rotation_matrix(camera[1], camera[2], camera[3])
        # the model's x axis in the image (a unit vector for weak perspective) is "outwards"
        # for the subject's left side (x > 0) and "inwards" for the right side
        axis_img = R[0, :2] * np.array([1.0, -1.0])
        axis_img /= max(np.linalg.norm(axis_img), 1e-9)
        for j, line in zip(CONTOUR_POINTS, self.lines):
            side = np.sign(vertices[self.fixed[j], 0])
            xy = project(vertices[line], camera)[:, :2]
            index[j] = line[np.argmax(side * (xy @ axis_img))]
        return index


CONTOUR_MODES = ("march", "fixed", "published", "weight")
PUBLISHED_RIGHT_JAW = np.array([1278, 1272, 12, 1834, 243, 781, 2199, 1447])
PUBLISHED_LEFT_JAW = np.array([3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496])


def _landmark_points(model, p, index) -> np.ndarray:
    """float32 (68, 3): eq. 3 at the vertices ``index`` only, ``model.shape(p)[index]`` up to rounding."""
    mean, basis, _ = model.landmark_model(index)
    return (mean + basis @ p).astype(np.float32)


def _contour_points(model, contour: ContourLines, p, camera):
    """The vertex of each iBUG point under ``contour``'s strategy, its weight and its 3D position:
    (index int64 (68,), weights (68,), points float32 (68, 3)). Only the strategies that read the
    mesh ("march", "weight") evaluate eq. 3 on all vertices; the fixed ones need 68 rows of it."""
    if contour.reads_mesh:
        m1 = model.n_identity
        shape = model.shape(p[:m1], p[m1:])
        index = contour.select(shape, camera)
        return index, contour.weights(shape, camera), shape[index]
    index = contour.fixed.copy()
    return index, np.ones(68), _landmark_points(model, p, index)


def _fit_params(model, targets, camera, index, w_reg, exp_active, weights):
    """Eq. 6-8 with w_lan = 1 / s^2 (the landmark term in cm^2) and inactive blendshapes fixed at 0."""
    mean, basis, prior = model.landmark_model(index)
    m1 = model.n_identity
    keep = np.r_[np.ones(m1, bool), exp_active]
    p = np.zeros(model.n_params, np.float32)
    p[keep] = fit_shape((mean, np.ascontiguousarray(basis[:, :, keep]), prior[keep]), targets, camera,
                        landmark_weights=weights, w_lan=1.0 / camera[0] ** 2, w_reg=w_reg)
    return p


def fit_photo(model, landmarks, *, rounds: int = DEFAULT_ROUNDS, w_reg: float = DEFAULT_W_REG,
              contour: ContourLines | None = None, weights=None) -> PhotoFit:
    """Fit p_id, p_exp and the camera w to 68 annotated points (alternating, Sec. III-A).

    Args:
        model: :class:`dffx.FaceModel`.
        landmarks: (68, 2) iBUG points in image pixels (0-based, x right, y down).
        rounds: camera/shape alternations.
        w_reg: weight of the prior ``p^T D^-1 p`` against the landmark term measured in cm^2
            (pixels / s), so the balance does not depend on the photo's resolution.
        contour: :class:`ContourLines` of ``model`` (built here when None; pass one to reuse).
        weights: optional (68,) per-point weights >= 0 (0 leaves a point out of the fit; the
            reported errors still cover all 68 points).

    Returns:
        :class:`PhotoFit`.

    Raises:
        ValueError: landmarks not (68, 2) or not finite.
    """
    X = np.asarray(landmarks, np.float64)
    if X.shape != (68, 2) or not np.isfinite(X).all():
        raise ValueError(f"landmarks must be finite (68, 2) pixels, got shape {X.shape}")
    contour = contour or ContourLines(model)
    wts = np.ones(68) if weights is None else np.asarray(weights, np.float64)
    if wts.shape != (68,) or np.any(~np.isfinite(wts)) or np.any(wts < 0):
        raise ValueError("weights must be 68 finite values >= 0")
    index = contour.fixed.copy()
    camera = fit_camera(model.mean[index[INNER_POINTS]], X[INNER_POINTS], wts[INNER_POINTS])
    p = np.zeros(model.n_params, np.float32)
    m1 = model.n_identity
    for _ in range(rounds):
        index, contour_wts, points = _contour_points(model, contour, p, camera)
        round_wts = wts * contour_wts
        camera = fit_camera(points, X, round_wts)
        active = np.ones(model.n_expression, bool)
        for _ in range(2):  # fit, then refit with the negative blendshapes switched off
            p = _fit_params(model, X, camera, index, w_reg, active, round_wts)
            active &= p[m1:] > 0
        p[:m1] = np.clip(p[:m1], -IDENTITY_CLIP_SD, IDENTITY_CLIP_SD)
        p[m1:] = np.clip(p[m1:], 0.0, 1.0)
    index, _, points = _contour_points(model, contour, p, camera)
    camera = fit_camera(points, X, wts)
    fitted = project(points, camera)[:, :2]
    err = np.linalg.norm(fitted - X, axis=1)
    return PhotoFit(camera=camera, p_id=p[:m1].copy(), p_exp=p[m1:].copy(), landmark_vertices=index,
                    rms_px=float(np.sqrt(np.mean(err ** 2))), nme_io=float(err.mean() / np.linalg.norm(X[36] - X[45])))
