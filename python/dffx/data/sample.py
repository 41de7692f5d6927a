"""One annotated face of an evaluation set, as every loader returns it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class FaceSample:
    """A ground-truth face.

    Attributes:
        name: identifier unique in its dataset (file stem, e.g. ``image00050``).
        image_path: the image file the predictor reads (for samples without a file of their own,
            such as the renders of a synthesized set, the folder they come from; see ``read``).
        landmarks: float64 (K, 2) ground-truth points in GROUND-TRUTH pixel coordinates
            (0-based, x right, y down); NaN rows mark points that are not annotated.
            K = 68 for AFLW2000-3D and 300W, 21 for AFLW.
        face_box: float64 (4,) ``(x0, y0, x1, y1)`` in ground-truth coordinates: the box every
            method is initialised from under the protocol's ground-truth rule (see each loader).
        yaw_deg: signed or absolute yaw in degrees used for binning, or None if unknown.
        yaw_source: where ``yaw_deg`` came from (e.g. "yaw.csv", "Pose_Para", "AFLW_GT_crop_yaws.npy").
        crop_box: None when ``image_path`` is in ground-truth coordinates. Otherwise
            ``(x0, y0, x1, y1)``: the image is this box of the original photo resized to the
            file's size, and a point (u, v) in the image maps to ground truth as
            ``x = x0 + u * (x1 - x0) / width``, ``y = y0 + v * (y1 - y0) / height`` (3DDFA's rule).
        extra: loader-specific arrays (e.g. ``pt3d_68``, ``pose_para``, ``subset``). Two keys
            have a meaning shared by every loader that knows them: ``pose_deg``, float64 (3,) the
            true head pose (pitch, yaw, roll) in degrees in dffx's camera convention
            (``docs/design.md``), and ``visible68``, bool (68,) the true landmark visibility.
        read: None when the image is the file at ``image_path``; otherwise a function returning
            it (uint8 (H, W, 3) BGR), for images that live inside another file.
    """

    name: str
    image_path: Path
    landmarks: np.ndarray
    face_box: np.ndarray
    yaw_deg: float | None = None
    yaw_source: str | None = None
    crop_box: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    read: Callable[[], np.ndarray] | None = None

    def load_image(self):
        """The image as uint8 (H, W, 3) BGR; ValueError if ``image_path`` cannot be decoded."""
        if self.read is not None:
            return self.read()
        import cv2

        image = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image '{self.image_path}'")
        return image

    def image_to_ground_truth(self, points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """Map (..., 2) points from image pixels to ground-truth pixels (identity without crop_box).

        Args:
            points: (..., 2) pixels in the image at ``image_path``.
            image_size: (height, width) of that image.
        """
        points = np.asarray(points, dtype=np.float64)
        if self.crop_box is None:
            return points
        h, w = image_size
        x0, y0, x1, y1 = self.crop_box
        return np.stack([x0 + points[..., 0] * (x1 - x0) / w, y0 + points[..., 1] * (y1 - y0) / h], axis=-1)

    def ground_truth_to_image(self, points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """Inverse of :meth:`image_to_ground_truth`."""
        points = np.asarray(points, dtype=np.float64)
        if self.crop_box is None:
            return points
        h, w = image_size
        x0, y0, x1, y1 = self.crop_box
        return np.stack([(points[..., 0] - x0) * w / (x1 - x0), (points[..., 1] - y0) * h / (y1 - y0)], axis=-1)


class DatasetFormatError(ValueError):
    """A dataset folder is malformed (missing files, wrong array shapes); the message names the file."""


@dataclass
class LoadReport:
    """What a loader read and what it skipped (each skipped entry with its reason)."""

    dataset: str
    root: Path
    loaded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
