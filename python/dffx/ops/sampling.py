"""Landmark feature sampling of the alignment cascade (paper Sec. III-C2): the vector F^(k).

NumPy arrays and CPU torch tensors run the multi-threaded C++ kernel; CUDA torch tensors run
the CUDA kernel on the tensor's device and current stream. Torch tensors that require grad are
differentiable with respect to ``maps`` (native backward pass, C++ or CUDA). Contract (every
backend and the NumPy twin ``_reference.sample_landmark_features_reference``): see
:func:`sample_landmark_features` and ``csrc/include/dffx/sampling.hpp``.
"""

from __future__ import annotations

import functools

import numpy as np

from .._native import _C
from ._dispatch import as_numpy, is_torch, launch_cuda, require_cuda_kernels

__all__ = ["MIN_NORM", "sample_landmark_features", "sample_landmark_features_backward"]

# A sampled descriptor whose norm is below this is returned as zeros instead of being normalised.
MIN_NORM = 1e-12


def _shape_text(single: bool) -> tuple[str, str, str]:
    return ("(C, H, W)", "(L, 2)", "(L,)") if single else ("(B, C, H, W)", "(B, L, 2)", "(B, L)")


def _check_maps_shape(shape) -> bool:
    """Rank and emptiness of maps; returns True for an unbatched (C, H, W) input."""
    if len(shape) not in (3, 4):
        raise ValueError(f"maps must have shape (C, H, W) or (B, C, H, W), got {tuple(shape)}")
    if 0 in tuple(shape):
        raise ValueError(f"maps is empty (shape {tuple(shape)}): B, C, H and W must be positive")
    return len(shape) == 3


def _check_dtype_kind(kind: str, name: str, dtype, allowed: str) -> None:
    """kind: NumPy dtype kind of the array ('f' float, 'i'/'u' integer, 'b' bool, ...)."""
    if kind not in allowed:
        want = {"f": "floating point", "fiu": "real numbers", "biu": "bool (or 0/1 integers)"}[allowed]
        raise ValueError(f"{name} must hold {want}, got dtype {dtype}")


def _check_points_visible(maps_shape, single, p_shape, v_shape) -> None:
    """Shapes of points and visible against maps (batch sizes must agree)."""
    m_txt, p_txt, v_txt = _shape_text(single)
    B = 1 if single else maps_shape[0]
    if len(p_shape) != (2 if single else 3) or p_shape[-1] != 2:
        raise ValueError(f"points must have shape {p_txt} for maps of shape {m_txt}, got {tuple(p_shape)}")
    if not single and p_shape[0] != B:
        raise ValueError(f"batch mismatch: maps has batch {B}, points has batch {p_shape[0]}")
    L = p_shape[-2]
    if v_shape is not None:
        if len(v_shape) != (1 if single else 2):
            raise ValueError(f"visible must have shape {v_txt} for maps of shape {m_txt}, got {tuple(v_shape)}")
        if not single and v_shape[0] != B:
            raise ValueError(f"batch mismatch: maps has batch {B}, visible has batch {v_shape[0]}")
        if v_shape[-1] != L:
            raise ValueError(f"visible must have {L} entries per face (one per point), got shape {tuple(v_shape)}")


def _numpy_inputs(maps, points, visible):
    """Validated C-contiguous float32 maps (B, C, H, W), float32 points (B, L, 2), uint8 visible (B, L)."""
    m = np.asarray(maps)
    _check_dtype_kind(m.dtype.kind, "maps", m.dtype, "f")
    single = _check_maps_shape(m.shape)
    p = np.asarray(points)
    _check_dtype_kind(p.dtype.kind, "points", p.dtype, "fiu")
    v = None if visible is None else np.asarray(visible)
    _check_points_visible(m.shape, single, p.shape, None if v is None else v.shape)
    p = np.ascontiguousarray(p, dtype=np.float32)
    if not np.all(np.isfinite(p)):
        raise ValueError("points contains NaN or inf (mark missing landmarks with visible=False instead)")
    if v is None:
        v = np.ones(p.shape[:-1], dtype=np.uint8)
    else:
        _check_dtype_kind(v.dtype.kind, "visible", v.dtype, "biu")
        if v.dtype.kind != "b" and v.size and not np.all((v == 0) | (v == 1)):
            raise ValueError("visible must be bool or hold only 0 and 1")
        v = np.ascontiguousarray(v, dtype=np.uint8)
    m = np.ascontiguousarray(m, dtype=np.float32)
    if single:
        m, p, v = m[None], p[None], v[None]
    return m, p, v, single


def sample_landmark_features(maps, points, visible, *, threads: int = 0):
    """DFF descriptors of the landmarks, concatenated into F^(k) (paper Sec. III-C2, eq. 4-5).

    In iteration k of the alignment cascade the DFF map of the image is sampled at the current
    2D landmarks U^(k); the unit C-vectors of the L landmarks are concatenated into
    F^(k) in R^(L*C) (R^5120 for the paper's L = 160 landmarks and C = 32 channels), with the
    components of invisible landmarks set to zero, and F^(k) drives the linear updates of the
    landmarks (eq. 4, X^(k+1) = X^(k) + R_X F^(k) + b_X) and of the camera (eq. 5).

    Per landmark (b, l): it is hidden when ``visible[b, l]`` is False or (x, y) lies outside the
    image's pixel area ``[-0.5, W - 0.5) x [-0.5, H - 0.5)`` (the rule of
    :func:`dffx.landmark_visibility`); a hidden landmark gets C zeros. Otherwise the map is
    interpolated bilinearly at the point clamped to ``[0, W - 1] x [0, H - 1]`` and the C-vector
    is divided by its Euclidean norm (zeros when the norm is below ``MIN_NORM`` = 1e-12).

    Args:
        maps: DFF maps, float (B, C, H, W) or unbatched (C, H, W): NumPy (converted to float32)
            or a torch tensor (CPU or CUDA; float16/bfloat16/float64 are cast to float32). A CPU
            tensor in channels-last memory format (the network's own output,
            ``DFFExtractor.extract(..., copy=False)``) is read in place, without a copy.
        points: (B, L, 2) (or (L, 2) unbatched) landmark positions (x, y) in pixels: 0-based,
            pixel centres at integer coordinates, x right, y down. NumPy or torch (moved to the
            maps' device).
        visible: (B, L) (or (L,)) bool visibility V^(k) (0/1 integers accepted); None means all
            visible (points outside the image still count as hidden).
        threads: CPU threads (0 = all); ignored on CUDA.

    Returns:
        float32 (B, L * C) (or (L * C,) unbatched), landmark-major: ``F[b, l * C + c]``.
        A NumPy array for NumPy maps; a torch tensor on the maps' device for torch maps. With
        torch maps that require grad (and grad mode on), the result is differentiable with
        respect to ``maps`` (native backward; no gradient for the points).

    Raises:
        ValueError: maps not 3-D/4-D or empty (a zero B, C, H or W), a non-floating maps dtype,
            non-numeric points or non-bool/0-1 visible, shapes that do not match (batch
            mismatch, L differs between points and visible), NaN or inf in points.
        RuntimeError: a CUDA tensor was given but dffx was built without CUDA kernels.

    A map whose channels are (3, 4) everywhere gives the unit vector (0.6, 0.8) at any visible
    point inside the image; a hidden point, or one outside the image, gives zeros:

    >>> import numpy as np
    >>> maps = np.stack([np.full((4, 4), 3.0), np.full((4, 4), 4.0)])  # (C=2, H=4, W=4)
    >>> sample_landmark_features(maps, [[1.5, 2.0], [1.0, 1.0], [9.0, 0.0]], [True, False, True])
    array([0.6, 0.8, 0. , 0. , 0. , 0. ], dtype=float32)
    """
    if is_torch(maps):
        return _sample_torch(maps, points, visible, int(threads))
    m, p, v, single = _numpy_inputs(maps, as_numpy(points), as_numpy(visible))
    out = _C.sample_landmark_features(m, p, v, int(threads))
    return out[0] if single else out


def sample_landmark_features_backward(maps, points, visible, grad_features, *, threads: int = 0) -> np.ndarray:
    """Gradient of ``sum(grad_features * sample_landmark_features(maps, points, visible))`` with
    respect to ``maps`` (NumPy, C++ kernel; torch users get it through autograd instead).

    Per visible landmark with norm n >= 1e-12 and f = v / n, dL/dv = (g - f (f . g)) / n is
    scattered into the four bilinear taps. Deterministic (independent of ``threads``).

    Args:
        maps, points, visible: as for :func:`sample_landmark_features` (NumPy or CPU torch).
        grad_features: float (B, L * C) (or (L * C,)) upstream gradient dL/dF.
        threads: CPU threads (0 = all).

    Returns:
        float32 (B, C, H, W) (or (C, H, W)) dL/dmaps.

    Raises:
        ValueError: like :func:`sample_landmark_features`, or grad_features of the wrong shape.
    """
    m, p, v, single = _numpy_inputs(as_numpy(maps), as_numpy(points), as_numpy(visible))
    B, C, _, _ = m.shape
    L = p.shape[1]
    g = np.asarray(as_numpy(grad_features))
    _check_dtype_kind(g.dtype.kind, "grad_features", g.dtype, "fiu")
    want = (L * C,) if single else (B, L * C)
    if g.shape != want:
        raise ValueError(f"grad_features must have shape {want}, got {g.shape}")
    g = np.ascontiguousarray(g, dtype=np.float32).reshape(B, L * C)
    grad = _C.sample_landmark_features_backward(m, p, v, g, int(threads))
    return grad[0] if single else grad


# ------------------------------------------------------------------------------------------ torch
def _torch_kind(t, name: str, allowed: str) -> None:
    import torch

    kind = "b" if t.dtype == torch.bool else ("f" if t.is_floating_point() else ("c" if t.is_complex() else "i"))
    _check_dtype_kind(kind, name, t.dtype, allowed)


def _torch_inputs(maps, points, visible):
    """Validated float32 maps (B, C, H, W), float32 points (B, L, 2), uint8 visible (B, L) on the
    maps' device (maps keeps its autograd history)."""
    import torch

    _torch_kind(maps, "maps", "f")
    single = _check_maps_shape(tuple(maps.shape))
    dev = maps.device
    p = points if isinstance(points, torch.Tensor) else torch.from_numpy(np.asarray(points))
    _torch_kind(p, "points", "fiu")
    v = None
    if visible is not None:
        v = visible if isinstance(visible, torch.Tensor) else torch.from_numpy(np.asarray(visible))
        _torch_kind(v, "visible", "biu")
    _check_points_visible(tuple(maps.shape), single, tuple(p.shape), None if v is None else tuple(v.shape))
    p = p.detach().to(device=dev, dtype=torch.float32).contiguous()
    if not bool(torch.isfinite(p).all()):
        raise ValueError("points contains NaN or inf (mark missing landmarks with visible=False instead)")
    if v is None:
        v = torch.ones(p.shape[:-1], dtype=torch.uint8, device=dev)
    else:
        v = v.detach().to(dev)
        if v.dtype != torch.bool and v.numel() and not bool(((v == 0) | (v == 1)).all()):
            raise ValueError("visible must be bool or hold only 0 and 1")
        v = v.to(torch.uint8).contiguous()
    m = maps.to(torch.float32)
    if single:
        m, p, v = m[None], p[None], v[None]
    return m, p, v, single


def _forward_native(m, p, v, threads: int):
    """float32 (B, C, H, W), (B, L, 2), uint8 (B, L) torch tensors on one device -> (B, L * C)."""
    import torch

    B, C, H, W = m.shape
    L = p.shape[1]
    if m.is_cuda:
        require_cuda_kernels()
        m = m.detach().contiguous()
        out = torch.empty((B, L * C), dtype=torch.float32, device=m.device)
        launch_cuda(_C.sample_landmark_features_cuda, m.device, m, p, v, B, C, H, W, L, out)
        return out
    m = m.detach()
    if not m.is_contiguous() and m.is_contiguous(memory_format=torch.channels_last):
        # The network's channels-last output, read in place: (B, H, W, C) is C-contiguous.
        return torch.from_numpy(_C.sample_landmark_features(m.permute(0, 2, 3, 1).numpy(), p.numpy(), v.numpy(),
                                                            threads, channels_last=True))
    return torch.from_numpy(_C.sample_landmark_features(m.numpy(), p.numpy(), v.numpy(), threads))


def _backward_native(m, p, v, g, threads: int):
    """dL/dmaps (B, C, H, W) float32 for the upstream gradient g (B, L * C), on m's device."""
    import torch

    B, C, H, W = m.shape
    L = p.shape[1]
    g = g.to(torch.float32).contiguous()
    if m.is_cuda:
        require_cuda_kernels()
        m = m.contiguous()
        grad = torch.zeros((B, C, H, W), dtype=torch.float32, device=m.device)
        launch_cuda(_C.sample_landmark_features_backward_cuda, m.device, m, p, v, g, B, C, H, W, L, grad)
        return grad
    return torch.from_numpy(_C.sample_landmark_features_backward(m.numpy(), p.numpy(), v.numpy(), g.numpy(),
                                                                 threads))


@functools.lru_cache(maxsize=None)
def _autograd_function():
    """torch.autograd.Function of the native forward/backward (built lazily: torch is optional)."""
    import torch
    from torch.autograd.function import once_differentiable

    class SampleLandmarkFeatures(torch.autograd.Function):
        @staticmethod
        def forward(ctx, maps, points, visible, threads):
            ctx.save_for_backward(maps, points, visible)
            ctx.threads = threads
            return _forward_native(maps, points, visible, threads)

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_out):
            maps, points, visible = ctx.saved_tensors
            grad = None
            if ctx.needs_input_grad[0]:
                grad = _backward_native(maps.detach(), points, visible, grad_out, ctx.threads)
            return grad, None, None, None

    return SampleLandmarkFeatures


def _sample_torch(maps, points, visible, threads: int):
    import torch

    if maps.is_cuda:
        require_cuda_kernels()
    m, p, v, single = _torch_inputs(maps, points, visible)
    if torch.is_grad_enabled() and m.requires_grad:
        out = _autograd_function().apply(m, p, v, threads)
    else:
        out = _forward_native(m.detach(), p, v, threads)
    return out[0] if single else out
