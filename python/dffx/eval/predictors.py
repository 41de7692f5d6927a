"""Landmark predictors the evaluation protocols can run (``--method``).

``mean-shape`` is the alignment cascade's initial estimate (paper Sec. III-C1) with no cascade
iteration: the mean face under the mean camera for the face box. Every later table shows what
the cascade adds to it. ``dff`` and ``sift`` run the cascade (:mod:`dffx.align`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import as_bgr_image
from ..geometry.camera import project


@dataclass
class Prediction:
    """landmarks: float64 (68, 2) image pixels; camera: (6,) weak-perspective camera w."""

    landmarks: np.ndarray
    camera: np.ndarray


class MeanShapePredictor:
    """The mean face, frontal, placed in the face box (the cascade's initialisation).

    Mean camera for a box: pitch = yaw = roll = 0; the bounding box of the mean face's 68
    projected landmarks is centred on the box and scaled isotropically to the box's area
    (s = sqrt(box_w * box_h / (w_68 * h_68))). The face box follows the landmark-box convention
    (dffx.data loaders, dffx.detect).
    """

    name = "mean-shape"

    def __init__(self, model):
        self.landmarks3d = np.asarray(model.mean[model.landmarks68], np.float64)
        unit = project(self.landmarks3d, [1, 0, 0, 0, 0, 0])[:, :2].astype(np.float64)
        self._lo, self._hi = unit.min(0), unit.max(0)

    def mean_camera(self, box) -> np.ndarray:
        """Camera (6,) that puts the mean landmarks' box onto ``box`` = (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"face box must have positive size, got {tuple(box[:4])}")
        extent = self._hi - self._lo
        s = np.sqrt((x1 - x0) * (y1 - y0) / (extent[0] * extent[1]))
        centre = (self._lo + self._hi) / 2  # of the unit-scale projection
        return np.array([s, 0.0, 0.0, 0.0, (x0 + x1) / 2 - s * centre[0], (y0 + y1) / 2 - s * centre[1]])

    def predict(self, image, box) -> Prediction:
        """Landmarks for the face in ``box`` (the image is not looked at)."""
        camera = self.mean_camera(box)
        return Prediction(project(self.landmarks3d, camera)[:, :2].astype(np.float64), camera)


class CascadePredictor:
    """``dffx eval`` predictor: canonical crop from the face box, cascade, landmarks back in the image.

    Args:
        model: :class:`dffx.FaceModel`.
        cascade: a :class:`dffx.align.Cascade` or a path to one.
        weights: DFF weights (for "dff" cascades; None = the network the cascade was trained
            with, see :func:`dffx.align.predictor.cascade_features`).
        device: torch device for the DFF network.
        options: a :class:`dffx.AlignOptions` (default: the paper's protocol, ``EVAL_DEFAULTS``);
            its settings of ``EVAL_SETTINGS`` apply: re-crop passes
            (:func:`dffx.align.predictor.align_in_image`), the network's precision and backend,
            mirror averaging, the camera refit, which faces the tiny-face network aligns.
        tiny_weights: the tiny-face network (default: the shipped one).
    """

    def __init__(self, model, cascade, weights=None, device=None, options=None, tiny_weights=None):
        from ..align.cascade import Cascade
        from ..align.predictor import cascade_features

        self.cascade = cascade if isinstance(cascade, Cascade) else Cascade.load(cascade)
        self.model = self.cascade.bind(model)
        from ..align.options import EVAL_DEFAULTS

        self.options = EVAL_DEFAULTS if options is None else options
        self.features = cascade_features(self.cascade, weights, device, self.options.precision,
                                         self.options.backend)
        self.name = self.cascade.features
        from ..align.tiny_route import TinyRoute

        self.tiny_route = TinyRoute(tiny_weights, device)

    def predict(self, image, box):
        """:class:`Prediction` for the face in ``box`` of a BGR (or grey) uint8 image; ValueError
        for another image (:func:`dffx._validate.as_bgr_image`)."""
        from ..align.tiny_route import align_routed

        result = align_routed(self.model, self.cascade, self.features, self.tiny_route, as_bgr_image(image), box,
                              self.options)
        return Prediction(result.landmarks[0], result.camera[0])


def _cascade(features: str):
    def build(model, cascade=None, options=None, tiny_weights=None):
        from ..align.cascade import Cascade
        from ..align.predictor import default_cascade_path

        directions = Cascade.load(cascade if cascade is not None else default_cascade_path(features))
        if directions.features != features:  # checked before the features (a network) are loaded
            raise ValueError(f"cascade file {cascade} was trained with {directions.features!r} features, "
                             f"not {features!r}")
        return CascadePredictor(model, directions, options=options, tiny_weights=tiny_weights)
    return build


METHODS = {"mean-shape": MeanShapePredictor, "sift": _cascade("sift"), "dff": _cascade("dff")}


def make_predictor(method: str, model, cascade=None, options=None, tiny_weights=None, **settings):
    """Build the predictor named ``method``; ValueError lists the available ones.

    ``dff`` and ``sift`` are the cascade of Sec. III-C with the shipped descent directions
    (``dffx/weights/cascade_{dff,sift}.npz``), or with ``cascade``, a file written by ``dffx
    train cascade`` for the same features (a DFF cascade brings the network it records), run
    with ``options`` (a :class:`dffx.AlignOptions`; default: the paper's protocol,
    :data:`dffx.align.options.EVAL_DEFAULTS`) changed by ``settings`` (``refine=1``, ...). Of
    them, the settings of :data:`dffx.align.options.EVAL_SETTINGS` apply to a given box: re-crop
    passes, the network's precision and backend, mirror averaging, the camera refit, and which
    faces the tiny-face network (``tiny_weights``, default the shipped one) aligns.

    Raises:
        ValueError: unknown method or setting, a setting out of range (named), ``cascade``,
            refine passes or mirror averaging given to mean-shape, or a cascade trained with
            other features; FileNotFoundError: missing cascade or network file.
    """
    from ..align.options import EVAL_DEFAULTS

    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; available: {', '.join(METHODS)}")
    options = (EVAL_DEFAULTS if options is None else options).replace(**settings)  # validated there
    if method == "mean-shape":
        if cascade is not None or options.refine or options.converged_iou is not None or options.mirror \
                or tiny_weights is not None:
            raise ValueError("cascade files, refine passes, mirror averaging and tiny-face weights apply to the dff "
                             "and sift methods, not mean-shape")
        return METHODS[method](model)
    return METHODS[method](model, cascade, options, tiny_weights)
