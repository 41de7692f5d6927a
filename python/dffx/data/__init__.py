"""Readers of annotated face datasets: AFLW2000-3D, AFLW (3DDFA crop protocol), 300W / iBUG .pts
(the held-out renders of a synthesized set: :mod:`dffx.synth.val_samples`)."""

from .aflw2000 import load_aflw2000_3d, read_yaw_csv
from .aflw_crops import load_aflw_crops, restore_roi
from .ibug import landmark_box, load_300w, read_pts
from .sample import DatasetFormatError, FaceSample, LoadReport

__all__ = [
    "DatasetFormatError",
    "FaceSample",
    "LoadReport",
    "landmark_box",
    "load_300w",
    "load_aflw2000_3d",
    "load_aflw_crops",
    "read_pts",
    "read_yaw_csv",
    "restore_roi",
]
