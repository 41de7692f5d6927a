"""Landmark vertex sets: the 68 iBUG points and the 160-point dense set of paper Fig. 7."""

from __future__ import annotations

import numpy as np


def dense_landmarks(vertices: np.ndarray, sparse: np.ndarray, candidates: np.ndarray, count: int = 160) -> np.ndarray:
    """Extend the sparse landmarks to ``count`` vertices covering the face evenly.

    Farthest-point sampling (Euclidean, on the mean shape) over ``candidates`` seeded with
    the sparse set, so the result starts with ``sparse`` in order and each added vertex is
    the candidate farthest from every vertex chosen so far. Deterministic.

    Args:
        vertices: (N, 3) mean-shape positions.
        sparse: (68,) vertex indices (kept first, in order).
        candidates: (K,) vertex indices to sample from (the narrow face area).
        count: total number of landmarks, >= len(sparse).

    Returns:
        int64 (count,) vertex indices, no repeats.

    Raises:
        ValueError: count smaller than the sparse set or larger than what the candidates allow.
    """
    sparse = np.asarray(sparse, dtype=np.int64)
    candidates = np.setdiff1d(np.asarray(candidates, dtype=np.int64), sparse)
    extra = count - len(sparse)
    if extra < 0 or extra > len(candidates):
        raise ValueError(f"cannot build {count} landmarks from {len(sparse)} sparse + {len(candidates)} candidates")
    pts = vertices[candidates].astype(np.float64)
    dist = np.min(np.linalg.norm(pts[:, None, :] - vertices[sparse][None].astype(np.float64), axis=2), axis=1)
    chosen = []
    for _ in range(extra):
        k = int(np.argmax(dist))
        chosen.append(candidates[k])
        dist = np.minimum(dist, np.linalg.norm(pts - pts[k], axis=1))
    return np.concatenate([sparse, np.asarray(chosen, dtype=np.int64)])
