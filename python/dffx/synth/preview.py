"""Preview grid of a synthesized set: samples across the yaw range with their landmarks and labels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .dataset import SynthDataset

VISIBLE_COLOUR = (0, 220, 0)   # BGR: filled green dots
HIDDEN_COLOUR = (0, 0, 255)    # BGR: red rings


def draw_landmarks(image: np.ndarray, points: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Copy of a BGR uint8 image with visible points as filled green dots and hidden ones as red rings."""
    out = image.copy()
    for (x, y), vis in zip(np.asarray(points), np.asarray(visible)):
        centre = (int(round(float(x))), int(round(float(y))))
        if vis:
            cv2.circle(out, centre, 2, VISIBLE_COLOUR, -1, cv2.LINE_AA)
        else:
            cv2.circle(out, centre, 2, HIDDEN_COLOUR, 1, cv2.LINE_AA)
    return out


def label_overlay(image: np.ndarray, labels: np.ndarray, n_patches: int, seed: int = 0) -> np.ndarray:
    """The patch label map (H, W) (-1 = none) colour-coded over a darkened image (paper Fig. 5)."""
    palette = np.random.default_rng(seed).integers(40, 256, size=(n_patches, 3)).astype(np.uint8)
    out = (image * 0.35).astype(np.uint8)
    face = labels >= 0
    out[face] = palette[labels[face]]
    return out


def preview_grid(root, out, count: int = 12, columns: int = 4, segmentations=None, split: str = "all") -> Path:
    """Write a grid of ``count`` samples spread evenly over the yaw range of a set.

    Each cell is the image with its 68 landmarks (:func:`draw_landmarks`) and, when a
    segmentation file is given, the label map of segmentation 0 beside it.

    Args:
        root: a ``dffx synth`` output folder.
        out: image path to write (.png or .jpg).
        count, columns: grid size.
        segmentations: optional ``dffx segment`` .npz.
        split: which split to draw from.

    Returns:
        the written path.

    Raises:
        ValueError: count < 1; OSError: the image cannot be written.
    """
    from ..segment import label_map, load_segmentations

    if count < 1 or columns < 1:
        raise ValueError("count and columns must be >= 1")
    data = SynthDataset(root, split)
    entry_yaw = np.array([data.shards[s].meta["camera"][i, 2] for s, i in data.entries])
    picks = [int(np.argmin(np.abs(entry_yaw - y))) for y in np.linspace(entry_yaw.min(), entry_yaw.max(), count)]
    seg = load_segmentations(segmentations) if segmentations else None
    cells = []
    for n in picks:
        item = data.raw(n)
        cell = draw_landmarks(item["image"], item["landmarks68"], item["visible68"])
        if seg is not None:
            labels = label_map(seg.lut[0], item["triangle_id"])
            cell = np.hstack([cell, label_overlay(item["image"], labels, seg.n_patches)])
        cv2.putText(cell, f"yaw {np.degrees(item['camera'][2]):+.0f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        cells.append(cell)
    while len(cells) % columns:
        cells.append(np.zeros_like(cells[0]))
    grid = np.vstack([np.hstack(cells[r:r + columns]) for r in range(0, len(cells), columns)])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), grid):
        raise OSError(f"could not write {out}")
    return out
