"""Training-time image augmentation for the DFF network (issue 25, item 2).

Renders differ from photographs in ways no single render setting covers: camera colour and
exposure, greyscale archives, defocus and motion, sensor noise, heavy JPEG, low resolution
enlarged, and hands, hair, glasses or microphones in front of the face. Each family below draws
its own settings per image from a ``torch.Generator`` (the trainer seeds it from the step, so a
resumed run repeats the draws):

* ``colour``: brightness, contrast, gamma, saturation, per-channel gains; greyscale in 20 %.
* ``blur``: Gaussian (sigma 0.5-2 px) in 20 %, or motion blur (3-9 px, any direction) in 15 %.
* ``noise``: Gaussian noise, sigma U(0, 0.04).
* ``jpeg``: JPEG at quality U(15, 75) in 30 % (OpenCV's encoder).
* ``scale``: down-sampled to U(0.2, 0.6) of the side and back up (area, then bilinear) in 30 %.
* ``occlusion``: in 40 %, a rectangle or ellipse over 5-30 % of the face pixels, filled with a
  flat colour, noise, or a patch of another image of the batch; the covered pixels get no
  surface label (triangle id -1), since the network cannot see the face there.

Images are float (B, 3, H, W) RGB in [0, 1], labels int64 (B, H, W); both stay on their device
except for JPEG, which round-trips through the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import parse_augment

def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _colour(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    grey = x.mean(dim=0, keepdim=True)
    x = grey + (x - grey) * _u(g, 0.5, 1.4)
    x = x * torch.tensor([_u(g, 0.85, 1.15) for _ in range(3)], device=x.device).view(3, 1, 1)
    x = (x - 0.5) * _u(g, 0.6, 1.4) + 0.5 + _u(g, -0.15, 0.15)
    x = x.clamp(0.0, 1.0) ** _u(g, 0.7, 1.4)
    if _u(g, 0, 1) < 0.2:
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).expand(3, -1, -1)
    return x


def _blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    r = _u(g, 0, 1)
    if r < 0.2:
        sigma = _u(g, 0.5, 2.0)
        half = int(math.ceil(3 * sigma))
        t = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
        k1 = torch.exp(-t ** 2 / (2 * sigma ** 2))
        kernel = torch.outer(k1, k1)
    elif r < 0.35:
        length = int(round(_u(g, 3, 9)))
        angle = _u(g, 0, math.pi)
        size = length if length % 2 else length + 1
        kernel = torch.zeros(size, size, device=x.device, dtype=x.dtype)
        c = size // 2
        for s in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
            kernel[int(round(c + s * math.sin(angle))), int(round(c + s * math.cos(angle)))] = 1.0
    else:
        return x
    kernel = (kernel / kernel.sum()).expand(3, 1, -1, -1)
    pad = kernel.shape[-1] // 2
    return F.conv2d(F.pad(x[None], (pad, pad, pad, pad), mode="replicate"), kernel, groups=3)[0]


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    sigma = _u(g, 0.0, 0.04)
    return x + sigma * torch.randn(x.shape, generator=g, device="cpu").to(x.device)


def _jpeg(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    import cv2

    if _u(g, 0, 1) >= 0.3:
        return x
    quality = int(round(_u(g, 15, 75)))
    bgr = (x.clamp(0, 1).permute(1, 2, 0).flip(-1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # OpenCV failed to encode: keep the image (not seen in practice)
        return x
    back = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    return torch.from_numpy(back).permute(2, 0, 1).to(x.device, x.dtype) / 255.0


def _scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if _u(g, 0, 1) >= 0.3:
        return x
    h, w = x.shape[1:]
    f = _u(g, 0.2, 0.6)
    small = F.interpolate(x[None], size=(max(8, int(h * f)), max(8, int(w * f))), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]


def _occlusion(x: torch.Tensor, tri: torch.Tensor, other: torch.Tensor, g: torch.Generator):
    if _u(g, 0, 1) >= 0.4:
        return x, tri
    face = tri >= 0
    if not face.any():
        return x, tri
    ys, xs = torch.nonzero(face, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    fh, fw = y1 - y0 + 1, x1 - x0 + 1
    area = _u(g, 0.05, 0.3) * fh * fw
    aspect = math.exp(_u(g, -1.0, 1.0))
    oh, ow = max(4, int(math.sqrt(area / aspect))), max(4, int(math.sqrt(area * aspect)))
    cy, cx = _u(g, y0, y1), _u(g, x0, x1)
    h, w = tri.shape
    yy = torch.arange(h, device=x.device).view(-1, 1).float()
    xx = torch.arange(w, device=x.device).view(1, -1).float()
    if _u(g, 0, 1) < 0.5:
        mask = ((yy - cy).abs() <= oh / 2) & ((xx - cx).abs() <= ow / 2)
    else:
        mask = ((yy - cy) / (oh / 2)) ** 2 + ((xx - cx) / (ow / 2)) ** 2 <= 1.0
    kind = _u(g, 0, 1)
    if kind < 0.35:
        fill = torch.tensor([_u(g, 0, 1) for _ in range(3)], device=x.device).view(3, 1, 1).expand_as(x)
    elif kind < 0.6:
        fill = torch.rand(x.shape, generator=g).to(x.device)
    else:
        fill = other
    x = torch.where(mask[None], fill, x)
    return x, torch.where(mask, torch.full_like(tri, -1), tri)


def augment_image(x: torch.Tensor, tri: torch.Tensor, other: torch.Tensor, families,
                  generator: torch.Generator):
    """Apply the chosen augmentation families to one image (module docstring).

    Args:
        x: float (3, H, W) RGB in [0, 1].
        tri: int64 (H, W) triangle ids, -1 = no face surface (the occluder is placed over the
            pixels >= 0).
        other: float (3, H, W), the image an occluder may be cut from.
        families: names already checked by :func:`dffx.nn.config.parse_augment` (occlusion runs
            first, so the later families degrade the occluder too).
        generator: a CPU ``torch.Generator`` that draws every setting.

    Returns:
        (x float (3, H, W) clamped to [0, 1], tri int64 (H, W)).
    """
    if "occlusion" in families:
        x, tri = _occlusion(x, tri, other, generator)
    for name, fn in (("colour", _colour), ("blur", _blur), ("scale", _scale), ("noise", _noise),
                     ("jpeg", _jpeg)):
        if name in families:
            x = fn(x, generator)
    return x.clamp(0.0, 1.0), tri


def augment_batch(images: torch.Tensor, tri: torch.Tensor, families, generator: torch.Generator):
    """Apply the chosen augmentation families to every image of a batch (module docstring).

    Args:
        images: float (B, 3, H, W) RGB in [0, 1].
        tri: int64 (B, H, W) triangle ids, -1 = no face surface.
        families: names from :data:`dffx.nn.config.AUGMENT_FAMILIES` (any order; occlusion runs
            first, so the later families degrade the occluder too).
        generator: a CPU ``torch.Generator`` that draws every setting.

    Returns:
        (images float (B, 3, H, W) clamped to [0, 1], tri int64 (B, H, W)).

    Raises:
        ValueError: wrong shapes or an unknown family.
    """
    families = parse_augment(families if isinstance(families, str) else ",".join(families))
    if images.ndim != 4 or images.shape[1] != 3 or tri.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images must be (B, 3, H, W) and tri (B, H, W), got {tuple(images.shape)} "
                         f"and {tuple(tri.shape)}")
    if not families:
        return images, tri
    out = [augment_image(images[b], tri[b], images[(b + 1) % images.shape[0]], families, generator)
           for b in range(images.shape[0])]
    return torch.stack([x for x, _ in out]), torch.stack([t for _, t in out])
