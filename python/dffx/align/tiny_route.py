"""Which faces go through the tiny-face path, and their results in the cascade's form
(``AlignOptions.tiny`` and ``tiny_method``; :mod:`dffx.tiny.path`, issue 26).

A face whose box is small (``tiny="auto"``) or every face (``"always"``) is aligned through the
tiny-face network instead of the DFF cascade on the upsampled face:

* ``tiny_method="sr-cascade"`` (default): the DFF cascade on the network's super-resolved 128-px
  face (:func:`align_on_super_resolved`); every output, the score included, is the cascade's;
* ``"network"``: the network's 68 landmarks, then camera, shape and visibility from fitting the
  3DMM to them (:meth:`TinyRoute.align`). Its ``score`` is NaN: the alignment score reads DFF
  features (:mod:`dffx.align.confidence`), which this path does not compute, so a detected tiny
  face is kept or dropped by the detector's own probability.
"""

from __future__ import annotations

import numpy as np

from .image_alignment import ImageAlignment


class TinyRoute:
    """The tiny path of an aligner: its network, loaded on first use.

    Args:
        weights: tiny-face weights file or checkpoint (default: the shipped one).
        device: torch device of the network (default: the CPU).
    """

    def __init__(self, weights=None, device=None):
        self.weights, self.device = weights, device
        self._path, self._contour = None, None

    @property
    def path(self):
        """The :class:`dffx.tiny.path.TinyPath` (loaded on first use; raises as it does)."""
        if self._path is None:
            from ..tiny.path import TinyPath

            self._path = TinyPath(self.weights, self.device)
        return self._path

    @staticmethod
    def faces(boxes: np.ndarray, mode: str) -> np.ndarray:
        """bool (F,): which boxes (F, 4) ``mode`` ("auto", "always", "never") sends through the
        tiny path (:func:`dffx.tiny.path.tiny_faces`). Raises ValueError for another mode."""
        from ..tiny.path import tiny_faces

        return tiny_faces(boxes, mode)

    def align(self, model, image: np.ndarray, boxes: np.ndarray) -> ImageAlignment:
        """The tiny path on ``boxes`` (F, 4) of a uint8 (H, W, 3) BGR image, as an
        :class:`ImageAlignment` (score NaN; see the module docstring). Raises ValueError for a
        bad image or box."""
        from ..synth.fit import ContourLines
        from ..tiny.path import fit_landmarks

        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        result = self.path.run(image, boxes, super_resolve=False)
        if self._contour is None or self._contour[0] is not model:  # built once per model
            self._contour = (model, ContourLines(model))
        fit = fit_landmarks(model, result.landmarks, boxes, self._contour[1])
        return ImageAlignment(boxes=boxes.copy(), landmarks=result.landmarks, visible=fit["visible"],
                              camera=fit["camera"], params=fit["params"], score=np.full(len(boxes), np.nan))


def align_on_super_resolved(model, cascade, features, route: TinyRoute, image: np.ndarray, boxes: np.ndarray,
                            options) -> ImageAlignment:
    """The DFF cascade run on the tiny-face network's super-resolved crops instead of the image
    (``tiny_method="sr-cascade"``): each face's 128-px SR crop is the image the cascade sees,
    with the face box mapped into it, and the results are mapped back to the image's pixels.
    Raises ValueError for a network without the SR head, and as the cascade does."""
    from .predictor import align_in_image

    result = route.path.run(image, boxes)
    if result.sr is None:
        raise ValueError(f"the tiny-face network {route.path.weights} has no super-resolution head")
    parts = []
    for sr, M, box in zip(result.sr, result.transforms, boxes):
        corners = box.reshape(2, 2) @ M[:, :2].T + M[:, 2]
        part = align_in_image(model, cascade, features, sr, corners.reshape(1, 4), options.refine,
                              options.converged_iou, mirror=options.mirror, camera_refit=options.camera_refit)
        k = M[0, 0]  # the SR crop is the image scaled by k and shifted
        part.landmarks = (part.landmarks - M[:, 2]) / k
        part.boxes = box[None].copy()
        part.camera[:, 0] /= k
        part.camera[:, 4:6] = (part.camera[:, 4:6] - M[:, 2]) / k
        parts.append(part)
    merged = {name: None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])
              for name in ("boxes", "landmarks", "visible", "camera", "params", "score")}
    return ImageAlignment(**merged)


def merge_alignments(tiny: np.ndarray, tiny_part: ImageAlignment | None,
                     cascade_part: ImageAlignment | None) -> ImageAlignment:
    """One :class:`ImageAlignment` in box order from the tiny path's faces (bool (F,) ``tiny``)
    and the cascade's (the others). A cascade part without scores gives the tiny faces' NaN."""
    parts = [(np.flatnonzero(tiny), tiny_part), (np.flatnonzero(~tiny), cascade_part)]
    parts = [(rows, part) for rows, part in parts if len(rows)]
    if len(parts) == 1:
        return parts[0][1]
    merged = {}
    for name in ("boxes", "landmarks", "visible", "camera", "params", "score"):
        values = [getattr(part, name) for _, part in parts]
        if any(v is None for v in values):
            merged[name] = None
            continue
        first = values[0]
        out = np.empty((len(tiny),) + first.shape[1:], np.result_type(*values))
        for (rows, _), v in zip(parts, values):
            out[rows] = v
        merged[name] = out
    return ImageAlignment(**merged)


def align_routed(model, cascade, features, route: TinyRoute, image: np.ndarray, boxes: np.ndarray,
                 options) -> ImageAlignment:
    """Align ``boxes`` (F, 4) of a uint8 BGR image: the faces ``options.tiny`` picks through the
    tiny path of ``route``, the others through the cascade
    (:func:`dffx.align.predictor.align_in_image` with ``options``' refine, converged_iou, mirror
    and camera_refit). Raises ValueError as those do."""
    from .predictor import align_in_image

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    tiny = route.faces(boxes, options.tiny)
    tiny_part = None
    if tiny.any():
        tiny_part = (route.align(model, image, boxes[tiny]) if options.tiny_method == "network" else
                     align_on_super_resolved(model, cascade, features, route, image, boxes[tiny], options))
    cascade_part = None
    if not tiny.all():
        cascade_part = align_in_image(model, cascade, features, image, boxes[~tiny], options.refine,
                                      options.converged_iou, mirror=options.mirror,
                                      camera_refit=options.camera_refit)
    return merge_alignments(tiny, tiny_part, cascade_part)
