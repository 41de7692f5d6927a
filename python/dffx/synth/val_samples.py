"""Held-out renders of a ``dffx synth`` set as evaluation samples (``dffx eval synth``).

A synthesized set knows what no photo set does: the exact 68 landmarks of every render, their
visibility from the depth buffer, and the head pose the render was made with. Its val split
holds renders of photos no training step saw (``SynthDataset``), so it measures landmarks and
head pose at every yaw up to 90 degrees on faces whose truth is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.ibug import landmark_box
from ..data.sample import FaceSample, LoadReport

# Grey border added around each 224 x 224 render. The renders fill their crop, so a face box
# from a re-crop pass or a detector would run off the image without it; docs/alignment.md's
# held-out tables use this border.
PAD = 64
PAD_GREY = 128


def load_synth_val(root, limit: int | None = None, split: str = "val") -> tuple[list[FaceSample], LoadReport]:
    """Load one split of a synthesized set, each render padded by ``PAD`` grey pixels.

    Samples are in the set's order (shard by shard). Each :class:`FaceSample` has:

    - ``name``: ``synth<index>`` (the sample's index in the set); ``image_path``: the set's
      folder; ``read``: decodes the render from its shard and pads it (uint8 (224 + 2 PAD,
      224 + 2 PAD, 3) BGR);
    - ``landmarks``: float64 (68, 2), the render's true landmarks in the padded image's pixels;
      ``face_box``: their bounding box;
    - ``yaw_deg``: the render camera's signed yaw in degrees (``yaw_source`` = "render camera");
    - ``extra``: ``pose_deg`` float64 (3,) pitch, yaw, roll of the render camera in degrees
      (dffx's convention), ``visible68`` bool (68,) the depth-buffer visibility stored with the
      render, ``source`` the index of the photo it was rendered from.

    Args:
        root: a folder written by ``dffx synth``.
        limit: stop after the first ``limit`` samples; None loads all.
        split: "val" (renders of held-out photos, the default), "train" or "all".

    Returns:
        ``(samples, report)``; the report's ``skipped`` is empty (every stored sample is usable).

    Raises:
        FileNotFoundError: ``root`` is not a synthesized set; ValueError: an empty split, an
        unknown split or a bad ``limit``.
    """
    from .dataset import SynthDataset

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    data = SynthDataset(root, split)
    count = len(data) if limit is None else min(limit, len(data))
    report = LoadReport(dataset=f"synthesized ({split} split)", root=Path(root))
    samples = []
    for n in range(count):
        shard_id, i = data.entries[n]
        meta = data.shards[shard_id].meta
        landmarks = np.asarray(meta["landmarks68"][i], np.float64) + PAD
        pose_deg = np.degrees(np.asarray(meta["camera"][i], np.float64)[1:4])
        samples.append(FaceSample(
            name=f"synth{int(meta['index'][i])}",
            image_path=Path(root),
            landmarks=landmarks,
            face_box=landmark_box(landmarks),
            yaw_deg=float(pose_deg[1]),
            yaw_source="render camera",
            extra={"pose_deg": pose_deg, "visible68": np.asarray(meta["visible68"][i], bool),
                   "source": int(meta["source"][i])},
            read=_padded_render(data, n),
        ))
    report.loaded = len(samples)
    return samples, report


def _padded_render(data, n: int):
    def read() -> np.ndarray:
        image = data.raw(n)["image"]
        return np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)), constant_values=PAD_GREY)
    return read

