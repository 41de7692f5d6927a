"""Box arithmetic shared by the detectors: overlap and greedy non-maximum suppression.

Boxes are ``x0, y0, x1, y1`` in image pixels (extra columns, such as a score, are ignored).
"""

from __future__ import annotations

import numpy as np


def box_overlap(a: np.ndarray, b: np.ndarray, by_min: bool = False) -> np.ndarray:
    """Overlap of boxes a (K, 4+) with one box b (4+,) -> (K,).

    Intersection over union, or with ``by_min`` intersection over the smaller of the two areas
    (MTCNN's last stage uses it to drop a box nested inside a larger one).
    """
    a = np.atleast_2d(a)[:, :4]
    return _overlap(a[:, 0], a[:, 1], a[:, 2], a[:, 3], b[0], b[1], b[2], b[3], by_min)


def _overlap(ax0, ay0, ax1, ay1, bx0, by0, bx1, by1, by_min: bool) -> np.ndarray:
    """The overlap formula on broadcastable corner arrays; every caller uses these same float
    operations, so a box pair gets the same overlap bit for bit whichever way it is computed."""
    ix = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    iy = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = ix * iy
    area_a, area_b = (ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0)
    denom = np.minimum(area_a, area_b) if by_min else area_a + area_b - inter
    return inter / np.maximum(denom, 1e-12)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes a (K, 4+) and one box b (4+,), x0 y0 x1 y1 -> (K,)."""
    return box_overlap(a, b)


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of box a[i] with box b[i]: (K, 4+) each -> (K,)."""
    b = np.atleast_2d(b)
    if len(b) != len(np.atleast_2d(a)):
        raise ValueError(f"paired_iou needs as many boxes in b as in a, got {len(b)} and {len(np.atleast_2d(a))}")
    return box_overlap(a, b.T)  # b.T[2] is a (K,) column: box_overlap's arithmetic pairs row i with row i


def overlap_groups(boxes: np.ndarray, scores: np.ndarray, threshold: float,
                   by_min: bool = False) -> list[list[int]]:
    """Greedy non-maximum suppression that also reports what each kept box suppressed.

    Args:
        boxes: (K, 4+) x0, y0, x1, y1.
        scores: (K,), may be negative.
        threshold: a box joins a kept box's group when their overlap exceeds this.
        by_min: overlap measure, see :func:`box_overlap`.

    Returns:
        one index list per kept box, best kept box first; each list is best score first and
        starts with the kept box.
    """
    return [[int(j) for j in members] for members in _groups(boxes, scores, threshold, by_min)]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best score first (int64 (K',));
    arguments as :func:`overlap_groups`."""
    return np.asarray([members[0] for members in _groups(boxes, scores, threshold, by_min)], dtype=np.int64)


_ROWS_PER_BLOCK = 64  # kept-box candidates whose overlaps _groups computes in one go


def _groups(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool):
    """Yield each kept box's group as an index array, kept box first (see :func:`overlap_groups`).

    MTCNN's stages call it on up to ~1,600 P-Net candidates per scale. Boxes are ranked by score
    once; the overlaps of the next 64 ranks with every later rank are computed as one block (an
    earlier rank is never free again), so the greedy loop does a few array operations per kept
    box. The overlaps are those of :func:`box_overlap`, bit for bit.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranked = np.asarray(boxes)[order, :4]
    corners = ranked.T  # (4, K)
    free = np.ones(len(order), bool)  # by rank
    start, block = 0, np.zeros((0, 0), bool)  # overlaps > threshold of ranks start.. with start..
    for rank in range(len(order)):
        if not free[rank]:
            continue
        if rank >= start + len(block):
            start = rank
            rows = corners[:, rank:rank + _ROWS_PER_BLOCK, None]
            cols = corners[:, None, rank:]
            block = _overlap(*cols, *rows, by_min) > threshold
        members = np.flatnonzero(block[rank - start] & free[start:]) + start
        members = members[members != rank]
        free[members] = False
        free[rank] = False
        yield order[np.concatenate(([rank], members))]


def overlap_groups_reference(boxes: np.ndarray, scores: np.ndarray, threshold: float,
                             by_min: bool = False) -> list[list[int]]:
    """Reference twin of :func:`overlap_groups`: the plain greedy loop, one :func:`box_overlap`
    call per kept box against the boxes still free (the tests and benchmarks compare the two)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    free = np.ones(len(order), bool)
    groups = []
    for i in order:
        if not free[i]:
            continue
        candidates = order[free[order]]  # still free, best first; i is the first of them
        members = candidates[box_overlap(boxes[candidates], boxes[i], by_min) > threshold]
        members = np.r_[i, members[members != i]]
        free[members] = False
        groups.append([int(j) for j in members])
    return groups
