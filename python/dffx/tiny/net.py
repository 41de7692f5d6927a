"""The joint super-resolution and alignment network for tiny faces (issue 26; Yin et al.,
"Joint Super-Resolution and Alignment of Tiny Faces", AAAI 2020, Sec. 3).

Architecture (:class:`TinyFaceNet`), the paper's three parts at a size a 2-core CPU trains:

* **Shared encoder.** The 32 x 32 canonical crop of a tiny face (:mod:`dffx.tiny.degrade`),
  RGB in [0, 1], a 3x3 convolution to ``width`` channels, then ``blocks`` residual blocks (two
  3x3 convolutions, ReLU) at 32 x 32.
* **Fused intermediate layers.** The outputs of every block are concatenated and mixed by a 1x1
  convolution: one representation that holds the shallow (edges) and deep (parts) features,
  fed to both heads.
* **Two heads in parallel.** Super-resolution: two x2 sub-pixel stages (3x3 convolution, pixel
  shuffle, ReLU; ``width`` channels out of the first, half of them out of the second) and a 3x3
  convolution to RGB, added to the bicubic upsampling of the input: a 128 x 128 face (x4; a
  16-px face x8). Landmarks, one of:

  - ``"heatmap"``: one x2 sub-pixel stage to 64 x 64 and a 1x1 convolution to 68 heatmaps, read
    out by a soft-argmax (the expectation of the pixel grid under the softmax of each map), so
    that the coordinates are differentiable and sub-pixel;
  - ``"regression"``: global average pooling and a linear layer to 136 numbers.

  Both give the landmarks in the pixels of the 128 x 128 crop (pixel centres at integers).

``sr=False`` builds the landmark-only network of the paper's ablation (no SR head); the joint
network's claim is that the SR head's supervision helps the shared encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .degrade import HR_SIZE, LR_SIZE

LANDMARK_HEADS = ("heatmap", "regression")
NUM_LANDMARKS = 68


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


def _upsample2(width: int, out: int) -> nn.Sequential:
    """x2 sub-pixel convolution: (B, width, H, W) -> (B, out, 2H, 2W)."""
    return nn.Sequential(nn.Conv2d(width, 4 * out, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True))


class TinyFaceNet(nn.Module):
    """Joint SR and landmarks for a tiny face's 32 x 32 crop (see the module docstring).

    Args:
        width: channels of the encoder and the heads.
        blocks: residual blocks of the encoder (each one's output is fused).
        sr: build the super-resolution head (False: the landmark-only ablation).
        landmark_head: "heatmap" or "regression".

    Raises:
        ValueError: width or blocks < 1, an unknown landmark head.
    """

    def __init__(self, width: int = 32, blocks: int = 4, sr: bool = True, landmark_head: str = "heatmap"):
        super().__init__()
        if width < 1 or blocks < 1:
            raise ValueError(f"width and blocks must be >= 1, got {width}, {blocks}")
        if landmark_head not in LANDMARK_HEADS:
            raise ValueError(f"landmark_head must be one of {LANDMARK_HEADS}, got {landmark_head!r}")
        self.config = {"width": width, "blocks": blocks, "sr": sr, "landmark_head": landmark_head}
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(_ResBlock(width) for _ in range(blocks))
        self.fuse = nn.Conv2d(width * blocks, width, 1)
        half = max(width // 2, 1)  # the 128 x 128 stage at half the channels: a third of the multiply-adds
        self.sr_head = nn.Sequential(_upsample2(width, width), _upsample2(width, half),
                                     nn.Conv2d(half, 3, 3, padding=1)) if sr else None
        if landmark_head == "heatmap":
            self.landmark_head = nn.Sequential(_upsample2(width, width), nn.Conv2d(width, NUM_LANDMARKS, 1))
        else:
            self.landmark_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2 * NUM_LANDMARKS))

    def forward(self, lr: torch.Tensor, sr: bool = True) -> dict:
        """lr float (B, 3, 32, 32) RGB in [0, 1] -> dict with ``landmarks`` float (B, 68, 2) in
        128-crop pixels, and ``sr`` float (B, 3, 128, 128) RGB (unclamped) when the net has the
        SR head and ``sr`` is True (False skips it: the landmarks alone cost a third as much).
        Raises ValueError for another input shape."""
        if lr.ndim != 4 or tuple(lr.shape[1:]) != (3, LR_SIZE, LR_SIZE):
            raise ValueError(f"input must be (B, 3, {LR_SIZE}, {LR_SIZE}), got {tuple(lr.shape)}")
        x = F.relu(self.stem(lr))
        levels = []
        for block in self.blocks:
            x = block(x)
            levels.append(x)
        fused = F.relu(self.fuse(torch.cat(levels, dim=1)))
        out = {"landmarks": self._landmarks(fused)}
        if self.sr_head is not None and sr:
            base = F.interpolate(lr, size=(HR_SIZE, HR_SIZE), mode="bicubic", align_corners=False)
            out["sr"] = base + self.sr_head(fused)
        return out

    def _landmarks(self, fused: torch.Tensor) -> torch.Tensor:
        if self.config["landmark_head"] == "regression":
            # in units of the 128 crop, around its centre, so that zero weights predict the centre
            return self.landmark_head(fused).view(-1, NUM_LANDMARKS, 2) * HR_SIZE + (HR_SIZE - 1) / 2
        heat = self.landmark_head(fused)  # (B, 68, 64, 64)
        return soft_argmax(heat) * (HR_SIZE / heat.shape[-1]) + (HR_SIZE / heat.shape[-1] - 1) / 2


def soft_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) pixel (centres at integers) under the softmax of each map:
    (B, K, H, W) -> (B, K, 2). Differentiable; a map with one dominant peak gives that pixel."""
    b, k, h, w = heatmaps.shape
    p = torch.softmax(heatmaps.reshape(b, k, h * w).float(), dim=-1).reshape(b, k, h, w)
    xs = torch.arange(w, dtype=p.dtype, device=p.device)
    ys = torch.arange(h, dtype=p.dtype, device=p.device)
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)
