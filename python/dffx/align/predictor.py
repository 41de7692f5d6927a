"""Glue: synthesized training splits for the cascade, and the predictor ``dffx eval`` runs."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from ..detect.boxes import paired_iou
from ..nn.integrity import file_sha256
from ..preprocess import crop_face, crop_to_image
from .cascade import Cascade, CascadeState, update_geometry
from .features import DFFLandmarkFeatures, SIFTLandmarkFeatures
from .image_alignment import ImageAlignment
from .mirror import average_with_mirror, mirror_back, mirror_boxes
from .options import BACKENDS, check_converged_iou


def synth_split(root, split: str, limit: int | None = None, seed: int = 0, model=None) -> dict:
    """A split of a ``dffx synth`` set as the cascade trainer wants it.

    Args:
        root: the set's folder; split: "train" or "val"; limit: samples drawn at random (seeded).
        model: when given, the landmark labels are recomputed from each sample's stored camera
            and shape (eq. 2-3) at this model's landmarks (its landmark convention,
            :mod:`dffx.model.annotated_landmarks`), with depth-buffer visibility; otherwise the
            labels stored with the renders are used.

    Returns:
        dict with ``crops(ids)`` -> uint8 (n, 224, 224, 3) BGR, ``landmarks`` float32 (N, 68, 2),
        ``cameras`` float64 (N, 6), ``landmarks160`` float32 (N, 160, 2) and ``visible160`` bool
        (N, 160).
    """
    from ..synth import SynthDataset

    data = SynthDataset(root, split)
    order = np.arange(len(data))
    if limit is not None and limit < len(data):
        order = np.sort(np.random.default_rng(seed).choice(len(data), limit, replace=False))

    def meta(key):  # from the shards' metadata: no image decoding
        return np.stack([data.shards[sh].meta[key][i] for sh, i in data.entries[order]])

    cameras = meta("camera").astype(np.float64)
    if model is None:
        labels = (meta("landmarks68"), meta("landmarks160"), meta("visible160"))
    else:
        params = np.concatenate([meta("p_id"), meta("p_exp")], axis=1).astype(np.float32)
        state = update_geometry(model, CascadeState(cameras, params))
        labels = (state.X, state.U, state.V)
    return {"crops": lambda ids: np.stack([data.raw(int(order[i]))["image"] for i in ids]),
            "landmarks": labels[0].astype(np.float32), "cameras": cameras,
            "landmarks160": labels[1].astype(np.float32), "visible160": labels[2].astype(bool)}


def default_cascade_path(features: str):
    """Path of the shipped descent directions for "dff" or "sift" (``dffx/weights/``)."""
    return Path(__file__).resolve().parents[1] / "weights" / f"cascade_{features}.npz"


def resolve_backend(backend: str | None) -> str:
    """The DFF network's backend: ``backend`` itself, or for None "torch" when PyTorch is
    installed and "onnxruntime" otherwise. Raises ValueError for an unknown name."""
    if backend is None:
        import importlib.util

        return "torch" if importlib.util.find_spec("torch") is not None else "onnxruntime"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def make_features(kind: str, weights=None, device=None, precision: str = "float32", backend: str | None = "torch"):
    """Landmark features by name: "dff" (the network ``weights`` on ``backend``: a
    :class:`dffx.nn.DFFExtractor` with ``device`` and ``precision``, or an
    :class:`dffx.nn.onnx_runtime.OnnxDFFExtractor`) or "sift".

    Raises:
        ValueError: unknown kind or backend; with "onnxruntime", a precision other than float32
        or a device other than the CPU.
    """
    if kind == "dff":
        backend = resolve_backend(backend)
        if backend == "onnxruntime":
            if precision != "float32":
                raise ValueError(f"the onnxruntime backend runs the network in float32, not {precision!r}")
            if device is not None and str(device) != "cpu":
                raise ValueError(f"the onnxruntime backend runs on the CPU, not {device!r}")
            from ..nn.onnx_runtime import OnnxDFFExtractor

            return DFFLandmarkFeatures(OnnxDFFExtractor(weights))
        from ..nn import DFFExtractor

        return DFFLandmarkFeatures(DFFExtractor(weights, device=device, precision=precision))
    if kind == "sift":
        return SIFTLandmarkFeatures()
    raise ValueError(f"features must be 'dff' or 'sift', got {kind!r}")


def cascade_features(cascade: Cascade, weights=None, device=None, precision: str = "float32",
                     backend: str | None = "torch"):
    """The landmark features a cascade was trained with.

    A DFF cascade's descent directions (eq. 9-10) only fit the network they were learned on, so
    the cascade file records it: ``info["dff_network"]``, the name of a shipped network (see
    :class:`dffx.nn.DFFExtractor`), and ``info["dff_sha256"]``, the SHA-256 of its weights file.

    Args:
        cascade: a loaded :class:`Cascade`.
        weights: DFF weights to use instead (name, path or DFFNet); None: the recorded network,
            a shipped name or, for a network trained outside the package, the weights file the
            cascade recorded if it still exists (else the shipped default, with a warning).
        device: torch device for the DFF network.
        precision: the DFF network's dtype, "float32" or "bfloat16" (:class:`dffx.nn.DFFExtractor`).
        backend: where the network runs (:func:`make_features`): with "onnxruntime", ``weights``
            names a shipped ONNX file or is the path of one, whose recorded source SHA-256 is
            checked.

    Returns:
        :class:`DFFLandmarkFeatures` or :class:`SIFTLandmarkFeatures`.

    Warns:
        UserWarning: the DFF weights loaded are not the ones the cascade was trained with.
    """
    if cascade.features != "dff":
        return make_features(cascade.features, None, device)
    if weights is None:
        # a shipped network is recorded by name; one from outside the package by its file's path
        recorded = cascade.info.get("dff_weights")
        weights = cascade.info.get("dff_network") or (recorded if recorded and Path(recorded).is_file() else None)
    features = make_features("dff", weights, device, precision, backend)
    extractor, expected = features.extractor, cascade.info.get("dff_sha256")
    if hasattr(extractor, "source_sha256"):  # an ONNX file records the weights it was exported from
        path, actual = extractor.path, extractor.source_sha256
    else:
        path = extractor.weights_path
        actual = file_sha256(path) if path is not None else None
    if expected and actual != expected:
        import warnings

        warnings.warn(f"DFF weights {path or '(in memory)'} are not the network this cascade was trained with "
                      f"(sha256 {expected[:12]}...): its descent directions will not fit these features",
                      stacklevel=2)
    return features


# Which re-crop pass a face keeps, per cascade features, measured on held-out renders from true,
# MTCNN and Haar boxes (docs/experiments/2026-12-02-refinement-and-confidence.md): for DFF the last pass is
# 3-5% better from detector boxes than the best-scoring one; for SIFT the best-scoring is 4-5% better.
KEEP_RULES = ("last", "best-score")
KEEP_PASS = {"dff": "last", "sift": "best-score"}


def align_in_image(model, cascade: Cascade, features, image: np.ndarray, boxes, refine: int = 0,
                   converged_iou: float | None = None, keep: str | None = None, mirror: bool = False,
                   camera_refit: bool = True) -> ImageAlignment:
    """Run the cascade on every face box of one image, with optional re-crop passes.

    Each pass cuts the canonical crop (:func:`dffx.preprocess.crop_face`) from a box and runs
    the cascade (eq. 4-8). A refine pass starts from the box of the previous pass's 68
    landmarks, which is the box convention the cascade was trained on, so it corrects a box that
    another detector (or a Haar cascade) drew elsewhere.

    A face whose landmark box already overlaps the box its pass started from by IoU >=
    ``converged_iou`` has converged: a further pass would cut nearly the same crop, so it gets
    none (docs/experiments/2026-12-02-refinement-and-confidence.md). Faces are re-run only while some have not. Each
    face keeps its last pass (the one it converged at, or its last refine pass) or, with
    ``keep="best-score"``, its best-scoring pass; :data:`KEEP_PASS` gives each cascade's default.

    With ``mirror`` the same passes also run on the mirror image, and the two results are
    averaged (:mod:`dffx.align.mirror`): 3-8% lower NME in most settings, for twice the work.

    Args:
        model: :class:`dffx.FaceModel`; cascade: :class:`Cascade`; features: its landmark features.
        image: uint8 (H, W, 3) BGR.
        boxes: (F, 4) face boxes x0, y0, x1, y1 in image pixels (landmark-box convention), F >= 1.
        refine: extra passes at most (0: the paper's single run from the given box).
        converged_iou: IoU at which a face stops re-cropping; None (or above 1, which no IoU
            reaches): every face gets all ``refine`` passes.
        keep: "last" or "best-score" (the last pass for a cascade file without a template);
            None: ``KEEP_PASS[cascade.features]``.
        mirror: also align the mirror image and average (:func:`dffx.align.mirror.average_with_mirror`).
        camera_refit: run the camera refit after the cascade's last stage in every pass
            (:mod:`dffx.align.camera_refit`).

    Returns:
        :class:`ImageAlignment`.

    Raises:
        ValueError: negative ``refine``, ``converged_iou`` not a number > 0, an unknown ``keep``,
        no boxes, or a box of non-positive size.
    """
    if refine < 0:
        raise ValueError(f"refine must be >= 0, got {refine}")
    keep = KEEP_PASS.get(cascade.features, "last") if keep is None else keep
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
    check_converged_iou(converged_iou)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("no face boxes")
    direct = _passes(model, cascade, features, image, boxes, refine, converged_iou, keep, camera_refit)
    if not mirror:
        return direct
    width = image.shape[1]
    mirrored = _passes(model, cascade, features, np.ascontiguousarray(image[:, ::-1]), mirror_boxes(boxes, width),
                       refine, converged_iou, keep, camera_refit)
    return average_with_mirror(model, cascade, direct, mirror_back(mirrored, width), image.shape[:2])


def _passes(model, cascade: Cascade, features, image: np.ndarray, boxes: np.ndarray, refine: int,
            converged_iou: float | None, keep: str, camera_refit: bool = True) -> ImageAlignment:
    """The cascade from ``boxes`` and up to ``refine`` re-crop passes (see :func:`align_in_image`)."""
    kept, rows = None, np.arange(len(boxes))  # rows: the faces this pass runs on
    for _ in range(refine + 1):
        crops, transforms = zip(*(crop_face(image, box) for box in boxes))
        state = cascade.run(model, features, np.stack(crops), camera_refit=camera_refit)
        result = _to_image(state, transforms, boxes)
        if kept is None:
            kept = result
        else:
            by_score = keep == "best-score" and result.score is not None
            take = result.score > kept.score[rows] if by_score else np.ones(len(rows), bool)
            _take_rows(kept, result, rows[take], take)
        next_boxes = np.concatenate([result.landmarks.min(1), result.landmarks.max(1)], axis=1)
        if converged_iou is not None:
            going_on = paired_iou(boxes, next_boxes) < converged_iou
            rows, next_boxes = rows[going_on], next_boxes[going_on]
            if len(rows) == 0:
                break
        boxes = next_boxes
    return kept


def _to_image(state, transforms, boxes: np.ndarray) -> ImageAlignment:
    """Crop-pixel cascade state -> image pixels (the crop is a scale and a shift)."""
    camera = state.camera.copy()
    landmarks = np.empty((len(boxes), 68, 2))
    for i, M in enumerate(transforms):
        camera[i, 0] /= M[0, 0]
        camera[i, 4:6] = crop_to_image(camera[i, 4:6], M)
        landmarks[i] = crop_to_image(state.X[i].astype(np.float64), M)
    return ImageAlignment(boxes=boxes.copy(), landmarks=landmarks, visible=state.V[:, :68].copy(), camera=camera,
                          params=np.asarray(state.params).copy(), score=state.score)


def _take_rows(into: ImageAlignment, source: ImageAlignment, rows: np.ndarray, take: np.ndarray) -> None:
    """Overwrite faces ``rows`` (int (T,)) of every per-face array of ``into`` with the faces
    ``take`` (bool (S,), T of them true) of ``source``."""
    for item in fields(into):
        target = getattr(into, item.name)
        if target is not None:
            target[rows] = getattr(source, item.name)[take]
