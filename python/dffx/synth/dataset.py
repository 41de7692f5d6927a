"""PyTorch ``Dataset`` over a ``dffx synth`` output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import ShardReader, completed_shards, read_manifest, shard_name

SPLITS = ("train", "val", "all")


class SynthDataset:
    """Samples of a synthesized set as dicts of tensors (a ``torch.utils.data.Dataset``).

    The split is by **source photo**: "val" holds the samples rendered from the photos marked
    held out in ``fits.npz`` (``--holdout-fraction`` of ``dffx synth``), so validation faces are
    identities the training split never shows. Only complete shards are listed, so a set can
    be read while ``dffx synth`` is still writing it.

    Item dict:
        image: float32 (3, H, W) RGB in [0, 1];
        triangle_id: int64 (H, W), -1 where no model triangle is seen;
        camera: float32 (6,) w = (s, pitch, yaw, roll, tx, ty), pixels / radians;
        p_id: float32 (m1,); p_exp: float32 (m2,);
        landmarks68: float32 (68, 2) pixels; visible68: bool (68,);
        landmarks160: float32 (160, 2); visible160: bool (160,);
        source: int64 photo index; index: int64 sample index.

    Args:
        root: the folder ``dffx synth --out`` wrote.
        split: "train", "val" or "all".

    Raises:
        FileNotFoundError: not a synth folder; ValueError: unknown split or an empty split.
    """

    def __init__(self, root, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        with np.load(self.root / "fits.npz") as z:
            held_out = z["held_out"]
        self.shards = [ShardReader(self.root / shard_name(k)) for k in sorted(completed_shards(self.root))]
        entries = []
        for s, shard in enumerate(self.shards):
            src = shard.meta["source"]
            keep = np.ones(len(src), bool) if split == "all" else (held_out[src] == (split == "val"))
            entries.extend((s, i) for i in np.flatnonzero(keep))
        if not entries:
            raise ValueError(f"{self.root}: the {split!r} split is empty ({len(self.shards)} complete shards)")
        self.entries = np.asarray(entries, np.int64)

    def __len__(self) -> int:
        return len(self.entries)

    def raw(self, n: int) -> dict:
        """Sample n as NumPy: image uint8 (H, W, 3) BGR, triangle_id int32 and the metadata arrays."""
        if not -len(self) <= n < len(self):
            raise IndexError(f"sample {n} out of range for {len(self)} samples")
        s, i = self.entries[n]
        shard = self.shards[s]
        item = {k: v[i] for k, v in shard.meta.items() if not k.endswith("_offsets")}
        item["image"] = shard.image(i)
        item["triangle_id"] = shard.triangle_id(i)
        return item

    def __getitem__(self, n: int) -> dict:
        import torch

        item = self.raw(n)
        image = np.ascontiguousarray(item.pop("image")[:, :, ::-1].transpose(2, 0, 1))
        out = {"image": torch.from_numpy(image).float().div_(255.0),
               "triangle_id": torch.from_numpy(item.pop("triangle_id").astype(np.int64))}
        for key, value in item.items():
            out[key] = torch.as_tensor(np.asarray(value))
        return out
