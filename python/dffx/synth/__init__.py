"""Training-data synthesis (paper Sec. III-A): fit the 3DMM to annotated photos, re-render them.

* :mod:`.fit` — 3DMM + camera fit to 68 points with contour marching for the jaw;
* :mod:`.mesh` — the face mesh with eye/mouth caps and its mirror map;
* :mod:`.render` — projective texturing from the photo, new pose/expression/light;
* :mod:`.background` — backgrounds: crops of other photos beside their annotated face;
* :mod:`.store` / :mod:`.dataset` — sharded storage and the PyTorch ``SynthDataset``;
* :mod:`.pipeline` — ``dffx synth``; :mod:`.preview` — ``dffx synth-preview``;
* :mod:`.val_samples` — the held-out renders as evaluation samples (``dffx eval synth``).
"""

from .._lazy import lazy_attributes as _lazy_attributes

# The names load on first use (PEP 562): `dffx synth`'s parser, built with every `dffx` command,
# must not import OpenCV and SciPy.
_EXPORTS = {
    "SynthDataset": "dataset", "ContourLines": "fit", "PhotoFit": "fit", "fit_photo": "fit", "SynthMesh": "mesh",
    "SynthConfig": "pipeline", "synthesize": "pipeline", "SynthSample": "render", "Synthesizer": "render",
    "ViewParams": "render", "crop_camera": "render", "sample_view": "render",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = _lazy_attributes(__name__, _EXPORTS, globals())
