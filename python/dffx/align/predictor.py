"""Glue: synthesized training splits for the cascade, and the predictor ``dffx eval`` runs."""

from __future__ import annotations

import numpy as np

from ..preprocess import crop_face, crop_to_image
from .cascade import Cascade
from .features import DFFLandmarkFeatures, SIFTLandmarkFeatures


def synth_split(root, split: str, limit: int | None = None, seed: int = 0) -> dict:
    """A split of a ``dffx synth`` set as the cascade trainer wants it.

    Returns:
        dict with ``crops(ids)`` -> uint8 (n, 224, 224, 3) BGR, ``landmarks`` float32 (N, 68, 2)
        and ``cameras`` float64 (N, 6); ``limit`` samples drawn at random (seeded) when given.
    """
    from ..synth import SynthDataset

    data = SynthDataset(root, split)
    order = np.arange(len(data))
    if limit is not None and limit < len(data):
        order = np.sort(np.random.default_rng(seed).choice(len(data), limit, replace=False))

    def meta(key):  # from the shards' metadata: no image decoding
        return np.stack([data.shards[sh].meta[key][i] for sh, i in data.entries[order]])

    return {"crops": lambda ids: np.stack([data.raw(int(order[i]))["image"] for i in ids]),
            "landmarks": meta("landmarks68").astype(np.float32), "cameras": meta("camera").astype(np.float64)}


def default_cascade_path(features: str):
    """Path of the shipped descent directions for "dff" or "sift" (``dffx/weights/``)."""
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "weights" / f"cascade_{features}.npz"


def make_features(kind: str, weights=None, device=None):
    """Landmark features by name: "dff" (DFFExtractor with ``weights``) or "sift"."""
    if kind == "dff":
        from ..nn import DFFExtractor

        return DFFLandmarkFeatures(DFFExtractor(weights, device=device))
    if kind == "sift":
        return SIFTLandmarkFeatures()
    raise ValueError(f"features must be 'dff' or 'sift', got {kind!r}")


class CascadePredictor:
    """``dffx eval`` predictor: canonical crop from the face box, cascade, landmarks back in the image.

    Args:
        model: :class:`dffx.FaceModel`.
        cascade: a :class:`Cascade` or a path to one.
        weights: DFF weights (for "dff" cascades; None = the shipped default).
    """

    def __init__(self, model, cascade, weights=None, device=None):
        self.model = model
        self.cascade = cascade if isinstance(cascade, Cascade) else Cascade.load(cascade)
        self.features = make_features(self.cascade.features, weights, device)
        self.name = self.cascade.features

    def predict(self, image, box):
        """:class:`dffx.eval.predictors.Prediction` for the face in ``box`` of a BGR uint8 image."""
        from ..eval.predictors import Prediction

        crop, transform = crop_face(image if image.ndim == 3 else np.repeat(image[..., None], 3, 2), box)
        state = self.cascade.run(self.model, self.features, crop[None])
        k = transform[0, 0]
        cam = state.camera[0].copy()
        cam[0] /= k
        cam[4:6] = crop_to_image(cam[4:6], transform)
        return Prediction(crop_to_image(state.X[0].astype(np.float64), transform), cam)
