"""Seeded fuzz of dffx's file loaders (issue 28), run by tests/data/test_fuzz.py in a subprocess
under an address-space limit.

Usage: python loaders.py WORK_DIR CASES_PER_LOADER SEED

Mutates a small valid file of each kind (byte flips, overwritten 8-byte words, truncations,
bytes appended) and loads it: a cascade .npz (dffx.align.Cascade.load), a DFF weights .pt
(dffx.nn.load_weights) and PNG / JPEG / BMP images (dffx.imageio.read_image). Each load must
succeed or raise one of the named errors (ValueError, OSError, FileNotFoundError) with a
one-line message; anything else (another exception type, a MemoryError, a crash) fails the
run. Prints one line per loader: cases, loaded, refused.
"""

from __future__ import annotations

import struct
import sys
import warnings
from pathlib import Path

import numpy as np

NAMED = (ValueError, OSError)  # FileNotFoundError is an OSError
WORDS = [0, 1, 2**31, 2**32, 2**57, 2**63 - 1, 0xFFFFFFFFFFFFFFFF]


def mutate(data: bytes, rng: np.random.Generator, head: int) -> bytes:
    """One random mutation; half of them within the first ``head`` bytes (headers)."""
    out = bytearray(data)
    limit = min(head, len(out)) if rng.random() < 0.5 else len(out)
    kind = rng.integers(4)
    if kind == 0:
        for _ in range(rng.integers(1, 9)):
            out[rng.integers(limit)] ^= 1 << int(rng.integers(8))
    elif kind == 1 and len(out) >= 8:
        at = int(rng.integers(max(1, limit - 8)))
        out[at:at + 8] = struct.pack("<Q", WORDS[rng.integers(len(WORDS))])
    elif kind == 2:
        del out[int(rng.integers(len(out))):]
    else:
        out += rng.integers(0, 256, int(rng.integers(1, 64))).astype(np.uint8).tobytes()
    return bytes(out)


def fuzz(name: str, original: bytes, load, path: Path, cases: int, rng, head: int = 512) -> None:
    loaded = refused = 0
    for _ in range(cases):
        path.write_bytes(mutate(original, rng, head))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load(path)
            loaded += 1
        except NAMED as exc:
            message = str(exc)
            if "\n" in message or not message:
                raise AssertionError(f"{name}: not a one-line message: {message!r}") from exc
            refused += 1
    print(f"{name}: {cases} cases, {loaded} loaded, {refused} refused", flush=True)


def main() -> int:
    import cv2
    import torch

    from dffx.align import Cascade
    from dffx.imageio import read_image
    from dffx.nn import DFFNet, DFFNetConfig, load_weights, save_weights

    work, cases, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    g = np.random.default_rng(0)
    small = Cascade("sift", np.arange(6.0), g.normal(size=(1, 5, 136)).astype(np.float32),
                    g.normal(size=(1, 5, 6)).astype(np.float32), 0.3, {"min_score": 0.8},
                    template=g.normal(size=(68, 4)).astype(np.float32))
    fuzz("cascade .npz", small.save(work / "c.npz").read_bytes(), Cascade.load, work / "m.npz", cases, rng)
    weights = save_weights(work / "w.pt", DFFNet(DFFNetConfig(base_channels=4, depth=2)))
    fuzz("weights .pt", weights.read_bytes(), load_weights, work / "m.pt", cases, rng)
    image = g.integers(0, 256, (48, 64, 3)).astype(np.uint8)
    for suffix in (".png", ".jpg", ".bmp"):
        cv2.imwrite(str(work / f"i{suffix}"), image)
        fuzz(f"image {suffix}", (work / f"i{suffix}").read_bytes(), lambda p: read_image(p, max_pixels=10_000_000),
             work / f"m{suffix}", cases, rng, head=64)
    return 0


if __name__ == "__main__":
    sys.exit(main())
