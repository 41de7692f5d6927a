"""Evaluation on the paper's protocols (AFLW2000-3D, AFLW, 300W) and on held-out synthesized renders:
landmark and head-pose metrics, predictors, runner."""

from .metrics import (aflw21_from_68, interocular_distance, interpupil_distance, nme, nme_box, pose_errors,
                      summarize_bins, summarize_pose, yaw_bin)
from .predictors import MeanShapePredictor, make_predictor
from .protocols import DATASETS, EvalOptions, evaluate, format_table

__all__ = ["DATASETS", "EvalOptions", "MeanShapePredictor", "aflw21_from_68", "evaluate", "format_table",
           "interocular_distance", "interpupil_distance", "make_predictor", "nme", "nme_box", "pose_errors",
           "summarize_bins", "summarize_pose", "yaw_bin"]
