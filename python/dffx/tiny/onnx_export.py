"""Export a tiny-face network to ONNX (``dffx export-tiny-onnx``; issue 26, item 1), for ONNX
Runtime and other runtimes; dffx runs the file with :class:`dffx.tiny.onnx_runtime.OnnxTinyNet`
(the graph and its metadata are described there). Needs PyTorch and the ``onnx`` package.
"""

from __future__ import annotations

from pathlib import Path

from .onnx_runtime import TINY_ONNX_FORMAT
from .path import load_tiny_net

ONNX_OPSET = 17  # as the DFF network's export (dffx.nn.onnx_export)


def export_tiny_onnx(out, weights, opset: int = ONNX_OPSET) -> Path:
    """Write a tiny-face network as an ONNX file (the graph of :mod:`dffx.tiny.onnx_runtime`).

    Args:
        out: the .onnx file to write (its folder is created).
        weights: a tiny-face weights file or checkpoint (``dffx train tiny``'s).
        opset: ONNX opset version.

    Returns:
        the path written. Its metadata: ``dffx_format`` "dffx.tiny-onnx", ``source_weights`` and
        ``source_sha256`` (the weights file's name and SHA-256), ``sr`` ("1" with the SR output,
        else "0"), ``landmark_head``.

    Raises:
        ImportError: the ``onnx`` package is missing; FileNotFoundError / ValueError as
        :func:`dffx.tiny.path.load_tiny_net`.
    """
    try:
        import onnx  # noqa: F401  (ImportError here names the missing dependency)
    except ImportError as err:
        raise ImportError('exporting to ONNX needs the onnx package: pip install "dffx[export]"') from err
    import warnings

    import torch

    from ..nn.integrity import file_sha256
    from ..nn.onnx_export import write_metadata

    net, config = load_tiny_net(weights)
    outputs = ["landmarks", "sr"] if config["sr"] else ["landmarks"]

    class Graph(torch.nn.Module):  # the forward's dict as a tuple of outputs
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, lr):
            result = self.net(lr)
            return tuple(result[name] for name in outputs)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the input-shape check
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript-based exporter
        torch.onnx.export(Graph().eval(), torch.rand(1, 3, 32, 32), str(out), dynamo=False, opset_version=opset,
                          input_names=["lr"], output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in ["lr", *outputs]})
    write_metadata(out, {"dffx_format": TINY_ONNX_FORMAT, "source_weights": Path(weights).name,
                         "source_sha256": file_sha256(weights), "sr": "1" if config["sr"] else "0",
                         "landmark_head": str(config["landmark_head"]),
                         "input": "lr float32 (B, 3, 32, 32) RGB in [0, 1]"})
    return out
