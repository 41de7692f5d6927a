"""Large-pose alignment (paper Sec. III-C): the cascade over DFF (or SIFT) landmark features."""

from .aligner import FaceAligner, FaceAlignment, draw_alignment
from .cascade import Cascade, CascadeState, train_cascade, update_geometry
from .features import DFFLandmarkFeatures, SIFTLandmarkFeatures
from .predictor import CascadePredictor, synth_split

__all__ = ["FaceAligner", "FaceAlignment", "draw_alignment", "Cascade", "CascadePredictor", "CascadeState", "DFFLandmarkFeatures", "SIFTLandmarkFeatures",
           "synth_split", "train_cascade", "update_geometry"]
