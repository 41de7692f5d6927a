"""dffx: large-pose face alignment with the Deep Face Feature (Jiang et al., arXiv 1708.02721).

* :class:`FaceAligner` -- image -> 68 landmarks, landmark visibility, head pose and 3D shape
  (the cascade of Sec. III-C), with its settings in :class:`AlignOptions`; :func:`detect_faces`
  -- the offline face detector it uses;
  :class:`FaceTracker` -- the same over video frames, each face starting from its previous
  landmarks.
* :class:`DFFExtractor` -- the Deep Face Feature network (Sec. III-B): 32-D unit vectors per pixel.
* The geometry core: the ICT-FaceKit 3DMM (eq. 3), the weak-perspective camera (eq. 2), a
  depth-buffer rasterizer with landmark visibility and the regularised least-squares shape fit
  (eq. 6-8, 11), with C++/CUDA kernels and NumPy reference twins.

``AlignOptions``, ``FaceAligner``, ``FaceAlignment``, ``FaceTracker``, ``draw_alignment``,
``DFFExtractor`` and ``detect_faces`` load on first use (PEP 562), so ``import dffx`` does not import PyTorch or OpenCV.
"""

from importlib.metadata import PackageNotFoundError, version as _pkg_version

try:
    __version__ = _pkg_version("dffx")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

from ._lazy import lazy_attributes as _lazy_attributes
from .errors import ModelNotFoundError
from .geometry import euler_from_rotation, fit_camera, project, rotation_matrix
from .model import FaceModel, load_face_model
from .ops import RasterResult, fit_shape, fit_shared_shape, landmark_visibility, rasterize

# name -> submodule, imported on first access (see the module docstring)
_LAZY = {"AlignOptions": "align.options", "DFFExtractor": "nn.extractor", "FaceAligner": "align.aligner",
         "FaceAlignment": "align.aligner",
         "FaceTracker": "align.tracker", "draw_alignment": "align.aligner", "detect_faces": "detect"}

__all__ = [
    "__version__",
    "AlignOptions",
    "DFFExtractor",
    "FaceAligner",
    "FaceAlignment",
    "FaceModel",
    "FaceTracker",
    "ModelNotFoundError",
    "RasterResult",
    "detect_faces",
    "draw_alignment",
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


__getattr__, __dir__ = _lazy_attributes(__name__, _LAZY, globals())
