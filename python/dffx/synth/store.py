"""On-disk layout of a synthesized set: a manifest, the photo fits, and shards of samples.

::

    OUT/manifest.json         config, photo list (relative to --photos), shard size, format tag
    OUT/fits.npz              per photo: camera, p_id, p_exp, fit errors, held-out flag
    OUT/shard_00000/          one folder per shard of ``shard_size`` consecutive samples
        images.bin            JPEG bytes of every sample, concatenated
        triangles.bin         16-bit PNG bytes of (triangle_id + 1), concatenated
        meta.npz              offsets into both .bin files + the per-sample arrays

A shard is written into ``shard_XXXXX.tmp/`` and renamed when complete, so an interrupted
run leaves no half shard and a rerun skips finished ones. Reading one sample is two seeks
(no whole-shard decode), which keeps a shuffled DataLoader fast.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from .render import SynthSample

FORMAT_TAG = "dffx-synth-v1"
META_KEYS = ("camera", "p_id", "p_exp", "landmarks68", "visible68", "landmarks160", "visible160", "source", "index")


def shard_name(k: int) -> str:
    """Folder name of shard k."""
    return f"shard_{k:05d}"


def _encode(samples: list[SynthSample], jpeg_quality: list[int]) -> tuple[bytes, np.ndarray, bytes, np.ndarray]:
    images, tris = [], []
    for sample, quality in zip(samples, jpeg_quality):
        ok, jpg = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        ok2, png = cv2.imencode(".png", (sample.triangle_id + 1).astype(np.uint16), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not (ok and ok2):
            raise RuntimeError("OpenCV could not encode a sample")
        images.append(jpg.tobytes())
        tris.append(png.tobytes())
    offsets = lambda parts: np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)  # noqa: E731
    return b"".join(images), offsets(images), b"".join(tris), offsets(tris)


def write_shard(root: Path, k: int, samples: list[SynthSample], indices: np.ndarray, jpeg_quality: list[int]) -> Path:
    """Write shard k atomically (tmp folder, then rename); returns its folder."""
    final = root / shard_name(k)
    tmp = root / (shard_name(k) + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    img_bytes, img_off, tri_bytes, tri_off = _encode(samples, jpeg_quality)
    (tmp / "images.bin").write_bytes(img_bytes)
    (tmp / "triangles.bin").write_bytes(tri_bytes)
    meta = {key: np.stack([getattr(s, key) for s in samples]) for key in META_KEYS if key not in ("source", "index")}
    np.savez(tmp / "meta.npz", image_offsets=img_off, triangle_offsets=tri_off,
             source=np.array([s.source for s in samples], np.int32), index=np.asarray(indices, np.int64),
             **{k_: (v.astype(np.float32) if v.dtype == np.float64 else v) for k_, v in meta.items()})
    os.replace(tmp, final)
    return final


def completed_shards(root: Path) -> set[int]:
    """Indices of the shards present (complete) under ``root``."""
    done = set()
    for p in Path(root).glob("shard_*"):
        if p.is_dir() and not p.name.endswith(".tmp") and (p / "meta.npz").exists():
            done.add(int(p.name.split("_")[1]))
    return done


def write_manifest(root: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (atomically)."""
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, root / "manifest.json")


def read_manifest(root: Path) -> dict:
    """Read and check ``manifest.json``.

    Raises:
        FileNotFoundError: no manifest (not a synthesized set).
        ValueError: a manifest of another format.
    """
    path = Path(root) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {root} is not a dffx synth output folder (run `dffx synth`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_TAG:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT_TAG!r}")
    return manifest


class ShardReader:
    """Random access to the samples of one shard folder.

    Attributes:
        meta: dict of the per-sample arrays (see ``META_KEYS``), loaded eagerly (small).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        with np.load(self.folder / "meta.npz") as z:
            self.meta = {k: z[k] for k in z.files}
        self._files: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.meta["index"])

    def _read(self, name: str, offsets: np.ndarray, i: int) -> np.ndarray:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = open(self.folder / name, "rb")  # noqa: SIM115 (kept open for reuse)
        f.seek(int(offsets[i]))
        return np.frombuffer(f.read(int(offsets[i + 1] - offsets[i])), np.uint8)

    def image(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) BGR image of sample i."""
        return cv2.imdecode(self._read("images.bin", self.meta["image_offsets"], i), cv2.IMREAD_COLOR)

    def triangle_id(self, i: int) -> np.ndarray:
        """int32 (H, W) triangle ids of sample i (-1: no model surface)."""
        png = cv2.imdecode(self._read("triangles.bin", self.meta["triangle_offsets"], i), cv2.IMREAD_UNCHANGED)
        return png.astype(np.int32) - 1

    def close(self) -> None:
        """Close the open .bin files."""
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __getstate__(self):  # DataLoader workers reopen the files themselves
        state = dict(self.__dict__)
        state["_files"] = {}
        return state
