"""Alignment confidence: how well the landmark features of a result agree with a face.

The DFF network is trained so that one anatomical point gives one descriptor in every face,
whatever the pose (Sec. III-B). The mean unit descriptor of each of the L landmarks over many
training faces, taken at the true landmarks where they are visible, is therefore a *template*
of what a correctly aligned face looks like in feature space. The score of an alignment is the
mean cosine between the descriptors at its final landmarks (F^(K), sampled as in eq. 4-5) and
that template, over its visible landmarks: near the training faces' own value for a good fit,
lower for a misplaced fit or a box without a face.

Nothing here is in the paper, which has no confidence output; it reuses its F^(k).
"""

from __future__ import annotations

import numpy as np

#: Score threshold for a cascade file without a calibrated one (``Cascade.min_score``): the value
#: chosen for the run-3 network by hand (docs/experiments/2026-12-02-refinement-and-confidence.md).
UNCALIBRATED_MIN_SCORE = 0.6


def landmark_template(extractor_features, crops_of, points: np.ndarray, visible: np.ndarray,
                      chunk: int = 32) -> np.ndarray:
    """Mean unit landmark descriptor at the true landmarks of training faces.

    Args:
        extractor_features: :class:`DFFLandmarkFeatures` or :class:`SIFTLandmarkFeatures`.
        crops_of: ``crops_of(ids) -> uint8 (n, 224, 224, 3)`` BGR canonical crops.
        points: float (N, 160, 2) true landmark positions in crop pixels (the 160 of the
            cascade; SIFT uses the first 68, which are the iBUG 68).
        visible: bool (N, 160) their depth-buffer visibility.
        chunk: crops prepared at once.

    Returns:
        float32 (L, C) unit rows, L = ``extractor_features.n_landmarks`` and C the descriptor
        length; a landmark never visible gets a zero row.

    Raises:
        ValueError: no faces, or points/visible of mismatched shapes.
    """
    points = np.asarray(points, np.float32)
    visible = np.asarray(visible, bool)
    if len(points) == 0 or points.ndim != 3 or points.shape[2] != 2 or visible.shape != points.shape[:2]:
        raise ValueError(f"need points (N>0, L, 2) and visible (N, L), got {points.shape} and {visible.shape}")
    L = extractor_features.n_landmarks
    total = np.zeros((L, extractor_features.dim // L), np.float64)
    for lo in range(0, len(points), chunk):
        ids = np.arange(lo, min(lo + chunk, len(points)))
        F = extractor_features.sample(extractor_features.prepare(crops_of(ids)), points[ids], visible[ids])
        total += F.reshape(len(ids), L, -1).sum(0)  # hidden landmarks are zero rows already
    norm = np.linalg.norm(total, axis=1, keepdims=True)
    return (total / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def alignment_score(F: np.ndarray, visible: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Mean cosine between landmark descriptors and the template, over visible landmarks.

    Args:
        F: float (B, L * C) landmark features as the cascade samples them (unit descriptor per
            visible landmark, zeros for hidden ones).
        visible: bool (B, >= L) landmark visibility (the first L columns are used).
        template: float (L, C) from :func:`landmark_template`.

    Returns:
        float64 (B,) scores in [-1, 1]; -1 for a face with no visible landmark (nothing agrees).

    Raises:
        ValueError: shapes that do not fit together.
    """
    template = np.asarray(template, np.float64)
    L = len(template)
    F = np.asarray(F, np.float64)
    visible = np.asarray(visible, bool)
    if F.ndim != 2 or F.shape[1] != template.size or visible.ndim != 2 or visible.shape[0] != len(F) \
            or visible.shape[1] < L:
        raise ValueError(f"F (B, {template.size}) and visible (B, >={L}) expected for a {template.shape} template, "
                         f"got {F.shape} and {visible.shape}")
    cos = np.einsum("blc,lc->bl", F.reshape(len(F), L, -1), template)
    vis = visible[:, :L]
    count = vis.sum(1)
    return np.where(count > 0, (cos * vis).sum(1) / np.maximum(count, 1), -1.0)
