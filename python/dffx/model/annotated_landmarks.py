"""Landmark vertices in the annotators' convention (issue 25, item 0).

ICT-FaceKit's 68 Multi-PIE vertices (``FaceModel.landmarks68``) are not where 300-W's
annotators, or AFLW2000-3D's BFM-based labels, put the iBUG points: on frontal photos the
shipped cascade's mean signed error per landmark was 2.3 % of the face box (jaw 4.4 %, brows
too high). A cascade trained on renders labelled at ICT's vertices learns ICT's convention.

The vertices learned from 300-W's annotations (:mod:`dffx.synth.landmark_learning`, which fits
the photos) ship as ``landmarks_300w.json`` beside this module (:func:`annotated_landmarks68`);
``tools/learn_landmarks.py`` reproduces it. :func:`model_for_convention` gives the face model
with either set.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

SHIPPED_FILE = Path(__file__).with_name("landmarks_300w.json")
CONVENTIONS = ("300w", "ict")


def with_landmarks68(model, landmarks68) -> "object":
    """``model`` with another 68-point landmark set (a :class:`dffx.FaceModel` sharing its arrays).

    ``landmarks160`` keeps its 92 dense points and starts with the new 68 (the dense set's
    contract), so the cascade samples features at the landmarks it regresses.

    Args:
        model: :class:`dffx.FaceModel`.
        landmarks68: (68,) vertex indices of the face region.

    Returns:
        :class:`dffx.FaceModel` (``model`` itself when the indices are its own).

    Raises:
        ValueError: not 68 indices in [0, n_vertices).
    """
    idx = np.asarray(landmarks68, np.int64)
    if idx.shape != (68,) or idx.min() < 0 or idx.max() >= model.n_vertices:
        raise ValueError(f"landmarks68 must be 68 vertex indices in [0, {model.n_vertices}), got shape {idx.shape}")
    if np.array_equal(idx, model.landmarks68):
        return model
    dense = np.concatenate([idx, np.asarray(model.landmarks160[68:], np.int64)])
    return dataclasses.replace(model, landmarks68=idx, landmarks160=dense, _cache={})


def annotated_landmarks68(path=None) -> np.ndarray:
    """The shipped learned vertices (int64 (68,)) in 300-W's annotation convention.

    Raises:
        FileNotFoundError: missing file; ValueError: a file that does not hold 68 indices.
    """
    path = Path(path) if path is not None else SHIPPED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"landmark file {path} not found (tools/learn_landmarks.py writes it)")
    try:
        data = json.loads(path.read_text())
        idx = np.asarray(data["landmarks68"], np.int64)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a landmark file: {exc}") from None
    if idx.shape != (68,):
        raise ValueError(f"{path} must list 68 vertex indices, got shape {idx.shape}")
    return idx


def model_for_convention(model, convention: str):
    """``model`` with the landmarks of a convention: "300w" (learned, shipped) or "ict" (published).

    Raises:
        ValueError: unknown convention or indices outside the model.
    """
    if convention == "ict":
        return model
    if convention == "300w":
        return with_landmarks68(model, annotated_landmarks68())
    raise ValueError(f"landmark convention must be one of {CONVENTIONS}, got {convention!r}")
