"""DFF extraction API (paper Sec. III-B): images in, per-pixel unit 32-vectors out.

>>> from dffx.nn import DFFExtractor
>>> extractor = DFFExtractor("dff.pt")          # or DFFExtractor() for the shipped default weights
>>> features = extractor.extract(cv2.imread("face_crop.png"))   # torch float32 (1, 32, H, W)

Inputs (all converted to float RGB in [0, 1], the network's input):

* one BGR uint8 image (H, W, 3) as OpenCV reads it;
* a batch of them: a list of equally sized (H, W, 3) uint8 arrays or one uint8 (B, H, W, 3) array;
* a float torch tensor (B, 3, H, W) or (3, H, W), RGB in [0, 1] (any device).

Any H, W > 0 is accepted: the images are padded with black on the bottom and right to the next
multiple of 16 (``2 ** depth`` of the net) and the features are cropped back, so the features of
an image whose sides already are multiples of 16 are exactly the network's output. Padding is
black because the canonical face crop (:mod:`dffx.preprocess`) fills outside-image pixels with
black too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import is_weights_name
from .images import bgr_batch
from .integrity import check_finite_features, check_shipped_file
from .unet import DFFNet, fuse_for_inference, load_weights

DEFAULT_WEIGHTS_NAME = "dff_default.pt"

_TRAIN_HINT = ("train weights with `dffx train dff --data DIR --out dff.pt` (see python/dffx/weights/README.md) "
               "and pass DFFExtractor(weights='dff.pt')")


def default_weights_path() -> Path:
    """Where the default weights live inside the installed package: ``dffx/weights/dff_default.pt``."""
    return Path(__file__).resolve().parent.parent / "weights" / DEFAULT_WEIGHTS_NAME


def shipped_weights_path(name: str) -> Path:
    """Path of the shipped network called ``name``: ``dffx/weights/dff_<name>.pt`` ("default"
    is :func:`default_weights_path`). The file may be missing; callers check."""
    if name == "default":
        return default_weights_path()
    return default_weights_path().with_name(f"dff_{name}.pt")


def _shipped_names() -> list[str]:
    return sorted(p.stem[len("dff_"):] for p in default_weights_path().parent.glob("dff_*.pt"))


def _select_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# DFFExtractor(precision=...): the network's weight and activation dtype
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cpu_has_native_bfloat16() -> bool:
    """True when this CPU computes bfloat16 convolutions natively (Intel AMX or AVX512-BF16),
    where ``DFFExtractor(precision="bfloat16")`` is faster than float32 on the CPU."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # private helpers missing from some torch builds: assume no
        return False


def images_to_tensor(images, device=None) -> torch.Tensor:
    """Convert any accepted image input to the network's float32 (B, 3, H, W) RGB tensor in [0, 1].

    Args:
        images: BGR uint8 (H, W, 3) NumPy image; a list/tuple of equally sized ones; a uint8
            (B, H, W, 3) BGR array; or a float torch tensor (B, 3, H, W) / (3, H, W), RGB in [0, 1].
        device: target device (default: the tensor's own device, CPU for NumPy input).

    Returns:
        float32 (B, 3, H, W) contiguous tensor. uint8 values v map to v / 255 (BGR reordered to
        RGB), so a uint8 image and ``torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255``
        give identical tensors.

    Raises:
        ValueError: unsupported type or dtype (e.g. a float NumPy array or an integer tensor),
            wrong rank or channel count (grayscale, BGRA), empty image or batch, list items of
            different sizes, non-finite values, or float values outside [0, 1].
    """
    if isinstance(images, (list, tuple, np.ndarray)):
        arr = bgr_batch(images)
        rgb = torch.from_numpy(np.ascontiguousarray(arr[..., ::-1]))
        rgb = rgb.to(device) if device is not None else rgb
        return rgb.permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    if isinstance(images, torch.Tensor):
        t = images
        if not t.is_floating_point():
            raise ValueError(f"torch tensors must be float RGB in [0, 1] (B, 3, H, W), got dtype {t.dtype}; "
                             "pass uint8 images as NumPy BGR (H, W, 3) arrays")
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4:
            raise ValueError(f"torch tensors must be (B, 3, H, W) or (3, H, W), got shape {tuple(images.shape)}")
        if t.shape[1] != 3:
            raise ValueError(f"images need 3 colour channels (RGB) in dim 1, got {t.shape[1]} "
                             f"(shape {tuple(images.shape)})")
        if t.numel() == 0:
            raise ValueError(f"empty image or batch, shape {tuple(images.shape)}")
        t = t.to(device=device if device is not None else t.device, dtype=torch.float32)
        lo, hi = torch.aminmax(t)
        lo, hi = float(lo), float(hi)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("images contain NaN or infinite values")
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float images must be RGB in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                             "(divide 0-255 images by 255)")
        return t.contiguous()
    raise ValueError(f"unsupported image input {type(images).__name__}: pass a BGR uint8 NumPy image, a list or "
                     "(B, H, W, 3) array of them, or a float torch tensor (B, 3, H, W) RGB in [0, 1]")


class DFFExtractor:
    """Per-pixel Deep Face Feature extractor (paper Sec. III-B) around a trained :class:`DFFNet`.

    Args:
        weights: None or "default": the weights shipped in the package
            (:func:`default_weights_path`); another shipped network by name (e.g. "base8",
            the file ``dffx/weights/dff_base8.pt``, which the shipped DFF cascade uses); a path: a file written by
            :func:`dffx.nn.save_weights` or by the trainer (its output or a training
            checkpoint); or a :class:`DFFNet` instance (copied, e.g. straight from training).
        device: torch device; None picks CUDA when available, else CPU.
        fuse: fold BatchNorm into the convolutions (same features up to ~1e-6, faster).
        channels_last: run in the channels-last memory format (about 2x faster on CPU with
            oneDNN). The features are returned in the ordinary contiguous layout either way.
        precision: "float32" (default) or "bfloat16": the dtype of the network's weights and
            activations. The features are float32 and unit length either way (the head's output
            is cast before the normalisation). "bfloat16" runs the default net about 2x faster
            on CPUs with native bfloat16 (AMX or AVX512-BF16, see :func:`cpu_has_native_bfloat16`)
            and slower on others; its features agree with float32 ones to a cosine of about
            0.9998 on average (docs/experiments/2026-12-03-latency.md).

    Attributes:
        net: the network in eval mode on ``device`` (fused copy when ``fuse``).
        config: its :class:`DFFNetConfig`; ``dim``: the feature dimension (32).
        metadata: the dict stored with the weights (training steps, held-out accuracy, ...).
        weights_path: the file read, or None for an in-memory net.

    Raises:
        FileNotFoundError: default or named weights requested but not shipped in this dffx
            build, or a weights path that does not exist.
        ValueError: a file that is not DFF weights, a weights file holding NaN or inf, a
            shipped file loaded by name whose SHA-256 differs from ``dffx/weights/SHA256SUMS``
            (:mod:`dffx.nn.integrity`), or an unknown ``precision``.
    """

    def __init__(self, weights=None, device=None, fuse: bool = True, channels_last: bool = True,
                 precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.device = _select_device(device)
        if isinstance(weights, DFFNet):
            import copy

            net, self.metadata, self.weights_path = copy.deepcopy(weights).float(), {}, None
        else:
            if weights is None or (isinstance(weights, str) and weights == "default"):
                path = default_weights_path()
                if not path.is_file():
                    raise FileNotFoundError(
                        f"no default DFF weights are shipped with this dffx build yet (expected {path}); "
                        + _TRAIN_HINT)
            elif is_weights_name(weights):
                path = shipped_weights_path(weights)
                if not path.is_file():
                    raise FileNotFoundError(f"no shipped DFF weights called {weights!r} (shipped: "
                                            f"{', '.join(_shipped_names()) or 'none'}) and no such file")
            elif isinstance(weights, (str, os.PathLike)):
                path = Path(weights)
            else:
                raise ValueError(f"weights must be None, 'default', a path or a DFFNet, got {type(weights).__name__}")
            if weights is None or is_weights_name(weights):
                check_shipped_file(path)  # loaded by name: must be the file the package shipped
            net, self.metadata = load_weights(path, map_location="cpu")
            self.weights_path = path
        net = fuse_for_inference(net) if fuse else net.eval()
        self.channels_last = bool(channels_last)
        self.net = net.to(self.device, dtype=PRECISIONS[precision],
                          memory_format=torch.channels_last if self.channels_last else torch.contiguous_format).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.config = self.net.config
        self.dim = self.config.out_dim

    def __repr__(self) -> str:
        src = self.weights_path or "in-memory net"
        return f"DFFExtractor({src}, device={self.device}, precision={self.precision}, config={self.config})"

    def extract(self, images, batch_size: int | None = None, *, copy: bool = True) -> torch.Tensor:
        """Deep Face Features of one image or a batch.

        Args:
            images: see :func:`images_to_tensor` (BGR uint8 image(s) or float RGB tensor).
            batch_size: run the network on chunks of this many images (bounds memory);
                None runs the whole batch at once.
            copy: True (default) returns a contiguous copy. False returns the network's own output
                as it is: channels-last memory when the extractor runs channels-last, and an
                inference tensor (read-only outside ``torch.inference_mode``). That skips one pass
                over B x 32 x H x W floats (about 3 ms per 224x224 image on a 2-core CPU); the
                alignment cascade samples it in place (:func:`dffx.ops.sample_landmark_features`).

        Returns:
            float32 (B, 32, H, W) contiguous tensor on the extractor's device: unit L2 norm per
            pixel (dim 1); B = 1 for a single image. Computed in eval mode under
            ``torch.inference_mode`` (the result is an ordinary tensor without autograd history).

        Raises:
            ValueError: invalid input (see :func:`images_to_tensor`) or batch_size < 1;
            FloatingPointError: non-finite features (damaged weights).
        """
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be None or a positive int, got {batch_size!r}")
        x = images_to_tensor(images, self.device).to(PRECISIONS[self.precision])
        b, _, h, w = x.shape
        m = self.config.multiple
        ph, pw = -h % m, -w % m
        with torch.inference_mode():
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph))  # black bottom/right border
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            step = batch_size or b
            out = torch.cat([self.net(x[i:i + step]) for i in range(0, b, step)]) if step < b else self.net(x)
        out = out[:, :, :h, :w]
        check_finite_features(out, self.weights_path or "(in memory)")
        if not copy:
            return out
        # cloned outside inference mode: callers get an ordinary tensor they may modify in place
        return out.clone(memory_format=torch.contiguous_format)

    __call__ = extract
