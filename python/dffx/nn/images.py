"""Image batches for the DFF network, without PyTorch: the checks and the padding shared by
:class:`dffx.nn.DFFExtractor` and the ONNX Runtime extractor (:mod:`dffx.nn.onnx_runtime`)."""

from __future__ import annotations

import numpy as np


def bgr_batch(images) -> np.ndarray:
    """One BGR uint8 image, a list of equally sized ones, or a (B, H, W, 3) uint8 array -> uint8
    (B, H, W, 3) BGR (a view where possible).

    Raises:
        ValueError: an empty list, image or batch; list items that are not (H, W, 3) uint8
            NumPy arrays or differ in size; another dtype; a 2-D (grayscale) array; another
            rank or channel count (BGRA).
    """
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("empty image list")
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray):
                raise ValueError(f"list items must be BGR uint8 (H, W, 3) NumPy arrays, item {i} is "
                                 f"{type(img).__name__}")
            if img.ndim != 3:
                raise ValueError(f"list items must be (H, W, 3) BGR images, item {i} has shape {img.shape}")
        shapes = {a.shape for a in images}
        if len(shapes) > 1:
            raise ValueError(f"images in a batch must have the same size, got shapes {sorted(shapes)}")
        dtypes = {a.dtype for a in images}
        if dtypes != {np.dtype(np.uint8)}:
            raise ValueError(f"list items must be uint8 BGR images, got dtypes {sorted(map(str, dtypes))}")
        images = np.stack(images)
    if not isinstance(images, np.ndarray):
        raise ValueError(f"unsupported image input {type(images).__name__}: pass a BGR uint8 NumPy image, "
                         "a list of them or a (B, H, W, 3) uint8 array")
    arr = images
    if arr.dtype != np.uint8:
        raise ValueError(f"NumPy images must be uint8 BGR (H, W, 3) or (B, H, W, 3), got dtype {arr.dtype}; "
                         "DFFExtractor also takes float torch tensors (B, 3, H, W) RGB in [0, 1]")
    if arr.ndim == 2:
        raise ValueError(f"images need 3 colour channels (BGR), got a 2-D grayscale array {arr.shape}; "
                         "convert with cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"NumPy images must be (H, W, 3) or (B, H, W, 3), got shape {images.shape}")
    if arr.shape[-1] != 3:
        raise ValueError(f"images need 3 colour channels (BGR), got {arr.shape[-1]} (shape {images.shape})")
    if arr.size == 0:
        raise ValueError(f"empty image or batch, shape {images.shape}")
    return arr


def network_input(bgr: np.ndarray, multiple: int) -> np.ndarray:
    """uint8 (B, H, W, 3) BGR -> the network's float32 (B, 3, H', W') RGB in [0, 1], padded with
    black on the bottom and right to H', W' the next multiples of ``multiple`` (crop the
    features back to H, W). Values v map to v / 255, as :func:`dffx.nn.images_to_tensor`."""
    b, h, w, _ = bgr.shape
    out = np.zeros((b, 3, h + (-h % multiple), w + (-w % multiple)), np.float32)
    np.divide(bgr[..., ::-1].transpose(0, 3, 1, 2), np.float32(255.0), out=out[:, :, :h, :w], dtype=np.float32)
    return out
