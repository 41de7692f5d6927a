"""Export a DFF network to ONNX (``dffx export-onnx``), for ONNX Runtime, TensorRT and other
runtimes; dffx itself runs the file with :class:`dffx.nn.onnx_runtime.OnnxDFFExtractor`.

The graph is the network of :class:`dffx.nn.DFFExtractor` with BatchNorm folded into the
convolutions: input ``image`` float32 (B, 3, H, W) RGB in [0, 1], H and W multiples of 16 (any
B, H, W); output ``features`` float32 (B, 32, H, W), unit length per pixel. The file's metadata
names the source weights and their SHA-256, which a DFF cascade checks (it only fits the network
it was trained with). Needs PyTorch and the ``onnx`` package (``pip install "dffx[export]"``).
"""

from __future__ import annotations

from pathlib import Path

# opset 17: supported by every ONNX Runtime since 1.13 and by TensorRT 8.6+
ONNX_OPSET = 17


def export_onnx(out, weights=None, opset: int = ONNX_OPSET) -> Path:
    """Write a DFF network as an ONNX file.

    Args:
        out: the .onnx file to write (its folder is created).
        weights: the network, as :class:`dffx.nn.DFFExtractor` takes it (None: the shipped default).
        opset: ONNX opset version.

    Returns:
        the path written. Its metadata: ``dffx_format`` "dffx.dff-onnx", ``source_weights`` (the
        weights file's name), ``source_sha256`` (its SHA-256; both empty for an in-memory net),
        ``multiple`` (16), ``out_dim`` (32), ``input`` (the convention above).

    Raises:
        ImportError: the ``onnx`` package is missing; FileNotFoundError / ValueError as
        :class:`dffx.nn.DFFExtractor` for the weights.
    """
    try:
        import onnx  # noqa: F401  (ImportError here names the missing dependency)
    except ImportError as err:
        raise ImportError('exporting to ONNX needs the onnx package: pip install "dffx[export]"') from err
    import warnings

    import torch

    from .integrity import file_sha256
    from .extractor import DFFExtractor
    from .onnx_runtime import ONNX_FORMAT

    extractor = DFFExtractor(weights, device="cpu", channels_last=False)
    net, multiple = extractor.net, extractor.config.multiple
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, 14 * multiple, 14 * multiple)
    with warnings.catch_warnings():
        # DFFNet.forward's size checks are Python conditions the tracer records as constants
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # The TorchScript-based exporter is deprecated since torch 2.9 in favour of the
        # torch.export one, which needs onnxscript too; it still exports this plain conv net.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(net, example, str(out), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["features"],
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "features": {0: "batch", 2: "height", 3: "width"}})
    source = extractor.weights_path
    write_metadata(out, {"dffx_format": ONNX_FORMAT, "source_weights": source.name if source else "",
                         "source_sha256": file_sha256(source) if source else "", "multiple": str(multiple),
                         "out_dim": str(extractor.dim),
                         "input": "image float32 (B, 3, H, W) RGB in [0, 1], H and W multiples of 'multiple'"})
    return out


def write_metadata(path: Path, metadata: dict) -> None:
    """Add string ``metadata`` (key -> value) to the ONNX file at ``path``, in place (the ``onnx``
    package must be installed)."""
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
