"""Photo-like degradation of the cascade's training renders (issue 25, item 2, for the cascade).

The descent directions are learned from DFF features sampled on renders, then applied to
features of photographs. ``dffx train cascade --augment`` degrades every training crop with the
same families the network trains with (:mod:`dffx.nn.augment`: colour, blur, noise, JPEG,
down-and-up scaling, occluders), so that the regression sees features of degraded faces too.

Each sample keeps one degradation for the whole training: its settings are drawn from a
generator seeded by ``(seed, sample id)``, so every stage of the cascade (and a rerun) sees the
same degraded face, as inference sees the same photo at every stage. The labels do not change:
no family moves the face.
"""

from __future__ import annotations

import numpy as np

from ..nn.config import parse_augment

# keeps these draws apart from the cascade trainer's own box perturbations (which use `seed`)
_SEED_STRIDE = 1_000_003


def face_mask_labels(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Where an occluder may go: 0 inside the landmarks' bounding box, -1 outside.

    Args:
        landmarks: float (68, 2) x, y in crop pixels.
        size: the crop's side in pixels.

    Returns:
        int64 (size, size), the ``tri`` argument of :func:`dffx.nn.augment.augment_image`
        (renders stored for the cascade carry no per-pixel triangle ids).
    """
    lab = np.full((size, size), -1, np.int64)
    x0, y0 = np.clip(np.floor(landmarks.min(axis=0)).astype(int), 0, size - 1)
    x1, y1 = np.clip(np.ceil(landmarks.max(axis=0)).astype(int), 0, size - 1)
    lab[y0:y1 + 1, x0:x1 + 1] = 0
    return lab


def augmented_split(split: dict, families: str, seed: int = 0) -> dict:
    """A cascade training split whose crops come out degraded (``dffx train cascade --augment``).

    Args:
        split: a dict of :func:`dffx.align.predictor.synth_split` (``crops(ids)`` -> uint8
            (n, S, S, 3) BGR, ``landmarks`` float (N, 68, 2) in crop pixels, ...).
        families: "all" or a comma-separated subset of
            :data:`dffx.nn.config.AUGMENT_FAMILIES`; "" returns ``split`` unchanged.
        seed: the degradations' seed (sample ``i`` always gets the same one).

    Returns:
        dict with the same keys; ``crops(ids)`` returns the degraded uint8 BGR crops. An
        occluder cut from another image comes from sample ``(i + 1) % N``.

    Raises:
        ValueError: an unknown family name.
    """
    names = parse_augment(families)
    if not names:
        return split
    n = len(split["landmarks"])
    raw_crops = split["crops"]

    def crops(ids):
        import torch

        from ..nn.augment import augment_image

        ids = np.asarray(ids)
        images = np.array(raw_crops(ids))
        others = raw_crops((ids + 1) % n) if "occlusion" in names else images
        for j, i in enumerate(ids):
            g = torch.Generator().manual_seed(int(seed) * _SEED_STRIDE + int(i))
            x = torch.from_numpy(images[j][:, :, ::-1].copy()).permute(2, 0, 1).float() / 255.0
            other = torch.from_numpy(others[j][:, :, ::-1].copy()).permute(2, 0, 1).float() / 255.0
            tri = torch.from_numpy(face_mask_labels(split["landmarks"][int(i)], images.shape[1]))
            x, _ = augment_image(x, tri, other, names, g)
            images[j] = (x.permute(1, 2, 0).numpy()[:, :, ::-1] * 255.0 + 0.5).astype(np.uint8)
        return images

    out = dict(split)
    out["crops"] = crops
    return out
