"""Calibrating the alignment-score threshold under which detected faces are dropped.

The alignment score (:func:`dffx.align.confidence.alignment_score`) is a mean cosine whose scale
depends on the network and the template: the run-3 network scored faces 0.90-0.95 and boxes
without a face 0.06-0.68 (5th-95th percentile), the run-5 network 0.93-0.97 and 0.20-0.75.
A fixed threshold therefore cannot serve every cascade file; each file carries its own,
``info["min_score"]``, measured on annotated photos:

* **faces**: each annotated face from a box a tenth of the face off-centre and 15% larger, the
  kind of box a detector of another convention draws (:func:`detector_like_box`);
* **backgrounds**: a random 50-200 px square that does not touch the face box, in the same photo
  (:func:`background_box`);

both aligned as :class:`dffx.FaceAligner` aligns a detected face (its re-crop passes included).
The threshold is halfway between the 95th percentile of the background scores and the 1st
percentile of the face scores (:func:`threshold_between`). Use training photos
(``../shared/data/300w-train``), never evaluation data.

Nothing here is in the paper, which has no confidence output.
"""

from __future__ import annotations

import numpy as np

BACKGROUND_SIDES = (50.0, 200.0)   # px, side of a background box
FACE_SHIFT = 0.1                   # of the face side: how far a detector-like box is off-centre
FACE_SCALE = 1.15                  # side of a detector-like box / the annotated box's
BACKGROUND_PERCENTILE = 95.0
FACE_PERCENTILE = 1.0


def detector_like_box(face_box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A box ``FACE_SHIFT`` of the face side off the centre of ``face_box`` (in a random
    direction, the larger coordinate exactly that far) and ``FACE_SCALE`` times its side.

    Args:
        face_box: float (4,) x0, y0, x1, y1 in image pixels.
        rng: the random source.

    Returns:
        float64 (4,) x0, y0, x1, y1.
    """
    face_box = np.asarray(face_box, np.float64)
    side = face_box[2:] - face_box[:2]
    direction = rng.uniform(-1.0, 1.0, 2)
    direction /= max(np.abs(direction).max(), 1e-12)
    centre = (face_box[:2] + face_box[2:]) / 2 + FACE_SHIFT * direction * side
    return np.r_[centre - FACE_SCALE / 2 * side, centre + FACE_SCALE / 2 * side]


def background_box(image_shape: tuple, face_box: np.ndarray, rng: np.random.Generator,
                   tries: int = 200) -> np.ndarray | None:
    """A random square of side ``BACKGROUND_SIDES`` inside the image that does not touch ``face_box``.

    Args:
        image_shape: (H, W, ...) of the photo.
        face_box: float (4,) x0, y0, x1, y1 of its annotated face, image pixels.
        rng: the random source.
        tries: draws before giving up.

    Returns:
        float64 (4,) x0, y0, x1, y1, or None when no draw fitted (a photo filled by its face).
    """
    H, W = image_shape[:2]
    x0f, y0f, x1f, y1f = np.asarray(face_box, np.float64)
    for _ in range(tries):
        side = rng.uniform(*BACKGROUND_SIDES)
        if side >= min(H, W):
            continue
        x0, y0 = rng.uniform(0, W - side), rng.uniform(0, H - side)
        if x0 + side < x0f or x0 > x1f or y0 + side < y0f or y0 > y1f:
            return np.array([x0, y0, x0 + side, y0 + side])
    return None


def threshold_between(face_scores, background_scores) -> float:
    """The score threshold halfway between the ``BACKGROUND_PERCENTILE`` of the background
    scores and the ``FACE_PERCENTILE`` of the face scores, rounded to 0.01.

    Args:
        face_scores, background_scores: float arrays (N,) and (M,), N, M >= 1, finite.

    Returns:
        float threshold.

    Raises:
        ValueError: an empty or non-finite array.
    """
    faces = np.asarray(face_scores, np.float64).ravel()
    backgrounds = np.asarray(background_scores, np.float64).ravel()
    for name, scores in (("face", faces), ("background", backgrounds)):
        if len(scores) == 0 or not np.all(np.isfinite(scores)):
            raise ValueError(f"need at least one finite {name} score, got {scores[:5]}")
    middle = (np.percentile(backgrounds, BACKGROUND_PERCENTILE) + np.percentile(faces, FACE_PERCENTILE)) / 2
    return float(np.round(middle, 2))


def calibrate_min_score(aligner, samples, seed: int = 0) -> dict:
    """Align a detector-like box and a background box in every photo of ``samples`` and choose
    the threshold (module docstring).

    Args:
        aligner: :class:`dffx.FaceAligner` whose cascade has a template; its re-crop settings
            are used, its ``min_score`` is not (given boxes are never dropped).
        samples: :class:`dffx.data.FaceSample` list of annotated photos (``face_box`` in the
            image's own pixels, e.g. from :func:`dffx.data.load_300w`).
        seed: seed of the box draws.

    Returns:
        dict: ``min_score``; ``faces`` / ``backgrounds``: how many were scored;
        ``face_p1`` / ``background_p95``: the percentiles the threshold lies between;
        ``faces_kept`` / ``backgrounds_kept``: the fractions at or above it.

    Raises:
        ValueError: the cascade has no template, or no sample gave both kinds of box.
    """
    if aligner.cascade.template is None:
        raise ValueError("the cascade file has no confidence template: run `dffx train template` first")
    rng = np.random.default_rng(seed)
    faces, backgrounds = [], []
    for sample in samples:
        image = sample.load_image()
        boxes = [detector_like_box(sample.face_box, rng)]
        background = background_box(image.shape, sample.face_box, rng)
        if background is not None:
            boxes.append(background)
        scores = [face.score for face in aligner.align(image, np.stack(boxes))]
        faces.append(scores[0])
        backgrounds.extend(scores[1:])
    if not faces or not backgrounds:
        raise ValueError("no photo gave both a face and a background box")
    threshold = threshold_between(faces, backgrounds)
    faces, backgrounds = np.asarray(faces), np.asarray(backgrounds)
    return {"min_score": threshold, "faces": int(len(faces)), "backgrounds": int(len(backgrounds)),
            "face_p1": float(np.percentile(faces, FACE_PERCENTILE)),
            "background_p95": float(np.percentile(backgrounds, BACKGROUND_PERCENTILE)),
            "faces_kept": float(np.mean(faces >= threshold)),
            "backgrounds_kept": float(np.mean(backgrounds >= threshold))}
