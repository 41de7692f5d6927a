"""The DFF network on ONNX Runtime: the shipped network without PyTorch.

:class:`OnnxDFFExtractor` runs a file written by :func:`dffx.nn.onnx_export.export_onnx` (the
package ships ``dffx/weights/dff_default.onnx``, the default network) and returns what
:meth:`dffx.nn.DFFExtractor.extract` returns, as NumPy (within 1e-5). On a 2-core CPU it runs the
default network 1.3x as fast as PyTorch in float32, and importing it takes 0.25 s against
PyTorch's 2.7 s (docs/experiments/2026-12-03-latency.md). ``FaceAligner(backend="onnxruntime")`` uses it;
neither imports PyTorch. Needs ``onnxruntime`` (``pip install "dffx[onnx]"``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .config import is_weights_name
from .images import bgr_batch, network_input
from .integrity import check_finite_features, check_shipped_file

ONNX_FORMAT = "dffx.dff-onnx"


def shipped_onnx_path(name: str = "default") -> Path:
    """``dffx/weights/dff_<name>.onnx`` inside the installed package (it may be missing)."""
    return Path(__file__).resolve().parent.parent / "weights" / f"dff_{name}.onnx"


def open_session(path: Path, threads: int | None, dffx_format: str, what: str):
    """An ONNX Runtime CPU session on a file dffx exported, and the file's dffx metadata.

    Args:
        path: the .onnx file; threads: intra-op threads (None: ONNX Runtime's default);
        dffx_format: the ``dffx_format`` its metadata must name; what: the file's kind, for messages.

    Returns:
        (``onnxruntime.InferenceSession``, dict of the file's metadata).

    Raises:
        ValueError: not a readable ONNX file, or not one of ``dffx_format``.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own error types for unreadable files
        raise ValueError(f"{path} is not a readable ONNX file: {err}") from err
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    if metadata.get("dffx_format") != dffx_format:
        raise ValueError(f"{path} is not {what} exported by dffx (metadata dffx_format missing)")
    return session, metadata


class OnnxDFFExtractor:
    """Per-pixel Deep Face Features (paper Sec. III-B) from an exported network, on ONNX Runtime (CPU).

    Args:
        model: None or "default": the shipped ``dff_default.onnx``; another shipped name
            (``dff_<name>.onnx``); or the path of a file from ``dffx export-onnx``.
        threads: ONNX Runtime's intra-op threads (None: its default, one per physical core).

    Attributes:
        path: the file read; metadata: its dffx metadata (:func:`dffx.nn.onnx_export.export_onnx`);
        source_sha256: SHA-256 of the weights file it was exported from; dim: 32; multiple: 16.

    Raises:
        ImportError: onnxruntime is not installed; FileNotFoundError: no such file or shipped
        name; ValueError: not a dffx DFF ONNX file, or a shipped file whose SHA-256 differs from
        ``dffx/weights/SHA256SUMS`` (:mod:`dffx.nn.integrity`).
    """

    def __init__(self, model=None, threads: int | None = None):
        try:
            import onnxruntime  # noqa: F401  (ImportError here names the missing dependency)
        except ImportError as err:
            raise ImportError('the onnxruntime backend needs onnxruntime: pip install "dffx[onnx]"') from err
        if model is None or model == "default":
            path = shipped_onnx_path()
        elif is_weights_name(model):
            path = shipped_onnx_path(model)
        elif isinstance(model, (str, os.PathLike)):
            path = Path(model)
        else:
            raise ValueError(f"model must be None, 'default', a shipped name or a path, got {type(model).__name__}")
        if not path.is_file():
            raise FileNotFoundError(f"DFF ONNX file not found: {path} (write one with `dffx export-onnx --out FILE`)")
        if model is None or is_weights_name(model):
            check_shipped_file(path)  # loaded by name: must be the file the package shipped
        self.session, self.metadata = open_session(path, threads, ONNX_FORMAT, "a DFF network")
        self.path = path
        self.weights_path = None  # no PyTorch weights file: the cascade checks source_sha256
        self.source_sha256 = self.metadata.get("source_sha256", "")
        self.multiple, self.dim = int(self.metadata["multiple"]), int(self.metadata["out_dim"])

    def __repr__(self) -> str:
        return f"OnnxDFFExtractor({self.path}, source={self.metadata.get('source_weights')})"

    def extract(self, images, batch_size: int | None = None, *, copy: bool = True) -> np.ndarray:
        """Deep Face Features of one image or a batch.

        Args:
            images: one BGR uint8 (H, W, 3) image as OpenCV reads it, a list of equally sized
                ones, or a uint8 (B, H, W, 3) array; any H, W > 0 (padded with black to the next
                multiple of 16 and cropped back, as :class:`dffx.nn.DFFExtractor`).
            batch_size: run the network on chunks of this many images; None: all at once.
            copy: False may return a view into the padded output (no copy when H and W are
                multiples of 16 either way); True returns a contiguous array.

        Returns:
            float32 (B, 32, H, W): a unit vector per pixel.

        Raises:
            ValueError: invalid images (:func:`dffx.nn.images.bgr_batch`) or batch_size < 1;
            FloatingPointError: non-finite features (damaged weights).
        """
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be None or a positive int, got {batch_size!r}")
        bgr = bgr_batch(images)
        b, h, w, _ = bgr.shape
        x = network_input(bgr, self.multiple)
        step = batch_size or b
        outputs = [self.session.run(["features"], {"image": x[i:i + step]})[0] for i in range(0, b, step)]
        out = (outputs[0] if len(outputs) == 1 else np.concatenate(outputs))[:, :, :h, :w]
        check_finite_features(out, self.path)
        return np.ascontiguousarray(out) if copy else out

    __call__ = extract
