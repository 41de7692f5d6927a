"""Camera geometry: weak-perspective projection (paper eq. 2), Euler angles, camera fitting."""

from .camera import (
    CAMERA_PARAMS,
    euler_from_rotation,
    fit_camera,
    project,
    project_torch,
    rotation_matrix,
    rotation_matrix_torch,
)

__all__ = [
    "CAMERA_PARAMS",
    "euler_from_rotation",
    "fit_camera",
    "project",
    "project_torch",
    "rotation_matrix",
    "rotation_matrix_torch",
]
