"""The tiny-face path at inference: a face box -> its 32-px crop -> :class:`TinyFaceNet` -> 68
landmarks and a super-resolved crop in the image's pixels (issue 26, items 3-4).

:class:`dffx.FaceAligner` sends a face here when its box is small (``tiny="auto"``: longer side
under :data:`TINY_MAX_FACE_SIZE` pixels) or always (``tiny="always"``). By default
(``tiny_method="auto"``, :mod:`dffx.align.tiny_route`) a face of at least
:data:`TINY_NETWORK_MAX_FACE_SIZE` pixels goes the ``"sr-cascade"`` way: the joint network
(``tiny_joint.pt``) super-resolves it and the DFF cascade aligns the super-resolved face; a
smaller one goes the ``"network"`` way: the landmark-only network's (``tiny_landmarks.pt``) own
landmarks are the result and the 3D outputs (camera, shape, mesh, visibility) come from the
cascade's own 3DMM fit to them (:func:`dffx.align.tiny_route.fit_tiny_landmarks`, eq. 6-8 and
the camera refit).

Everything is in image pixels with pixel centres at integers (x right, y down).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..preprocess import crop_face
from .degrade import HR_SIZE, LR_SIZE

TINY_MODES = ("auto", "always", "never")
TINY_METHODS = ("auto", "sr-cascade", "network")  # AlignOptions.tiny_method
#: ``tiny="auto"`` sends a face whose box's longer side is below this many pixels through the
#: tiny path: where the DFF cascade aligns the super-resolved face better than the upsampled one
#: on the AFLW dev split (better at 16 px, worse at 24; near the 21.3-px face the 32-px crop holds
#: at its own resolution). Measurements: docs/tiny.md.
TINY_MAX_FACE_SIZE = 20.0
#: ``tiny_method="auto"`` aligns a tiny face whose box's longer side is below this many pixels
#: with the landmark-only network's own landmarks and the cascade's 3DMM fit to them, a larger one
#: with the DFF cascade on the joint network's super-resolved face. On the AFLW dev split the
#: network's landmarks are better at 14 px and below, as good at 16 (and ten times faster), worse
#: at 18: the threshold lies between (docs/tiny.md).
TINY_NETWORK_MAX_FACE_SIZE = 17.0
TINY_WEIGHTS_FORMAT = "dffx.tiny-weights"
TINY_CHECKPOINT_FORMAT = "dffx.tiny-checkpoint"


def default_tiny_weights() -> Path:
    """The shipped joint super-resolution and landmark network, ``dffx/weights/tiny_joint.pt``
    (the ``"sr-cascade"`` way and :meth:`dffx.FaceAligner.super_resolve`)."""
    return Path(__file__).resolve().parent.parent / "weights" / "tiny_joint.pt"


def default_landmark_weights() -> Path:
    """The shipped landmark-only network, ``dffx/weights/tiny_landmarks.pt`` (the ``"network"``
    way: trained as the joint one without the super-resolution head, its own landmarks are
    better than the joint network's at every size; docs/tiny.md)."""
    return Path(__file__).resolve().parent.parent / "weights" / "tiny_landmarks.pt"


def load_tiny_net(path, device="cpu"):
    """Read a tiny-face network from a weights file (``dffx train tiny``'s OUT) or a training
    checkpoint, with ``torch.load(weights_only=True)`` (the file cannot run code).

    Returns:
        (:class:`dffx.tiny.net.TinyFaceNet` in eval mode, float32, on ``device``; its config dict).

    Raises:
        FileNotFoundError: no such file; ValueError: not a tiny-face weights file or checkpoint,
        a bad config, non-finite weights, weights that do not match the config.
    """
    import torch

    from .net import TinyFaceNet

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiny-face weights file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, ...
        raise ValueError(f"{path} is not a readable tiny-face weights file: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(blob, dict) or blob.get("format") not in (TINY_WEIGHTS_FORMAT, TINY_CHECKPOINT_FORMAT):
        raise ValueError(f"{path} is not a dffx tiny-face weights file or checkpoint (format tag missing)")
    checkpoint = blob["format"] == TINY_CHECKPOINT_FORMAT
    config = blob.get("config")
    tensors = blob.get("net" if checkpoint else "state_dict")
    if not isinstance(config, dict) or not isinstance(tensors, dict):
        raise ValueError(f"{path}: a tiny-face weights file needs a config dict and a state dict")
    try:
        arch = {k: config[k] for k in ("width", "blocks", "sr", "landmark_head")}
        if not all(isinstance(arch[k], int) and 1 <= arch[k] <= 512 for k in ("width", "blocks")):
            raise ValueError(f"width and blocks must be integers in [1, 512], got {arch['width']}, {arch['blocks']}")
        net = TinyFaceNet(**arch)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad tiny-face network config: {exc}") from None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise ValueError(f"{path}: the state dict must map names to tensors")
    damaged = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if damaged:
        raise ValueError(f"{path} is damaged: non-finite weights (NaN or inf) in {', '.join(damaged[:3])}")
    try:
        net.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored config: {str(exc).splitlines()[0][:200]}") from None
    return net.to(device).eval(), dict(arch)


def tiny_faces(boxes: np.ndarray, mode: str, max_face_size: float = TINY_MAX_FACE_SIZE) -> np.ndarray:
    """bool (F,): the boxes (F, 4) x0, y0, x1, y1 that ``mode`` sends through the tiny path
    ("always": all, "never": none, "auto": longer side under ``max_face_size`` pixels).
    Raises ValueError for another mode."""
    if mode not in TINY_MODES:
        raise ValueError(f"tiny must be one of {TINY_MODES}, got {mode!r}")
    if mode != "auto":
        return np.full(len(np.asarray(boxes).reshape(-1, 4)), mode == "always")
    return _smaller_than(boxes, max_face_size)


def network_faces(boxes: np.ndarray, method: str,
                  max_face_size: float = TINY_NETWORK_MAX_FACE_SIZE) -> np.ndarray:
    """bool (F,): which of the tiny path's boxes (F, 4) x0, y0, x1, y1 ``method`` aligns with the
    landmark network's own landmarks (the others: the DFF cascade on the super-resolved face):
    "network": all, "sr-cascade": none, "auto": longer side under ``max_face_size`` pixels.
    Raises ValueError for another method."""
    if method not in TINY_METHODS:
        raise ValueError(f"tiny_method must be one of {TINY_METHODS}, got {method!r}")
    if method != "auto":
        return np.full(len(np.asarray(boxes).reshape(-1, 4)), method == "network")
    return _smaller_than(boxes, max_face_size)


def _smaller_than(boxes, size: float) -> np.ndarray:
    """bool (F,): boxes (F, 4) x0, y0, x1, y1 whose longer side is under ``size`` pixels."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) < size


@dataclass
class TinyResult:
    """The tiny path's output for F faces of one image.

    Attributes:
        landmarks: float64 (F, 68, 2) iBUG landmarks in image pixels.
        sr: uint8 (F, 128, 128, 3) BGR super-resolved canonical crops (x4 of the 32-px crop), or
            None for a network without the SR head.
        transforms: float64 (F, 2, 3) affine maps from image pixels to each ``sr`` crop's pixels
            (:func:`dffx.preprocess.crop_transform` of the box at 128 px).
    """

    landmarks: np.ndarray
    sr: np.ndarray | None
    transforms: np.ndarray


class TinyPath:
    """A tiny-face network, run on face boxes of an image.

    Args:
        weights: a tiny-face weights file or checkpoint, or an ONNX file of one
            (:func:`dffx.tiny.onnx_export.export_tiny_onnx`) (default: the shipped file ``shipped``, checked
            against ``dffx/weights/SHA256SUMS``).
        device: torch device (default: the CPU).
        shipped: the shipped network used when ``weights`` is None: the joint network
            (:func:`default_tiny_weights`, default) or the landmark-only one
            (:func:`default_landmark_weights`). On the CPU its ONNX twin next to it (same name,
            ``.onnx``) runs on ONNX Runtime when that is installed: about twice as fast.

    Attributes:
        backend: "torch" or "onnxruntime"; config: the network's settings (``sr``,
        ``landmark_head``, ...); weights: the file read.

    Raises:
        as :func:`load_tiny_net` (and :class:`dffx.tiny.onnx_runtime.OnnxTinyNet`); ValueError also for a
        shipped file that does not match its checksum.
    """

    def __init__(self, weights=None, device=None, shipped=None):
        from ..nn.integrity import check_shipped_file

        self.device = device or "cpu"
        if weights is None:
            weights = Path(shipped if shipped is not None else default_tiny_weights())
            check_shipped_file(weights)
            twin = weights.with_suffix(".onnx")
            if str(self.device) == "cpu" and twin.is_file() and _has_onnxruntime():
                check_shipped_file(twin)
                weights = twin
        self.weights = Path(weights)
        if self.weights.suffix == ".onnx":
            from .onnx_runtime import OnnxTinyNet

            self.net, self.backend = OnnxTinyNet(self.weights), "onnxruntime"
            self.config = dict(self.net.config)
        else:
            self.net, self.config = load_tiny_net(self.weights, self.device)
            self.backend = "torch"

    def run(self, image: np.ndarray, boxes, super_resolve: bool = True) -> TinyResult:
        """Landmarks and super-resolved crops for the faces in ``boxes``.

        Args:
            image: uint8 (H, W, 3) BGR.
            boxes: (F, 4) face boxes x0, y0, x1, y1 in image pixels (landmark-box convention), F >= 1.
            super_resolve: run the SR head too (False: ``sr`` is None, the landmarks cost less).

        Raises:
            ValueError: a bad image or box (:func:`dffx.preprocess.crop_face`).
        """
        from ..preprocess import crop_to_image, crop_transform

        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            raise ValueError("no face boxes")
        crops = np.stack([crop_face(image, box, size=LR_SIZE)[0] for box in boxes])
        lr = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)
        out = self._forward(lr, super_resolve)
        hr_transforms = np.stack([crop_transform(box, HR_SIZE) for box in boxes])  # the 32-px crop's, x4
        points = out["landmarks"].astype(np.float64)
        landmarks = np.stack([crop_to_image(p, M) for p, M in zip(points, hr_transforms)])
        sr = None
        if "sr" in out:
            rgb = np.round(np.clip(out["sr"], 0, 1) * np.float32(255)).astype(np.uint8)
            sr = np.ascontiguousarray(rgb.transpose(0, 2, 3, 1)[..., ::-1])
        return TinyResult(landmarks=landmarks, sr=sr, transforms=hr_transforms)

    def _forward(self, lr: np.ndarray, super_resolve: bool) -> dict:
        """The network on float32 (B, 3, 32, 32) RGB in [0, 1]: dict of float32 NumPy arrays."""
        if self.backend == "onnxruntime":
            return self.net(lr, sr=super_resolve)
        import torch

        with torch.inference_mode():
            out = self.net(torch.from_numpy(lr).to(self.device), sr=super_resolve)
        return {name: value.float().cpu().numpy() for name, value in out.items()}


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None
