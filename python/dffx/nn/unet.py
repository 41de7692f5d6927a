"""The DFF extractor network (paper Sec. III-B, Fig. 1): a U-Net mapping each pixel to a unit 32-vector.

Architecture (:class:`DFFNet`), in the spirit of the paper's Fig. 1 and of the u-net it cites:

* **Input.** (B, 3, H, W) float RGB in [0, 1]; normalised inside the net with the ImageNet mean
  and standard deviation. H and W must be multiples of ``2 ** depth`` (16 for the default
  depth 4), otherwise :class:`ValueError`. The net does not pad; :class:`dffx.nn.DFFExtractor`
  pads with black to the next multiple and crops the features back.
* **Encoder.** ``depth + 1`` levels of two 3x3 convolutions (each followed by a normalisation
  layer and ReLU), with 2x2 max-pooling between levels. Level i has
  ``min(base_channels * 2 ** i, max_channels)`` channels.
* **Decoder.** Symmetric: a 2x2 stride-2 transposed convolution ("de-convolution") halves the
  channels and doubles the resolution, its output is concatenated with the encoder's feature
  map of the same level (the copied "white boxes" of Fig. 1), then two 3x3 convolutions.
* **Head.** A 1x1 convolution to ``out_dim`` = 32 channels, cast to float32 (also under autocast) and
  L2-normalised per pixel (``x / max(|x|, 1e-6)``, so an all-zero vector stays zero instead of
  becoming NaN).

Sizes (multiply-adds of the convolutions and transposed convolutions for one 224x224 image,
:func:`estimate_macs`; normalisation, ReLU and pooling are not counted):

* "default" (base 16, depth 4, batch norm): 1,943,104 parameters, 2.35 G multiply-adds;
  weights file 3.9 MB with float16 parameters (7.8 MB float32);
* "large" (base 32, depth 4, batch norm): 7,764,064 parameters, 9.29 G multiply-adds;
  weights file 15.6 MB (float16).

The paper's own net (Fig. 1) is not specified beyond its shape; the default was sized so that it
trains on a 2-core CPU and ships inside the wheel; "large" is meant for GPU training. CPU
inference of the default net at 224x224 (batch 1, 2 idle cores, :class:`~dffx.nn.DFFExtractor`
with folded BatchNorm and channels-last): about 22 ms; the plain float32 net: about 48 ms.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import DFFNetConfig

WEIGHTS_FORMAT = "dffx.dff-weights"
WEIGHTS_VERSION = 1

# ImageNet statistics (RGB); the input is normalised with them inside the net.
_RGB_MEAN = (0.485, 0.456, 0.406)
_RGB_STD = (0.229, 0.224, 0.225)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(8, channels)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    """(conv 3x3 -> norm -> ReLU) x 2."""

    def __init__(self, cin: int, cout: int, norm: str):
        bias = norm == "none"
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True))


class DFFNet(nn.Module):
    """U-Net DFF extractor (paper Sec. III-B, Fig. 1); see the module docstring for the layers.

    Args:
        config: a :class:`DFFNetConfig` (default: ``DFFNetConfig()``, 1,943,104 parameters).
        **overrides: fields of :class:`DFFNetConfig` replacing those of ``config``,
            e.g. ``DFFNet(base_channels=8, depth=3)``.

    ``forward(images)``:
        images: float (B, 3, H, W) RGB in [0, 1], H and W multiples of ``config.multiple``.
        Returns float32 (B, out_dim, H, W), unit L2 norm along dim 1 (per pixel).
        Raises ValueError for a wrong rank, channel count, dtype or size.
    """

    def __init__(self, config: DFFNetConfig | None = None, **overrides):
        super().__init__()
        config = config or DFFNetConfig()
        if overrides:
            config = DFFNetConfig.from_dict({**asdict(config), **overrides})
        self.config = config
        ch = config.channels
        self.register_buffer("rgb_mean", torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(_RGB_STD).view(1, 3, 1, 1), persistent=False)
        self.encoder = nn.ModuleList([_DoubleConv(3 if i == 0 else ch[i - 1], ch[i], config.norm)
                                      for i in range(config.depth)])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _DoubleConv(ch[-2], ch[-1], config.norm)
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in range(config.depth)])
        self.decoder = nn.ModuleList([_DoubleConv(2 * ch[i], ch[i], config.norm) for i in range(config.depth)])
        self.head = nn.Conv2d(ch[0], config.out_dim, 1)

    def check_input(self, images: torch.Tensor) -> None:
        """Raise ValueError unless ``images`` is a float (B, 3, H, W) tensor with H, W multiples of
        ``config.multiple`` and B, H, W > 0."""
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"DFFNet expects a torch tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"DFFNet expects (B, 3, H, W) RGB images, got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"DFFNet expects float RGB in [0, 1], got dtype {images.dtype}")
        b, _, h, w = images.shape
        m = self.config.multiple
        if b == 0 or h == 0 or w == 0 or h % m or w % m:
            raise ValueError(f"DFFNet (depth {self.config.depth}) needs B > 0 and H, W positive multiples of {m}, "
                             f"got {b}x{h}x{w}; pad the image (DFFExtractor does this) or crop it")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) RGB in [0, 1] -> float32 (B, out_dim, H, W) unit vectors (see the class
        docstring; ValueError for bad input)."""
        self.check_input(images)
        x = (images - self.rgb_mean.to(images.dtype)) / self.rgb_std.to(images.dtype)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for i in reversed(range(self.config.depth)):
            x = self.up[i](x)
            x = self.decoder[i](torch.cat([skips[i], x], dim=1))
        x = self.head(x).float()
        return F.normalize(x, dim=1, eps=1e-6)

    def count_parameters(self) -> int:
        """Number of parameters (all are trainable); see :func:`count_parameters`."""
        return count_parameters(self)


def count_parameters(module: nn.Module) -> int:
    """Total number of parameter elements of ``module`` (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


def estimate_macs(net: nn.Module, height: int = 224, width: int = 224) -> int:
    """Multiply-adds of one forward pass on a single (1, 3, height, width) image.

    Counted with forward hooks on every ``Conv2d`` and ``ConvTranspose2d`` (kernel area x input
    channels per group x output elements, bias excluded); normalisation, ReLU, pooling,
    concatenation and the final L2 normalisation are not counted (they add < 2%). Runs one real
    forward pass on CPU zeros under ``torch.no_grad`` (the net is left in its training mode).
    FLOPs are about twice the returned number.

    Raises:
        ValueError: if the net rejects the size.
    """
    total = 0

    def conv_hook(mod, inputs, output):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        if isinstance(mod, nn.ConvTranspose2d):
            # each input element is scattered into k * cout / groups outputs
            total += inputs[0].numel() * k * mod.out_channels // mod.groups
        else:
            total += output.numel() * k * mod.in_channels // mod.groups

    handles = [m.register_forward_hook(conv_hook) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    was_training = net.training
    try:
        net.eval()
        device = next(net.parameters()).device
        with torch.no_grad():
            net(torch.zeros(1, 3, height, width, device=device))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return int(total)


def fuse_for_inference(net: DFFNet) -> DFFNet:
    """An eval-mode copy of ``net`` with every BatchNorm folded into the convolution before it.

    Same outputs as ``net.eval()`` up to float rounding (~1e-6), ~10-20% faster on CPU. Nets with
    group norm or no norm are only copied and put in eval mode.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(net).eval()
    if fused.config.norm != "batch":
        return fused
    for block in [*fused.encoder, fused.bottleneck, *fused.decoder]:
        for conv_i, bn_i in ((0, 1), (3, 4)):
            block[conv_i] = fuse_conv_bn_eval(block[conv_i], block[bn_i])
            block[bn_i] = nn.Identity()
    return fused


# --------------------------------------------------------------------------- weights files
def plain_metadata(metadata: dict) -> dict:
    """``metadata`` reduced to JSON types (str/int/float/bool/None/list/dict; anything else becomes
    its ``str``), so that ``torch.load(weights_only=True)`` can read it back."""
    return json.loads(json.dumps(dict(metadata), default=str))


def save_weights(path: str | os.PathLike, net: DFFNet, metadata: dict | None = None, half: bool = True) -> Path:
    """Write a DFF weights file: network config + state_dict + metadata (no loss head, no optimizer).

    Args:
        path: output file (conventionally ``.pt``); parent folders are created. Written to a
            temporary file first and renamed, so a crash never leaves a truncated file.
        net: the network (any device; DDP users pass ``ddp.module``).
        metadata: JSON-like dict, e.g. training steps, data size, held-out loss/accuracy,
            hardware; reduced with :func:`plain_metadata` (other objects become strings).
        half: store floating-point *parameters* as float16 (halves the file; the largest
            relative rounding error is 2^-11). Buffers (BatchNorm statistics) stay float32.
            :func:`load_weights` converts back to float32.

    Returns:
        the path written.

    Raises:
        ValueError: ``half`` with a parameter beyond float16's range (+-65504); pass half=False.
    """
    path = Path(path)
    param_names = {name for name, _ in net.named_parameters()}
    state = {}
    for name, value in net.state_dict().items():
        value = value.detach().to("cpu").clone()
        if half and name in param_names and value.is_floating_point():
            if value.abs().max() > torch.finfo(torch.float16).max:
                raise ValueError(f"parameter {name} exceeds the float16 range; save with half=False")
            value = value.to(torch.float16)
        state[name] = value
    blob = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "config": asdict(net.config),
            "state_dict": state, "metadata": plain_metadata(metadata or {}),
            "stored_dtype": "float16" if half else "float32"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def _one_line(exc: Exception, join: bool = False, limit: int = 300) -> str:
    """An exception's message on one line, for an error that names the file: torch.load's span a
    dozen lines of advice with terminal colour codes (the first line naming an error is kept),
    load_state_dict's one line per kind of key (``join``: all of them, joined); bytes that are
    not printable (a damaged key) are escaped."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line] or [type(exc).__name__]
    line = " ".join(lines) if join else next((line for line in lines if "error" in line.lower()), lines[0])
    line = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in line)
    return line if len(line) <= limit else line[:limit - 3] + "..."


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[DFFNet, dict]:
    """Read a file written by :func:`save_weights` (or a trainer checkpoint) into a float32 net.

    Uses ``torch.load(weights_only=True)``, so the file cannot run code.

    Args:
        path: the weights file.
        map_location: device the net is built on.

    Returns:
        (net in eval mode, float32, on ``map_location``; metadata dict).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a dffx DFF weights file, a newer format version, or a state_dict that
            does not match the stored config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DFF weights file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, ...
        raise ValueError(f"{path} is not a readable DFF weights file: {_one_line(exc)}") from exc
    if isinstance(blob, dict) and blob.get("format") == "dffx.dff-train-checkpoint":  # dffx.nn.train
        blob = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "config": blob["net_config"],
                "state_dict": blob["model"], "metadata": blob.get("metadata")}
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path} is not a dffx DFF weights file (format tag {WEIGHTS_FORMAT!r} missing)")
    if int(blob.get("version", 0)) > WEIGHTS_VERSION:
        raise ValueError(f"{path} has weights format version {blob['version']}; this dffx reads <= {WEIGHTS_VERSION}")
    if "config" not in blob or not isinstance(blob.get("state_dict"), dict):
        raise ValueError(f"{path}: a DFF weights file needs a 'config' and a 'state_dict' dict of tensors")
    try:  # the config is checked (sizes bounded) before a layer is allocated
        config = DFFNetConfig.from_dict(blob["config"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: bad network config: {exc}") from None
    tensors = blob["state_dict"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise ValueError(f"{path}: the state_dict must map names to tensors")
    damaged = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if damaged:
        raise ValueError(f"{path} is damaged: non-finite weights (NaN or inf) in {', '.join(damaged[:3])}")
    net = DFFNet(config)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored network config: {_one_line(exc, join=True)}") \
            from exc
    return net.to(map_location).eval(), dict(blob.get("metadata") or {})
