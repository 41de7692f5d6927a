"""Landmark descriptors for the cascade: DFF (the paper's F^(k)) and the SIFT baseline.

Both work on canonical 224x224 face crops (:mod:`dffx.preprocess`) and return, per face, one
vector with a unit descriptor per visible landmark and zeros for hidden ones (Sec. III-C2).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..ops.sampling import sample_landmark_features

SIFT_KEYPOINT_SIZE = 24.0   # px in the 224 crop: about a quarter of an eye-to-eye distance
SIFT_LANDMARKS = 68         # SIFT is sampled at the 68 landmarks (128-D each); DFF at all 160


class DFFLandmarkFeatures:
    """DFF sampled at the 160 landmarks: F in R^(160*32) = R^5120 (eq. 4-5).

    Args:
        extractor: a :class:`dffx.nn.DFFExtractor` or :class:`dffx.nn.onnx_runtime.OnnxDFFExtractor`.
    """

    name = "dff"
    n_landmarks = 160

    def __init__(self, extractor):
        self.extractor = extractor

    @property
    def dim(self) -> int:
        return self.n_landmarks * 32

    def prepare(self, crops: np.ndarray):
        """DFF maps of uint8 BGR crops (B, 224, 224, 3) -> float32 (B, 32, 224, 224): a torch
        tensor on the extractor's device (on a GPU the maps stay there and only F (B, 5120) comes
        back), or NumPy from the ONNX Runtime extractor. The network's output is kept as it is
        (channels-last, read-only; ``extract(copy=False)``): :meth:`sample` reads it in place."""
        maps = [self.extractor.extract(crops[i:i + 16], copy=False) for i in range(0, len(crops), 16)]
        if len(maps) == 1:
            return maps[0]
        if isinstance(maps[0], np.ndarray):
            return np.concatenate(maps)
        import torch

        return torch.cat(maps)

    def sample(self, prepared, points: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """F (B, 5120) float32 NumPy from maps (B, 32, H, W) (torch on any device, or NumPy),
        points (B, 160, 2) pixels, visible (B, 160) bool. Runs the fused C++ or CUDA kernel."""
        if isinstance(prepared, np.ndarray):
            return sample_landmark_features(prepared, np.asarray(points, np.float32), np.asarray(visible, bool))
        import torch

        F = sample_landmark_features(prepared, torch.as_tensor(np.asarray(points, np.float32)),
                                     torch.as_tensor(np.asarray(visible, bool)))
        return F.cpu().numpy()


class SIFTLandmarkFeatures:
    """SIFT descriptors (OpenCV) at the 68 landmarks, each scaled to unit length: R^(68*128).

    The paper's "Ours (SIFT)" row: the same cascade with SIFT in place of DFF. Keypoints have
    a fixed size (``SIFT_KEYPOINT_SIZE``) and orientation 0 (the crop is upright).
    """

    name = "sift"
    n_landmarks = SIFT_LANDMARKS

    def __init__(self):
        self.sift = cv2.SIFT_create()

    @property
    def dim(self) -> int:
        return self.n_landmarks * 128

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """Grey crops (B, H, W) uint8."""
        return np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2GRAY) for c in crops])

    def sample(self, prepared: np.ndarray, points: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """F (B, 68*128) float32; points (B, >=68, 2), visible (B, >=68) (the first 68 are used)."""
        B = len(prepared)
        out = np.zeros((B, self.n_landmarks, 128), np.float32)
        for b in range(B):
            kps = [cv2.KeyPoint(float(x), float(y), SIFT_KEYPOINT_SIZE, 0.0)
                   for x, y in points[b, :self.n_landmarks]]
            _, desc = self.sift.compute(prepared[b], kps)
            if desc is None or len(desc) != self.n_landmarks:  # OpenCV drops keypoints far outside
                desc = _compute_each(self.sift, prepared[b], kps)
            desc = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
            out[b] = desc * np.asarray(visible[b, :self.n_landmarks], np.float32)[:, None]
        return out.reshape(B, -1)


def _compute_each(sift, grey, keypoints) -> np.ndarray:
    desc = np.zeros((len(keypoints), 128), np.float32)
    for i, kp in enumerate(keypoints):
        _, d = sift.compute(grey, [kp])
        if d is not None and len(d):
            desc[i] = d[0]
    return desc
