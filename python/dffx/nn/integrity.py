"""Integrity of network files: the shipped ones against the package's SHA-256 list, and the
features a network returns.

A weights file with flipped bytes often still loads (a float32 is any 4 bytes) and yields NaN
or absurd features, which surfaced as a misleading error far downstream (the shape fit). So:

* a shipped file (``dffx/weights/dff_<name>.pt`` / ``.onnx``), when loaded by name, must have the
  SHA-256 that ``dffx/weights/SHA256SUMS`` lists (:func:`check_shipped_file`);
* any weights file must hold finite numbers only (:func:`dffx.nn.unet.load_weights`);
* the features a network returns must be finite (:func:`check_finite_features`).

NumPy only: the ONNX path uses it without PyTorch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

MANIFEST_NAME = "SHA256SUMS"


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path) -> dict[str, str]:
    """``{file name: hex SHA-256}`` from a ``sha256sum``-style file (``HEX  NAME`` per line).

    Raises:
        ValueError: a line that is not a 64-digit hex digest and a name.
    """
    sums = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0]):
            raise ValueError(f"{path}:{number}: expected 'SHA256  NAME', got {line!r}")
        sums[parts[1].lstrip("*")] = parts[0]
    return sums


def check_shipped_file(path) -> None:
    """Raise if a shipped file differs from the SHA-256 its folder's ``SHA256SUMS`` lists.

    Files the list does not name (and folders without a list) are not checked.

    Args:
        path: a file inside ``dffx/weights/``.

    Raises:
        ValueError: the file's SHA-256 differs (a damaged or replaced file), naming the file.
    """
    path = Path(path)
    manifest = path.parent / MANIFEST_NAME
    if not manifest.is_file():
        return
    want = read_manifest(manifest).get(path.name)
    if want is None:
        return
    got = file_sha256(path)
    if got != want:
        raise ValueError(f"{path} is damaged: its SHA-256 is {got[:16]}..., the shipped file's "
                         f"{want[:16]}... ({manifest}); reinstall dffx")


def check_finite_features(features, source) -> None:
    """Raise if a network's output holds NaN or infinity.

    Each pixel's descriptor is L2-normalised, so a non-finite value anywhere in a pixel's vector
    makes its every channel non-finite: channel 0 alone is checked (1/32 of the output).

    Args:
        features: (B, C, H, W) NumPy array or torch tensor.
        source: the weights or ONNX file, named in the message.

    Raises:
        FloatingPointError: non-finite features.
    """
    first = features[:, 0]
    finite = bool(np.isfinite(first).all()) if isinstance(first, np.ndarray) else bool(first.isfinite().all())
    if not finite:
        raise FloatingPointError(f"the DFF network {source} returned non-finite features (NaN or inf): "
                                 "its weights are damaged or were trained to diverge")
