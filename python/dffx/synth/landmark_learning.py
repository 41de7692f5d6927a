"""Learning landmark vertices in the annotators' convention from annotated photos (issue 25, item 0).

ICT-FaceKit's 68 Multi-PIE vertices (``FaceModel.landmarks68``) are not where 300-W's
annotators, or AFLW2000-3D's BFM-based labels, put the iBUG points: on frontal photos the
shipped cascade's mean signed error per landmark was 2.3 % of the face box (jaw 4.4 %, brows
too high). A cascade trained on renders labelled at ICT's vertices learns ICT's convention.

:func:`learn_landmark_vertices` picks, for every iBUG point, the face-region vertex whose
projection under each photo's 3DMM fit lies closest to the annotated point, in the mean over
photos (squared error normalised by the annotation's box size), and re-fits the photos with
the new vertices; a few such rounds reach a fixed point. The fit cannot absorb a per-landmark
offset that is the same on every face into its shape, because the shape prior (eq. 8) holds
every face near the mean, while the vertex choice is free per landmark.

The 17 jaw points lie on the face's outline, which moves over the surface as the head turns;
their vertices are learned from near-frontal photos only (``JAW_MAX_YAW_DEG``), where the
outline is a fixed contour of the 3D face.

The learned set ships as ``dffx/model/landmarks_300w.json``
(:func:`dffx.model.annotated_landmarks.annotated_landmarks68`); ``tools/learn_landmarks.py`` reproduces it.
"""

from __future__ import annotations

import numpy as np

from ..geometry.camera import project
from ..model.annotated_landmarks import with_landmarks68

JAW_POINTS = np.arange(17)
JAW_MAX_YAW_DEG = 15.0        # the jaw's vertices are learned where the outline is a fixed contour
CANDIDATE_RADIUS_CM = 3.0     # candidate vertices lie this close to the current one on the mean shape


def _box_size(points: np.ndarray) -> np.ndarray:
    """sqrt(w * h) of each (N, 68, 2) annotation's bounding box, pixels (N,)."""
    span = points.max(axis=1) - points.min(axis=1)
    return np.sqrt(span[:, 0] * span[:, 1])


def landmark_costs(model, annotations: np.ndarray, cameras: np.ndarray, p_id: np.ndarray, p_exp: np.ndarray,
                   candidates: list[np.ndarray], photo_masks: np.ndarray, chunk: int = 64) -> list[np.ndarray]:
    """Mean normalised squared distance of each candidate vertex's projection to each annotated point.

    Args:
        model: :class:`dffx.FaceModel`.
        annotations: (N, 68, 2) annotated points, image pixels.
        cameras: (N, 6) fitted cameras w; p_id (N, m1), p_exp (N, m2): fitted shapes.
        candidates: per iBUG point l, (C_l,) vertex indices to score.
        photo_masks: bool (68, N): the photos that count for each point.

    Returns:
        list of 68 float64 (C_l,) costs, in units of the squared box size (NME^2).
    """
    X = np.asarray(annotations, np.float64)
    norm2 = _box_size(X) ** 2
    totals = [np.zeros(len(c)) for c in candidates]
    for lo in range(0, len(X), chunk):
        hi = min(lo + chunk, len(X))
        screen = project(model.shape(p_id[lo:hi], p_exp[lo:hi]), cameras[lo:hi])[..., :2]
        for l, cand in enumerate(candidates):
            use = photo_masks[l, lo:hi]
            if not use.any():
                continue
            d2 = np.sum((screen[use][:, cand] - X[lo:hi][use, l][:, None]) ** 2, axis=2)
            totals[l] += (d2 / norm2[lo:hi][use, None]).sum(axis=0)
    counts = np.maximum(photo_masks.sum(axis=1), 1)
    return [t / n for t, n in zip(totals, counts)]


def learn_landmark_vertices(model, annotations: np.ndarray, *, rounds: int = 3,
                            radius_cm: float = CANDIDATE_RADIUS_CM, jaw_max_yaw_deg: float = JAW_MAX_YAW_DEG,
                            progress: bool = True) -> tuple[np.ndarray, list[dict]]:
    """Learn the 68 iBUG landmark vertices from annotated photos (module docstring).

    Each round fits every photo (:func:`dffx.synth.fit.fit_photo` with the current vertices,
    contour mode "fixed") and moves each point to its best candidate (:func:`landmark_costs`).

    Args:
        model: :class:`dffx.FaceModel`; its ``landmarks68`` (ICT's) start the search.
        annotations: (N, 68, 2) iBUG points in image pixels (0-based).
        rounds: fit / choose alternations.
        radius_cm: candidate vertices lie within this distance of the start vertex on the mean shape.
        jaw_max_yaw_deg: the jaw points are learned from photos whose fitted |yaw| is below this.

    Returns:
        (int64 (68,) vertex indices, per-round log: mean cost before/after, vertices moved).

    Raises:
        ValueError: annotations not (N, 68, 2) finite, or no near-frontal photo for the jaw.
    """
    from tqdm import tqdm

    from .fit import ContourLines, fit_photo

    X = np.asarray(annotations, np.float64)
    if X.ndim != 3 or X.shape[1:] != (68, 2) or not np.isfinite(X).all() or len(X) == 0:
        raise ValueError(f"annotations must be finite (N, 68, 2) pixels, got shape {X.shape}")
    mean = model.mean.astype(np.float64)
    start = np.asarray(model.landmarks68, np.int64)
    candidates = [np.flatnonzero(np.linalg.norm(mean - mean[v], axis=1) <= radius_cm) for v in start]
    current = start.copy()
    log = []
    for r in range(rounds):
        variant = with_landmarks68(model, current)
        contour = ContourLines(variant, "fixed")
        fits = [fit_photo(variant, x, contour=contour)
                for x in tqdm(X, desc=f"fit round {r + 1}/{rounds}", unit="photo", disable=not progress)]
        cameras = np.stack([f.camera for f in fits])
        masks = np.ones((68, len(X)), bool)
        frontal = np.abs(np.degrees(cameras[:, 2])) < jaw_max_yaw_deg
        if not frontal.any():
            raise ValueError(f"no photo fitted below {jaw_max_yaw_deg} degrees of yaw: cannot learn the jaw")
        masks[JAW_POINTS] = frontal
        costs = landmark_costs(model, X, cameras, np.stack([f.p_id for f in fits]), np.stack([f.p_exp for f in fits]),
                               candidates, masks)
        before = np.array([c[np.flatnonzero(cand == v)[0]] for c, cand, v in zip(costs, candidates, current)])
        chosen = np.array([cand[np.argmin(c)] for c, cand in zip(costs, candidates)])
        after = np.array([c.min() for c in costs])
        log.append({"round": r + 1, "rms_nme_before": float(np.sqrt(before.mean())),
                    "rms_nme_after": float(np.sqrt(after.mean())), "moved": int((chosen != current).sum()),
                    "frontal_photos": int(frontal.sum())})
        current = chosen
    return current, log
