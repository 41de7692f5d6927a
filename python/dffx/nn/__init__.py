"""The Deep Face Feature network (paper Sec. III-B): U-Net extractor, angular-softmax loss, trainer.

* :class:`DFFNet` / :class:`DFFNetConfig` -- the U-Net (Fig. 1) mapping (B, 3, H, W) RGB in [0, 1]
  to (B, 32, H, W) unit vectors; :func:`save_weights` / :func:`load_weights` for weights files.
* :class:`DFFExtractor` -- inference API: BGR uint8 images or RGB float tensors in, features out.
* :class:`OnnxDFFExtractor` -- the same on ONNX Runtime, without PyTorch (the shipped
  ``dff_default.onnx``); :func:`export_onnx` writes such a file (``dffx export-onnx``).
* :class:`AngularSoftmaxLoss` -- the per-segmentation patch classifiers (angular softmax, m = 1).
* :func:`train_dff` / :class:`TrainConfig` -- the trainer behind ``dffx train dff``.

The names load on first use (PEP 562), so ``import dffx.nn`` and the settings in
:mod:`dffx.nn.config` do not import PyTorch; touching a network name does.
"""

from .._lazy import lazy_attributes as _lazy_attributes

_EXPORTS = {
    "AngularSoftmaxLoss": "loss", "angular_softmax_nll": "loss", "angular_softmax_nll_reference": "loss",
    "DFFExtractor": "extractor", "default_weights_path": "extractor", "images_to_tensor": "extractor",
    "cpu_has_native_bfloat16": "extractor",
    "OnnxDFFExtractor": "onnx_runtime", "export_onnx": "onnx_export",
    "DFFNetConfig": "config", "TrainConfig": "config",
    "TrainResult": "train", "train_dff": "train",
    "DFFNet": "unet", "count_parameters": "unet", "estimate_macs": "unet", "fuse_for_inference": "unet",
    "load_weights": "unet", "save_weights": "unet",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = _lazy_attributes(__name__, _EXPORTS, globals())
