"""Ground-truth landmark visibility for the paper's Table III variant (visible inner landmarks).

AFLW2000-3D has no visibility annotation. We decide it the way the 3D protocols do, from a 3D
face fitted to the ground truth: a weak-perspective camera is fitted to the inner points
(iBUG 18-68), the ICT model's shape to all 68 points under that camera (jaw points weight 0,
eq. 6-8), and each landmark vertex is tested against the depth buffer of the fitted mesh
(dffx.landmark_visibility, 2x2 rule, 1 px tolerance).
"""

from __future__ import annotations

import numpy as np

from ..geometry.camera import fit_camera, project
from ..ops.raster import mesh_landmark_visibility
from ..ops.shape_fit import fit_shape
from .metrics import INNER_68

# Prior weight of the fit in pixels^2 per unit prior variance: keeps the shape plausible when
# the camera is slightly off; small against the ~100 px^2 error of a 10 px landmark miss.
FIT_REGULARIZATION = 50.0


def ground_truth_visibility(model, gt68: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(68,) bool: which ground-truth landmarks are visible, from a model fitted to them.

    Args:
        model: :class:`dffx.FaceModel`.
        gt68: (68, 2) ground-truth points in pixels (no NaN).
        image_size: (height, width) of the image the points live in.
    """
    gt68 = np.asarray(gt68, np.float64)
    mean68 = model.mean[model.landmarks68]
    camera = fit_camera(mean68[INNER_68], gt68[INNER_68])
    weights = np.zeros(68)
    weights[INNER_68] = 1.0
    p = fit_shape(model, gt68, camera, landmark_weights=weights, w_reg=FIT_REGULARIZATION)
    shape = model.shape(p[: model.n_identity], p[model.n_identity:])
    camera = fit_camera(shape[model.landmarks68][INNER_68], gt68[INNER_68])
    screen = project(shape, camera)
    return mesh_landmark_visibility(screen, model.triangles, model.landmarks68, image_size)
