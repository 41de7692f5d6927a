"""Which faces go through the tiny-face path, and their results in the cascade's form
(``AlignOptions.tiny`` and ``tiny_method``; :mod:`dffx.tiny.path`, issue 26).

A face whose box is small (``tiny="auto"``) or every face (``"always"``) is aligned through a
tiny-face network instead of the DFF cascade on the upsampled face, one of two ways:

* ``"sr-cascade"``: the DFF cascade on the joint network's super-resolved 128-px face
  (:func:`align_on_super_resolved`); every output, the score included, is the cascade's;
* ``"network"``: the landmark-only network's 68 landmarks, then camera, shape and visibility from
  the cascade's own 3DMM fit to them (:meth:`TinyRoute.align`, :func:`fit_tiny_landmarks`). Its
  ``score`` is NaN: the alignment score reads DFF features (:mod:`dffx.align.confidence`), which
  this way does not compute.

``tiny_method="auto"`` (default) takes the second way for the smallest faces (box under
:data:`dffx.tiny.path.TINY_NETWORK_MAX_FACE_SIZE` px), where it is the more accurate, and the
first for the others; ``"sr-cascade"`` and ``"network"`` take one way for every tiny face.
(:meth:`dffx.FaceAligner.align` sends detected faces the first way under ``"auto"`` while its
``min_score`` is set, so that their score can drop false detections.)
"""

from __future__ import annotations

import numpy as np

from ..geometry.camera import camera_from_crop
from .cascade import threads_after_network
from .image_alignment import ImageAlignment


class TinyRoute:
    """The tiny path of an aligner: its two networks, each loaded on first use.

    Args:
        weights: one tiny-face weights file or checkpoint for both ways (default: the shipped
            joint network for the super-resolution, the shipped landmark-only network for the
            landmarks; :mod:`dffx.tiny.path`).
        device: torch device of the networks (default: the CPU).
    """

    def __init__(self, weights=None, device=None):
        self.weights, self.device = weights, device
        self._path, self._landmark_path = None, None

    @property
    def path(self):
        """The :class:`dffx.tiny.path.TinyPath` that super-resolves (the joint network; loaded on
        first use; raises as it does)."""
        if self._path is None:
            from ..tiny.path import TinyPath

            self._path = TinyPath(self.weights, self.device)
        return self._path

    @property
    def landmark_path(self):
        """The :class:`dffx.tiny.path.TinyPath` whose landmarks ``"network"`` takes (the
        landmark-only network unless ``weights`` names one; loaded on first use)."""
        if self._landmark_path is None:
            from ..tiny.path import TinyPath, default_landmark_weights

            self._landmark_path = TinyPath(self.weights, self.device, shipped=default_landmark_weights())
        return self._landmark_path

    @staticmethod
    def faces(boxes: np.ndarray, mode: str) -> np.ndarray:
        """bool (F,): which boxes (F, 4) ``mode`` ("auto", "always", "never") sends through the
        tiny path (:func:`dffx.tiny.path.tiny_faces`). Raises ValueError for another mode."""
        from ..tiny.path import tiny_faces

        return tiny_faces(boxes, mode)

    def align(self, model, cascade, image: np.ndarray, boxes: np.ndarray) -> ImageAlignment:
        """The ``"network"`` way on ``boxes`` (F, 4) of a uint8 (H, W, 3) BGR image: the landmark
        network's landmarks and the 3D outputs of :func:`fit_tiny_landmarks` with ``cascade``
        (score NaN; see the module docstring). Raises ValueError for a bad image or box."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        result = self.landmark_path.run(image, boxes, super_resolve=False)
        fit = fit_tiny_landmarks(model, cascade, result.landmarks, boxes)
        return ImageAlignment(boxes=boxes.copy(), landmarks=result.landmarks, visible=fit["visible"],
                              camera=fit["camera"], params=fit["params"], score=np.full(len(boxes), np.nan))


def fit_tiny_landmarks(model, cascade, landmarks: np.ndarray, boxes: np.ndarray) -> dict:
    """The 3DMM and weak-perspective camera fitted to each face's 68 landmarks with the alignment
    cascade's own fit (:meth:`dffx.align.Cascade.fit_landmarks`: eq. 6-8 and the camera refit, in
    C++ for a DFF cascade), from the camera that maps the mean shape's landmarks onto them
    (:func:`dffx.geometry.camera.fit_camera`), in each box's canonical 224-px crop as the cascade
    works, with the landmarks' depth-buffer visibility there.

    Args:
        model: :class:`dffx.FaceModel`.
        cascade: :class:`dffx.align.Cascade` (its landmark vertices, shape prior and refit).
        landmarks: float (F, 68, 2) image pixels (x right, y down).
        boxes: float (F, 4) the face boxes x0, y0, x1, y1 (their crops).

    Returns:
        dict: ``camera`` float64 (F, 6) (s, pitch, yaw, roll in radians, tx, ty; image pixels),
        ``params`` float32 (F, M) p_id then p_exp, ``visible`` bool (F, 68).

    Raises:
        ValueError: landmarks not finite (F, 68, 2), a bad box.
    """
    from ..geometry.camera import fit_camera
    from ..preprocess import crop_transform

    points = np.asarray(landmarks, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if points.shape != (len(boxes), 68, 2) or not np.isfinite(points).all():
        raise ValueError(f"landmarks must be finite (F, 68, 2) for {len(boxes)} boxes, got shape {points.shape}")
    model = cascade.bind(model)
    to_crop = np.stack([crop_transform(box) for box in boxes])  # (F, 2, 3): a scale k and a shift
    in_crop = np.einsum("fij,flj->fli", to_crop[:, :, :2], points) + to_crop[:, None, :, 2]
    start = fit_camera(model.mean[model.landmarks68].astype(np.float64), in_crop).reshape(-1, 6)
    state = cascade.fit_landmarks(model, in_crop, start, threads=threads_after_network(len(boxes)))
    return {"camera": camera_from_crop(state.camera, to_crop), "params": state.params,
            "visible": state.V[:, :68].copy()}


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
        part.camera = camera_from_crop(part.camera, M)
        parts.append(part)
    merged = {name: None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])
              for name in ("boxes", "landmarks", "visible", "camera", "params", "score")}
    return ImageAlignment(**merged)


def merge_alignments(tiny: np.ndarray, tiny_part: ImageAlignment | None,
                     cascade_part: ImageAlignment | None) -> ImageAlignment:
    """One :class:`ImageAlignment` in box order from the tiny path's faces (bool (F,) ``tiny``)
    and the cascade's (the others); also any other split of one call's boxes in two (the tiny
    path's two ways). A part without scores gives its faces NaN."""
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
    tiny path of ``route`` (each the way ``options.tiny_method`` picks for it), the others through
    the cascade (:func:`dffx.align.predictor.align_in_image` with ``options``' refine,
    converged_iou, mirror and camera_refit). Raises ValueError as those do."""
    from ..tiny.path import network_faces
    from .predictor import align_in_image

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    tiny = route.faces(boxes, options.tiny)
    tiny_part = None
    if tiny.any():
        by_network = network_faces(boxes[tiny], options.tiny_method)
        network_part = route.align(model, cascade, image, boxes[tiny][by_network]) if by_network.any() else None
        sr_part = (align_on_super_resolved(model, cascade, features, route, image, boxes[tiny][~by_network], options)
                   if not by_network.all() else None)
        tiny_part = merge_alignments(by_network, network_part, sr_part)
    cascade_part = None
    if not tiny.all():
        cascade_part = align_in_image(model, cascade, features, image, boxes[~tiny], options.refine,
                                      options.converged_iou, mirror=options.mirror,
                                      camera_refit=options.camera_refit)
    return merge_alignments(tiny, tiny_part, cascade_part)
