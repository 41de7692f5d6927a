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


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cascade_features(cascade: Cascade, weights=None, device=None):
    """The landmark features a cascade was trained with.

    A DFF cascade's descent directions (eq. 9-10) only fit the network they were learned on, so
    the cascade file records it: ``info["dff_network"]``, the name of a shipped network (see
    :class:`dffx.nn.DFFExtractor`), and ``info["dff_sha256"]``, the SHA-256 of its weights file.

    Args:
        cascade: a loaded :class:`Cascade`.
        weights: DFF weights to use instead (name, path or DFFNet); None: the recorded network
            (or the shipped default when the file records none).
        device: torch device for the DFF network.

    Returns:
        :class:`DFFLandmarkFeatures` or :class:`SIFTLandmarkFeatures`.

    Warns:
        UserWarning: the DFF weights loaded are not the ones the cascade was trained with.
    """
    if cascade.features != "dff":
        return make_features(cascade.features, None, device)
    features = make_features("dff", weights if weights is not None else cascade.info.get("dff_network"), device)
    expected, path = cascade.info.get("dff_sha256"), features.extractor.weights_path
    if expected and (path is None or file_sha256(path) != expected):
        import warnings

        warnings.warn(f"DFF weights {path or '(in memory)'} are not the network this cascade was trained with "
                      f"(sha256 {expected[:12]}...): its descent directions will not fit these features",
                      stacklevel=2)
    return features


class CascadePredictor:
    """``dffx eval`` predictor: canonical crop from the face box, cascade, landmarks back in the image.

    Args:
        model: :class:`dffx.FaceModel`.
        cascade: a :class:`Cascade` or a path to one.
        weights: DFF weights (for "dff" cascades; None = the network the cascade was trained
            with, see :func:`cascade_features`).
    """

    def __init__(self, model, cascade, weights=None, device=None):
        self.model = model
        self.cascade = cascade if isinstance(cascade, Cascade) else Cascade.load(cascade)
        self.features = cascade_features(self.cascade, weights, device)
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
