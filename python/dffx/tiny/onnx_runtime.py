"""A tiny-face network on ONNX Runtime (issue 26, item 1): the runner
:class:`dffx.tiny.path.TinyPath` uses on a CPU, where it runs a tiny face about twice as fast as
PyTorch (per-operator overhead dominates at 32 x 32). The files come from
:func:`dffx.tiny.onnx_export.export_tiny_onnx` (``dffx export-tiny-onnx``).

The graph is :class:`dffx.tiny.net.TinyFaceNet`: input ``lr`` float32 (B, 3, 32, 32) RGB in
[0, 1] (the face's canonical 32-px crop); output ``landmarks`` float32 (B, 68, 2) in the pixels of
the 128-px crop (x4 of the input, pixel centres at integers), and for a network with the
super-resolution head also ``sr`` float32 (B, 3, 128, 128) RGB, unclamped. The file's metadata
names the weights file it came from and its SHA-256, which the package's checksums tie together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_ONNX_FORMAT = "dffx.tiny-onnx"


class OnnxTinyNet:
    """A tiny-face network exported by :func:`dffx.tiny.onnx_export.export_tiny_onnx`, on ONNX Runtime (CPU).

    Args:
        path: the .onnx file.
        threads: ONNX Runtime's intra-op threads (None: its default, one per physical core).

    Attributes:
        config: ``{"sr": bool, "landmark_head": str}``; metadata: the file's dffx metadata.

    Raises:
        ImportError: onnxruntime is not installed; FileNotFoundError: no such file; ValueError:
        not a dffx tiny-face ONNX file.
    """

    def __init__(self, path, threads: int | None = None):
        import onnxruntime  # noqa: F401  (ImportError here names the missing dependency)

        from ..nn.onnx_runtime import open_session

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tiny-face ONNX file not found: {path}")
        self.session, self.metadata = open_session(path, threads, TINY_ONNX_FORMAT, "a tiny-face network")
        self.path = path
        self.config = {"sr": self.metadata.get("sr") == "1", "landmark_head": self.metadata.get("landmark_head")}

    def __call__(self, lr: np.ndarray, sr: bool = True) -> dict:
        """float32 (B, 3, 32, 32) RGB in [0, 1] -> dict of float32 arrays: ``landmarks`` (B, 68, 2)
        in 128-crop pixels, and ``sr`` (B, 3, 128, 128) when the file has it and ``sr`` is True."""
        names = ["landmarks", "sr"] if sr and self.config["sr"] else ["landmarks"]
        values = self.session.run(names, {"lr": np.ascontiguousarray(lr, np.float32)})
        return dict(zip(names, values))
