"""NumPy front end (ctypes) to dffx's CUDA kernels run by the CPU emulator. Tests only.

``EmulatedKernels(library)`` wraps the library ``build.build()`` makes. Every method takes and
returns C-contiguous NumPy arrays with the dtypes and shapes of the native CPU ops (see
``csrc/include/dffx/*.hpp``) and runs the unchanged host function of ``csrc/cuda`` (size checks,
buffer management, launch configuration, kernels). A ``std::invalid_argument`` from that code
becomes ``ValueError``; an emulator finding (divergent barrier, bad launch) ``RuntimeError``.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import NamedTuple

import numpy as np

ORDERS = {"ascending": 0, "descending": 1, "shuffled": 2}
_i64, _f32, _ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p


class Stats(NamedTuple):
    """Work the emulator did since the last ``reset_stats``."""

    launches: int
    blocks: int
    threads: int
    barriers: int  # block barriers released
    shuffles: int  # warp shuffles released


def _c(array, dtype) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=dtype)


def _unset(shape, dtype) -> np.ndarray:
    """An output buffer whose entries no kernel wrote stay recognisable (NaN, -7, or 7 unsigned)."""
    kind = np.dtype(dtype).kind
    return np.full(shape, np.nan if kind == "f" else 7 if kind == "u" else -7, dtype)


def _p(array: np.ndarray | None):
    return None if array is None else array.ctypes.data_as(_ptr)


class EmulatedKernels:
    """The CUDA host functions of ``dffx::cuda`` on host memory, through the emulator."""

    def __init__(self, library: Path):
        self.lib = ctypes.CDLL(str(library))
        self.lib.dffx_emu_error.restype = ctypes.c_char_p

    # ------------------------------------------------------------------ control
    def configure(self, order: str = "ascending", seed: int = 0, sm_count: int = 132) -> None:
        """Thread / block order (``ascending``, ``descending``, ``shuffled``) and the SM count
        the host code sees (it sizes some grids from it)."""
        self.lib.dffx_emu_configure(ORDERS[order], ctypes.c_uint(seed), sm_count)

    def stats(self) -> Stats:
        out = (ctypes.c_int64 * 5)()
        self.lib.dffx_emu_stats(out)
        return Stats(*out)

    def reset_stats(self) -> None:
        self.lib.dffx_emu_reset_stats()

    def selftest(self, which: int, inputs=None) -> np.ndarray:
        """Run self-test kernel ``which`` of ``selftest.cu``; returns its 512 float outputs
        (NaN where it wrote nothing). Raises RuntimeError with the emulator's finding."""
        inp = _c(np.zeros(512) if inputs is None else inputs, np.float32)
        out = _unset(512, np.float32)
        error = ctypes.c_char_p()
        if self.lib.dffx_emu_selftest(which, _p(inp), _p(out), ctypes.byref(error)) != 0:
            raise RuntimeError(error.value.decode())
        return out

    def _call(self, name: str, *args) -> None:
        status = getattr(self.lib, name)(*args)
        if status == 1:
            raise ValueError(self.lib.dffx_emu_error().decode())
        if status != 0:
            raise RuntimeError(self.lib.dffx_emu_error().decode())

    # ------------------------------------------------------------------ rasterizer
    def rasterize(self, vertices, triangles, size: tuple[int, int]):
        """(B, N, 3) float32 screen vertices, (F, 3) int32 -> depth (B, H, W), triangle_id,
        barycentric (B, H, W, 3), as ``dffx.rasterize``."""
        v, tris = _c(vertices, np.float32), _c(triangles, np.int32)
        (B, N, _), F, (H, W) = v.shape, len(tris), size
        depth = _unset((B, H, W), np.float32)
        tri_id = _unset((B, H, W), np.int32)
        bary = _unset((B, H, W, 3), np.float32)
        self._call("dffx_emu_rasterize", _p(v), _p(tris), _i64(B), _i64(N), _i64(F), _i64(H), _i64(W),
                   _p(depth), _p(tri_id), _p(bary))
        return depth, tri_id, bary

    def landmark_visibility(self, vertices, landmark_index, depth, tolerance: float):
        """(B, N, 3), (L,) int32, depth (B, H, W) -> visible (B, L) bool."""
        v, idx, d = _c(vertices, np.float32), _c(landmark_index, np.int32), _c(depth, np.float32)
        visible = _unset((v.shape[0], len(idx)), np.uint8)
        self._call("dffx_emu_landmark_visibility", _p(v), _p(idx), _i64(len(idx)), _p(d), _i64(v.shape[0]),
                   _i64(v.shape[1]), _i64(d.shape[1]), _i64(d.shape[2]), _f32(tolerance), _p(visible))
        assert np.isin(visible, (0, 1)).all(), "visibility not written for every landmark"
        return visible.astype(bool)

    # ------------------------------------------------------------------ landmark sampling
    def sample(self, maps, points, visible):
        """maps (B, C, H, W), points (B, L, 2), visible (B, L) -> features (B, L * C)."""
        m, p, vis = _c(maps, np.float32), _c(points, np.float32), _c(visible, np.uint8)
        B, C, H, W = m.shape
        L = p.shape[1]
        out = _unset((B, L * C), np.float32)
        self._call("dffx_emu_sample", _p(m), _p(p), _p(vis), _i64(B), _i64(C), _i64(H), _i64(W), _i64(L), _p(out))
        return out

    def sample_backward(self, maps, points, visible, grad_features):
        """dL/dmaps (B, C, H, W) for dL/dfeatures (B, L * C) (zeroed first, then accumulated)."""
        m, p, vis = _c(maps, np.float32), _c(points, np.float32), _c(visible, np.uint8)
        g = _c(grad_features, np.float32)
        B, C, H, W = m.shape
        out = np.zeros_like(m)
        self._call("dffx_emu_sample_backward", _p(m), _p(p), _p(vis), _p(g), _i64(B), _i64(C), _i64(H), _i64(W),
                   _i64(p.shape[1]), _p(out))
        return out

    # ------------------------------------------------------------------ angular-softmax loss
    def angular_softmax_forward(self, features, labels, class_vectors, scale: float):
        """f (N, D), labels (N, K) int32, h (K, C, D) -> loss (K,), correct (K,) int64, lse (K, N)."""
        f, lab, h = _c(features, np.float32), _c(labels, np.int32), _c(class_vectors, np.float32)
        K, C, D = h.shape
        N = f.shape[0]
        loss, correct, lse = _unset(K, np.float32), _unset(K, np.int64), _unset((K, N), np.float32)
        self._call("dffx_emu_angular_softmax_forward", _p(f), _p(lab), _p(h), _i64(N), _i64(K), _i64(C), _i64(D),
                   _f32(scale), _p(loss), _p(correct), _p(lse))
        return loss, correct, lse

    def angular_softmax_backward(self, features, labels, class_vectors, log_sum_exp, grad_loss, scale: float,
                                 need_features: bool = True, need_class_vectors: bool = True):
        """-> (dL/df (N, D) or None, dL/dh (K, C, D) or None) for upstream grad_loss (K,)."""
        f, lab, h = _c(features, np.float32), _c(labels, np.int32), _c(class_vectors, np.float32)
        lse, g = _c(log_sum_exp, np.float32), _c(grad_loss, np.float32)
        K, C, D = h.shape
        N = f.shape[0]
        grad_f = _unset((N, D), np.float32) if need_features else None
        grad_h = _unset((K, C, D), np.float32) if need_class_vectors else None
        self._call("dffx_emu_angular_softmax_backward", _p(f), _p(lab), _p(h), _p(lse), _p(g), _i64(N), _i64(K),
                   _i64(C), _i64(D), _f32(scale), _p(grad_f), _p(grad_h))
        return grad_f, grad_h
