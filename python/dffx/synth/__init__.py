"""Training-data synthesis (paper Sec. III-A): fit the 3DMM to annotated photos, re-render them.

* :mod:`.fit` — 3DMM + camera fit to 68 points with contour marching for the jaw;
* :mod:`.mesh` — the face mesh with eye/mouth caps and its mirror map;
* :mod:`.render` — projective texturing from the photo, new pose/expression/light;
* :mod:`.background` — backgrounds: crops of other photos beside their annotated face;
* :mod:`.store` / :mod:`.dataset` — sharded storage and the PyTorch ``SynthDataset``;
* :mod:`.pipeline` — ``dffx synth``; :mod:`.preview` — ``dffx synth-preview``;
* :mod:`.val_samples` — the held-out renders as evaluation samples (``dffx eval synth``).
"""

from .dataset import SynthDataset
from .fit import ContourLines, PhotoFit, fit_photo
from .mesh import SynthMesh
from .pipeline import SynthConfig, synthesize
from .render import SynthSample, Synthesizer, ViewParams, crop_camera, sample_view

__all__ = ["ContourLines", "PhotoFit", "SynthConfig", "SynthDataset", "SynthMesh", "SynthSample", "Synthesizer",
           "ViewParams", "crop_camera", "fit_photo", "sample_view", "synthesize"]
