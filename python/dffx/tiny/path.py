"""The tiny-face path at inference: a face box -> its 32-px crop -> :class:`TinyFaceNet` -> 68
landmarks and a super-resolved crop in the image's pixels (issue 26, items 3-4).

:class:`dffx.FaceAligner` sends a face here when its box is small (``tiny="auto"``: longer side
under :data:`TINY_MAX_FACE_SIZE` pixels) or always (``tiny="always"``). By default
(``tiny_method="sr-cascade"``, :mod:`dffx.align.tiny_route`) the DFF cascade then aligns the
super-resolved face; with ``"network"`` the network's own landmarks are the result and the 3D
outputs (camera, shape, mesh, visibility) come from fitting the 3DMM to them
(:func:`fit_landmarks`, eq. 6-8 as the synthesis fits photos).

Everything is in image pixels with pixel centres at integers (x right, y down).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..preprocess import crop_face
from .degrade import HR_SIZE, LR_SIZE

TINY_MODES = ("auto", "always", "never")
TINY_METHODS = ("sr-cascade", "network")  # AlignOptions.tiny_method
#: ``tiny="auto"`` sends a face whose box's longer side is below this many pixels through the
#: tiny path: where the DFF cascade aligns the super-resolved face better than the upsampled one
#: on the AFLW dev split (better at 16 px, worse at 24; near the 21.3-px face the 32-px crop holds
#: at its own resolution). Measurements: docs/tiny.md.
TINY_MAX_FACE_SIZE = 20.0
TINY_WEIGHTS_FORMAT = "dffx.tiny-weights"
TINY_CHECKPOINT_FORMAT = "dffx.tiny-checkpoint"


def default_tiny_weights() -> Path:
    """The shipped tiny-face network, ``dffx/weights/tiny_joint.pt``."""
    return Path(__file__).resolve().parent.parent / "weights" / "tiny_joint.pt"


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
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if mode != "auto":
        return np.full(len(b), mode == "always")
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) < max_face_size


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
    """The tiny-face network, run on face boxes of an image.

    Args:
        weights: a tiny-face weights file or checkpoint (default: the shipped
            ``dffx/weights/tiny_joint.pt``, checked against ``dffx/weights/SHA256SUMS``).
        device: torch device (default: the CPU).

    Raises:
        as :func:`load_tiny_net`.
    """

    def __init__(self, weights=None, device=None):
        if weights is None:
            from ..nn.integrity import check_shipped_file

            weights = default_tiny_weights()
            check_shipped_file(weights)
        self.device = device or "cpu"
        self.net, self.config = load_tiny_net(weights, self.device)
        self.weights = Path(weights)

    def run(self, image: np.ndarray, boxes, super_resolve: bool = True) -> TinyResult:
        """Landmarks and super-resolved crops for the faces in ``boxes``.

        Args:
            image: uint8 (H, W, 3) BGR.
            boxes: (F, 4) face boxes x0, y0, x1, y1 in image pixels (landmark-box convention), F >= 1.
            super_resolve: run the SR head too (False: ``sr`` is None, the landmarks cost less).

        Raises:
            ValueError: a bad image or box (:func:`dffx.preprocess.crop_face`).
        """
        import torch

        from ..preprocess import crop_to_image, crop_transform
        from .train import to_tensor

        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            raise ValueError("no face boxes")
        crops = [crop_face(image, box, size=LR_SIZE)[0] for box in boxes]
        with torch.inference_mode():
            out = self.net(to_tensor(np.stack(crops)).to(self.device), sr=super_resolve)
        hr_transforms = np.stack([crop_transform(box, HR_SIZE) for box in boxes])  # the 32-px crop's, x4
        points = out["landmarks"].float().cpu().numpy().astype(np.float64)
        landmarks = np.stack([crop_to_image(p, M) for p, M in zip(points, hr_transforms)])
        sr = None
        if "sr" in out:
            rgb = out["sr"].clamp(0, 1).mul(255).round().byte().cpu().numpy()
            sr = np.ascontiguousarray(rgb.transpose(0, 2, 3, 1)[..., ::-1])
        return TinyResult(landmarks=landmarks, sr=sr, transforms=hr_transforms)


def fit_landmarks(model, landmarks: np.ndarray, boxes: np.ndarray, contour=None) -> dict:
    """The 3DMM and weak-perspective camera fitted to each face's 68 landmarks (eq. 6-8, as
    :func:`dffx.synth.fit.fit_photo` fits annotated photos), with the landmarks' depth-buffer
    visibility under that fit.

    Args:
        model: :class:`dffx.FaceModel`.
        landmarks: float (F, 68, 2) image pixels.
        boxes: float (F, 4) the face boxes (the visibility is tested in each box's 224-px crop).
        contour: a :class:`dffx.synth.fit.ContourLines` of ``model`` to reuse.

    Returns:
        dict: ``camera`` float64 (F, 6) (s, pitch, yaw, roll in radians, tx, ty; image pixels),
        ``params`` float32 (F, M) p_id then p_exp, ``visible`` bool (F, 68).

    Raises:
        ValueError: landmarks not finite (F, 68, 2).
    """
    from ..geometry.camera import project
    from ..ops.raster import mesh_landmark_visibility
    from ..preprocess import CROP_SIZE, crop_transform
    from ..synth.fit import ContourLines, fit_photo

    contour = contour or ContourLines(model)
    cameras, params, visible = [], [], []
    for points, box in zip(np.asarray(landmarks, np.float64), np.asarray(boxes, np.float64)):
        fit = fit_photo(model, points, contour=contour)
        M = crop_transform(box)
        # the mesh in the box's canonical crop, where the cascade tests visibility too
        cam = fit.camera.copy()
        cam[0] *= M[0, 0]
        cam[4:6] = M[:, :2] @ cam[4:6] + M[:, 2]
        screen = project(model.shape(fit.p_id, fit.p_exp), cam).astype(np.float32)
        visible.append(mesh_landmark_visibility(screen, model.triangles, fit.landmark_vertices, CROP_SIZE))
        cameras.append(fit.camera)
        params.append(np.concatenate([fit.p_id, fit.p_exp]).astype(np.float32))
    return {"camera": np.stack(cameras), "params": np.stack(params), "visible": np.stack(visible).astype(bool)}
