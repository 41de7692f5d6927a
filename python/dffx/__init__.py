"""dffx: large-pose face alignment with the Deep Face Feature (Jiang et al., arXiv 1708.02721).

Foundation layer (this release): the ICT-FaceKit morphable model (eq. 3), the weak-perspective
camera (eq. 2), a depth-buffer rasterizer with landmark visibility, and the regularised
least-squares shape fit (eq. 6-8, 11), with C++/CUDA kernels and NumPy reference twins.
"""

from importlib.metadata import PackageNotFoundError, version as _pkg_version

try:
    __version__ = _pkg_version("dffx")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

from .errors import ModelNotFoundError
from .geometry import euler_from_rotation, fit_camera, project, rotation_matrix
from .model import FaceModel, load_face_model
from .ops import RasterResult, fit_shape, fit_shared_shape, landmark_visibility, rasterize

__all__ = [
    "__version__",
    "FaceModel",
    "ModelNotFoundError",
    "RasterResult",
    "euler_from_rotation",
    "fit_camera",
    "fit_shape",
    "fit_shared_shape",
    "landmark_visibility",
    "load_face_model",
    "project",
    "rasterize",
    "rotation_matrix",
]
