"""Large-pose alignment (paper Sec. III-C): the cascade over DFF (or SIFT) landmark features."""

from .cascade import Cascade, CascadeState, train_cascade, update_geometry
from .features import DFFLandmarkFeatures, SIFTLandmarkFeatures
from .predictor import CascadePredictor, synth_split

__all__ = ["Cascade", "CascadePredictor", "CascadeState", "DFFLandmarkFeatures", "SIFTLandmarkFeatures",
           "synth_split", "train_cascade", "update_geometry"]
