"""The Deep Face Feature network (paper Sec. III-B): U-Net extractor, angular-softmax loss, trainer.

* :class:`DFFNet` / :class:`DFFNetConfig` -- the U-Net (Fig. 1) mapping (B, 3, H, W) RGB in [0, 1]
  to (B, 32, H, W) unit vectors; :func:`save_weights` / :func:`load_weights` for weights files.
* :class:`DFFExtractor` -- inference API: BGR uint8 images or RGB float tensors in, features out.
* :class:`AngularSoftmaxLoss` -- the per-segmentation patch classifiers (angular softmax, m = 1).
* :func:`train_dff` / :class:`TrainConfig` -- the trainer behind ``dffx train dff``.
"""

from .extractor import DFFExtractor, default_weights_path, images_to_tensor
from .loss import AngularSoftmaxLoss, angular_softmax_nll, angular_softmax_nll_reference
from .train import TrainConfig, TrainResult, train_dff
from .unet import DFFNet, DFFNetConfig, count_parameters, estimate_macs, fuse_for_inference, load_weights, save_weights

__all__ = ["AngularSoftmaxLoss", "DFFExtractor", "DFFNet", "DFFNetConfig", "TrainConfig", "TrainResult",
           "angular_softmax_nll", "angular_softmax_nll_reference", "count_parameters", "default_weights_path",
           "estimate_macs", "fuse_for_inference", "images_to_tensor", "load_weights", "save_weights", "train_dff"]
