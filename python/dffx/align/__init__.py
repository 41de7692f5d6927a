"""Large-pose alignment (paper Sec. III-C): the cascade over DFF (or SIFT) landmark features.

* :class:`FaceAligner` -- photo -> 68 landmarks, visibility, pose and 3D shape per face;
  :class:`FaceTracker` -- the same over video frames.
* :class:`Cascade` / :func:`train_cascade` -- the descent directions (eq. 4-11) and their training.

The names load on first use (PEP 562), so ``import dffx.align`` (and the ``dffx`` command line,
which imports :mod:`dffx.align.cli`) does not import OpenCV or SciPy.
"""

from .._lazy import lazy_attributes as _lazy_attributes

_EXPORTS = {
    "AlignOptions": "options", "FaceAligner": "aligner", "FaceAlignment": "aligner", "draw_alignment": "aligner",
    "Cascade": "cascade", "CascadeState": "cascade", "train_cascade": "cascade", "update_geometry": "cascade",
    "DFFLandmarkFeatures": "features", "SIFTLandmarkFeatures": "features",
    "synth_split": "predictor",
    "FaceTracker": "tracker", "TrackedFace": "tracker",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = _lazy_attributes(__name__, _EXPORTS, globals())
