"""Weak-perspective camera of the DFF paper, eq. 2, in NumPy and PyTorch.

Camera ``w = (s, pitch, yaw, roll, tx, ty)``: scale s in pixels per model unit (cm),
angles in radians, translation in pixels. Model space is ICT-FaceKit's (cm, x to the
subject's left, y up, z towards the viewer); image space is OpenCV's (0-based pixels,
pixel centres at integers, x right, y down)::

    R = Rx(-pitch) @ Ry(-yaw) @ Rz(-roll)      # right-handed elementary rotations
    x_img =  s * (R q)_x + tx
    y_img = -s * (R q)_y + ty                  # model y up -> image y down
    depth =  s * (R q)_z                       # larger = closer to the viewer

The signs make the angles follow AFLW2000-3D's ``Pose_Para`` (checked in
tests/model/test_camera.py on the 16 shared samples): positive pitch = face looks up,
positive yaw = face turns towards image left (the subject's right), positive roll =
face tilts clockwise on screen. The native twin is ``dffx._C.project``.
"""

from __future__ import annotations

import numpy as np

from .._validate import as_float_array

CAMERA_PARAMS = ("s", "pitch", "yaw", "roll", "tx", "ty")


def _elementary(a, b, c, xp, stack):
    """Rx(a) @ Ry(b) @ Rz(c) for arrays of angles (any backend with cos/sin/stack)."""
    ca, sa, cb, sb, cc, sc = xp.cos(a), xp.sin(a), xp.cos(b), xp.sin(b), xp.cos(c), xp.sin(c)
    one, zero = xp.ones_like(a), xp.zeros_like(a)
    rx = stack([one, zero, zero, zero, ca, -sa, zero, sa, ca])
    ry = stack([cb, zero, sb, zero, one, zero, -sb, zero, cb])
    rz = stack([cc, -sc, zero, sc, cc, zero, zero, zero, one])
    return rx @ ry @ rz


def rotation_matrix(pitch, yaw, roll) -> np.ndarray:
    """Rotation R(pitch, yaw, roll) = Rx(-pitch) Ry(-yaw) Rz(-roll) (module docstring).

    Args:
        pitch, yaw, roll: radians, scalars or broadcastable arrays of shape (...).

    Returns:
        float64 array (..., 3, 3).

    A yaw of +90 degrees turns the model's x axis (the subject's left) towards the camera
    (depth grows towards the viewer):

    >>> import numpy as np
    >>> (rotation_matrix(0.0, np.pi / 2, 0.0) @ [1.0, 0.0, 0.0]).round(12) + 0.0
    array([0., 0., 1.])
    >>> rotation_matrix(np.zeros(4), 0.3, 0.1).shape  # angles broadcast
    (4, 3, 3)
    """
    p, y, r = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (pitch, yaw, roll)))

    def stack(items):
        return np.stack(items, axis=-1).reshape(p.shape + (3, 3))

    return _elementary(-p, -y, -r, np, stack)


def rotation_matrix_torch(pitch, yaw, roll):
    """Torch twin of :func:`rotation_matrix`: tensors (...) in radians -> (..., 3, 3), differentiable."""
    import torch

    p, y, r = torch.broadcast_tensors(pitch, yaw, roll)

    def stack(items):
        return torch.stack(items, dim=-1).reshape(p.shape + (3, 3))

    return _elementary(-p, -y, -r, torch, stack)


def _check_cameras(cameras) -> np.ndarray:
    cams = as_float_array(cameras, "cameras", last=6, dtype=np.float64)
    if cams.ndim not in (1, 2):
        raise ValueError(f"cameras must have shape (6,) or (B, 6), got {cams.shape}")
    return cams


def project(vertices, cameras) -> np.ndarray:
    """Project model-space vertices to screen space (eq. 2).

    Args:
        vertices: (N, 3) shared by all cameras, or (B, N, 3); model units (cm).
        cameras: (6,) or (B, 6) ``(s, pitch, yaw, roll, tx, ty)``.

    Returns:
        float32 (B, N, 3) with x, y in pixels and depth in pixels (larger = closer);
        (N, 3) when both inputs are unbatched.

    Raises:
        ValueError: wrong shapes, empty or non-finite input, batch sizes that differ.

    Weak perspective: x = s X + tx, y = -s Y + ty (image y points down), depth = s Z:

    >>> project([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], [2.0, 0, 0, 0, 10.0, 20.0])
    array([[10., 20.,  0.],
           [12., 18.,  2.]], dtype=float32)
    """
    cams = _check_cameras(cameras)
    verts = as_float_array(vertices, "vertices", last=3, dtype=np.float64)
    if verts.ndim not in (2, 3):
        raise ValueError(f"vertices must have shape (N, 3) or (B, N, 3), got {verts.shape}")
    single = cams.ndim == 1 and verts.ndim == 2
    cams2 = cams.reshape(-1, 6)
    if verts.ndim == 3 and verts.shape[0] != cams2.shape[0] and cams.ndim == 2:
        raise ValueError(f"vertices batch {verts.shape[0]} != cameras batch {cams2.shape[0]}")
    R = rotation_matrix(cams2[:, 1], cams2[:, 2], cams2[:, 3])  # (B, 3, 3)
    rotated = np.einsum("bij,...nj->bni", R, verts) if verts.ndim == 2 else np.einsum("bij,bnj->bni", R, verts)
    s = cams2[:, 0, None]
    out = np.stack(
        [s * rotated[..., 0] + cams2[:, 4, None], -s * rotated[..., 1] + cams2[:, 5, None], s * rotated[..., 2]],
        axis=-1,
    ).astype(np.float32)
    return out[0] if single else out


def project_torch(vertices, cameras):
    """Torch twin of :func:`project`: vertices (N, 3) or (B, N, 3), cameras (B, 6) -> (B, N, 3).

    Differentiable in both arguments; runs on the tensors' device. No input checks beyond
    shapes (it is meant for training loops).
    """
    import torch

    if cameras.ndim != 2 or cameras.shape[-1] != 6:
        raise ValueError(f"cameras must have shape (B, 6), got {tuple(cameras.shape)}")
    R = rotation_matrix_torch(cameras[:, 1], cameras[:, 2], cameras[:, 3]).to(vertices.dtype)
    if vertices.ndim == 2:
        vertices = vertices.unsqueeze(0).expand(cameras.shape[0], -1, -1)
    rotated = torch.einsum("bij,bnj->bni", R, vertices)
    s = cameras[:, 0, None].to(vertices.dtype)
    return torch.stack(
        [s * rotated[..., 0] + cameras[:, 4, None], -s * rotated[..., 1] + cameras[:, 5, None], s * rotated[..., 2]],
        dim=-1,
    )


def euler_from_rotation(R) -> np.ndarray:
    """Inverse of :func:`rotation_matrix`: (..., 3, 3) -> (..., 3) = (pitch, yaw, roll) in radians.

    Yaw is in [-pi/2, pi/2]; at |yaw| = 90 degrees (gimbal lock) roll is set from the
    remaining entries with pitch absorbing the rest.

    >>> import numpy as np
    >>> euler_from_rotation(rotation_matrix(0.1, -0.7, 0.25)).round(12)
    array([ 0.1 , -0.7 ,  0.25])
    """
    R = np.asarray(R, dtype=np.float64)
    # R = Rx(a) Ry(b) Rz(c) with a = -pitch, b = -yaw, c = -roll:
    #   R[0,2] = sin b, R[1,2] = -sin a cos b, R[2,2] = cos a cos b, R[0,1] = -cos b sin c, R[0,0] = cos b cos c
    b = np.arcsin(np.clip(R[..., 0, 2], -1.0, 1.0))
    a = np.arctan2(-R[..., 1, 2], R[..., 2, 2])
    c = np.arctan2(-R[..., 0, 1], R[..., 0, 0])
    return np.stack([-a, -b, -c], axis=-1)


def fit_camera(model_points, image_points, weights=None) -> np.ndarray:
    """Weak-perspective camera from 3D-2D correspondences (affine fit + orthonormalisation).

    Solves the least-squares affine map from model points to (x, -y) image points, projects
    its 2x3 linear part onto the nearest scaled rotation (SVD; s = mean singular value) and
    converts it to ``(s, pitch, yaw, roll, tx, ty)``. The translation is then re-solved for
    the orthonormalised rotation so the fitted camera is self-consistent.

    Args:
        model_points: (L, 3) model-space points (cm), L >= 4, not all coplanar (in practice
            the 68 landmark vertices).
        image_points: (L, 2) or (B, L, 2) pixels.
        weights: optional (L,) or (B, L) non-negative per-point weights (e.g. visibility).

    Returns:
        float64 (6,) or (B, 6).

    Raises:
        ValueError: bad shapes, fewer than 4 points with positive weight, non-finite input.
    """
    q = as_float_array(model_points, "model_points", ndim=2, last=3, dtype=np.float64)
    x = as_float_array(image_points, "image_points", last=2, dtype=np.float64)
    single = x.ndim == 2
    x = x.reshape((-1,) + x.shape[-2:])
    if x.shape[1] != q.shape[0]:
        raise ValueError(f"image_points has {x.shape[1]} points but model_points has {q.shape[0]}")
    wts = np.ones(x.shape[:2]) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), x.shape[:2])
    if np.any(~np.isfinite(wts)) or np.any(wts < 0):
        raise ValueError("weights must be finite and >= 0")
    cams = np.empty((x.shape[0], 6))
    design = np.c_[q, np.ones(len(q))]
    for b in range(x.shape[0]):
        w = wts[b]
        if np.count_nonzero(w > 0) < 4:
            raise ValueError("fit_camera needs at least 4 points with positive weight")
        target = np.c_[x[b, :, 0], -x[b, :, 1]]
        sw = np.sqrt(w)[:, None]
        affine, *_ = np.linalg.lstsq(design * sw, target * sw, rcond=None)  # (4, 2)
        M = affine[:3].T
        U, S, Vt = np.linalg.svd(M, full_matrices=False)
        r12 = U @ Vt
        R = np.vstack([r12, np.cross(r12[0], r12[1])])
        s = S.mean()
        proj = s * (q @ r12.T)
        t = ((target - proj) * w[:, None]).sum(0) / w.sum()
        cams[b, 0] = s
        cams[b, 1:4] = euler_from_rotation(R)
        cams[b, 4], cams[b, 5] = t[0], -t[1]
    return cams[0] if single else cams


def camera_in_crop(camera: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """A weak-perspective camera (eq. 2) of image pixels carried into a crop.

    Args:
        camera: float (6,) ``(s, pitch, yaw, roll, tx, ty)`` in image pixels, angles in radians.
        transform: float (2, 3) image -> crop, a scale k and a shift (:func:`dffx.preprocess.crop_face`).

    Returns:
        float64 (6,) ``(k s, pitch, yaw, roll, k tx + ox, k ty + oy)``: the same projection in
        crop pixels (x = s (R q)_x + tx and y = -s (R q)_y + ty both scale and shift alike).
    """
    k, ox, oy = float(transform[0, 0]), float(transform[0, 2]), float(transform[1, 2])
    out = np.asarray(camera, np.float64).copy()
    out[0] *= k
    out[4] = k * out[4] + ox
    out[5] = k * out[5] + oy
    return out


def camera_from_crop(cameras: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Weak-perspective cameras (eq. 2) of crop pixels carried back into the image: the inverse of
    :func:`camera_in_crop`, for a batch.

    Args:
        cameras: float (..., 6) ``(s, pitch, yaw, roll, tx, ty)`` in crop pixels, angles in radians.
        transforms: float (..., 2, 3) image -> crop, each a scale k and a shift (o_x, o_y), as
            :func:`dffx.preprocess.crop_transform` makes them.

    Returns:
        float64 (..., 6) ``(s / k, pitch, yaw, roll, (tx - o_x) / k, (ty - o_y) / k)``.
    """
    out = np.array(cameras, np.float64)
    transforms = np.asarray(transforms, np.float64)
    k = transforms[..., 0, 0]
    out[..., 0] /= k
    out[..., 4:6] = (out[..., 4:6] - transforms[..., :, 2]) / k[..., None]
    return out
