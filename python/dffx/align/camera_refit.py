"""Camera refit after the cascade's last stage: the camera that best projects the fitted shape
onto the regressed landmarks, held near the regressed camera.

The cascade's last stage regresses landmarks X^ (eq. 4) and a camera w (eq. 5) separately and
fits the shape to X^ under w (eq. 6-8). The regressed w need not be the camera that explains X^
best with that shape. This step alternates, ``REFIT_ROUNDS`` times, a camera fit to X^ with the
shape fixed and the eq. 6-8 shape fit under the new camera.

The camera fit minimises, over w = (s, pitch, yaw, roll, tx, ty),

    sum_l |P(w) q_l - x^_l|^2 / s0^2  +  kappa * |angles(w) - angles(w0)|^2

with q_l the fitted shape's 68 landmark vertices, P the weak-perspective projection of eq. 2,
w0 the regressed camera and s0 its scale (so the first term is in cm^2, like the shape fit's
landmark term), by ``GAUSS_NEWTON_STEPS`` Gauss-Newton steps from w0 with the analytic
Jacobian. The prior ``kappa`` (cm^2 per rad^2) matters where the landmarks do not pin the
angles down: near profile, pitch and roll turn the face about nearly the same axis (the Euler
angles' gimbal lock at 90 degrees of yaw), and without the prior the fit trades one for the
other. It leaves the regressed split there.

Measured (docs/experiments/2026-12-04-camera-refit.md): on held-out renders the landmarks' NME drops 3%
and the head-pose error 5%, with every yaw bin better; kappa and the number of rounds were
chosen on training renders. The C++ cascade (csrc/cpu/cascade.cpp) runs the same step; this is
its twin.
"""

from __future__ import annotations

import numpy as np

from ..geometry.camera import rotation_matrix

REFIT_ROUNDS = 2
REFIT_PRIOR = 100.0  # kappa, cm^2 per rad^2 of each angle
GAUSS_NEWTON_STEPS = 3
MIN_SCALE = 1e-3  # as the cascade's camera update

# d/da of the right-handed elementary rotations R(a) is R(a) G: their generators.
_GX = np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64)
_GY = np.array([[0, 0, 1], [0, 0, 0], [-1, 0, 0]], np.float64)
_GZ = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 0]], np.float64)


def rotation_and_derivatives(cameras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R = Rx(-pitch) Ry(-yaw) Rz(-roll) (docs/design.md) and dR / d(pitch, yaw, roll).

    Args:
        cameras: float64 (B, 6) w = (s, pitch, yaw, roll, tx, ty).

    Returns:
        R (B, 3, 3) and dR (B, 3, 3, 3), dR[:, a] the derivative by angle a.

    With A = Rx(-pitch), B = Ry(-yaw), C = Rz(-roll): dR/dpitch = -A Gx B C = -Gx R (Gx commutes
    with A), dR/dyaw = -A Gy B C = -(A Gy A^T) R and dR/droll = -A B C Gz = -R Gz.
    """
    pitch, yaw, roll = cameras[:, 1], cameras[:, 2], cameras[:, 3]
    R = rotation_matrix(pitch, yaw, roll)
    A = rotation_matrix(pitch, np.zeros_like(pitch), np.zeros_like(pitch))
    dR = np.stack([-(_GX @ R), -(A @ _GY @ np.swapaxes(A, -1, -2) @ R), -(R @ _GZ)], axis=1)
    return R, dR


def refit_cameras(points3d, landmarks, cameras0, prior: float = REFIT_PRIOR,
                  steps: int = GAUSS_NEWTON_STEPS) -> np.ndarray:
    """The camera fit of the module docstring for B faces.

    Args:
        points3d: (B, 68, 3) the fitted shapes' landmark vertices, model cm.
        landmarks: (B, 68, 2) the regressed landmarks X^, crop pixels (x right, y down).
        cameras0: (B, 6) the regressed cameras w0 (the start and the prior's centre).
        prior: kappa >= 0, cm^2 per rad^2.
        steps: Gauss-Newton steps.

    Returns:
        float64 (B, 6) cameras, scale at least 1e-3.

    Raises:
        ValueError: shapes that do not fit together, a negative prior or non-finite input.
    """
    q = np.asarray(points3d, np.float64)
    x = np.asarray(landmarks, np.float64)
    w0 = np.asarray(cameras0, np.float64)
    if q.ndim != 3 or q.shape[2] != 3 or x.shape != q.shape[:2] + (2,) or w0.shape != (len(q), 6):
        raise ValueError(f"expected points3d (B, L, 3), landmarks (B, L, 2), cameras0 (B, 6); got {q.shape}, "
                         f"{x.shape}, {w0.shape}")
    if not prior >= 0 or not all(np.isfinite(a).all() for a in (q, x, w0)):
        raise ValueError("the camera refit needs finite input and a prior >= 0")
    s0 = w0[:, 0:1, None]
    K = np.diag([0.0, prior, prior, prior, 0.0, 0.0])
    flip = np.array([1.0, -1.0])  # image y points down
    w = w0.copy()
    for _ in range(steps):
        R, dR = rotation_and_derivatives(w)
        rq = np.einsum("bij,blj->bli", R, q)                     # (B, L, 3)
        drq = np.einsum("baij,blj->bali", dR, q)                 # (B, 3, L, 3)
        s = w[:, 0, None, None]
        error = (s * rq[..., :2] * flip + w[:, None, 4:6] - x) / s0           # (B, L, 2), cm
        J = np.empty(error.shape + (6,))
        J[..., 0] = rq[..., :2] * flip / s0
        J[..., 1:4] = np.moveaxis(s[:, None] * drq[..., :2] * flip, 1, -1) / s0[..., None]
        J[..., 4:6] = np.eye(2) / s0[..., None]
        J = J.reshape(len(w), -1, 6)
        lhs = np.einsum("bni,bnj->bij", J, J) + K
        rhs = np.einsum("bni,bn->bi", J, error.reshape(len(w), -1)) + (w - w0) @ K
        w -= np.linalg.solve(lhs, rhs[..., None])[..., 0]
        w[:, 0] = np.maximum(w[:, 0], MIN_SCALE)
    return w
