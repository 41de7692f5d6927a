"""Readable NumPy reference twins of the native ops. Tests compare every backend with these.

The rasterizer twin evaluates the same float32 expressions in the same order as
csrc/common/raster_math.hpp (NumPy never fuses multiply-adds), so C++, CUDA and this twin
agree bit for bit; the shape-fit twin solves the same normal equations in float64.
"""

from __future__ import annotations

import numpy as np

from ..geometry.camera import rotation_matrix

f32 = np.float32


def _pixel_span(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel-centre range [first, last] covered by [lo, hi], clipped to [0, n-1]."""
    a = np.clip(lo, f32(0), f32(n))
    b = np.clip(hi, f32(-1), f32(n - 1))
    first = np.ceil(a).astype(np.int64)
    last = np.where(b < 0, -1, np.floor(b)).astype(np.int64)
    return first, last


def rasterize_reference(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int):
    """Twin of ``dffx._C.rasterize``: (B, N, 3) float32, (F, 3) int32 -> depth, triangle_id, barycentric.

    Same contract as :func:`dffx.ops.rasterize` (larger depth wins, ties -> smaller index,
    -inf / -1 / 0 for background). Vectorised over fragments: every pixel centre in every
    triangle's bounding box is one candidate fragment.
    """
    vertices = np.asarray(vertices, dtype=f32)
    triangles = np.asarray(triangles, dtype=np.int64)
    B = vertices.shape[0]
    depth = np.full((B, height, width), -np.inf, dtype=f32)
    tri_id = np.full((B, height, width), -1, dtype=np.int32)
    bary = np.zeros((B, height, width, 3), dtype=f32)
    for b in range(B):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow covers nothing, as in C++
            _rasterize_one(vertices[b], triangles, depth[b], tri_id[b], bary[b])
    return depth, tri_id, bary


def _rasterize_one(vertices, triangles, depth, tri_id, bary):
    """Rasterize one mesh into the given (H, W) buffers (see rasterize_reference)."""
    height, width = depth.shape
    v = vertices[triangles]  # (F, 3 corners, 3 coords)
    x0, y0, z0 = v[:, 0, 0], v[:, 0, 1], v[:, 0, 2]
    x1, y1, z1 = v[:, 1, 0], v[:, 1, 1], v[:, 1, 2]
    x2, y2, z2 = v[:, 2, 0], v[:, 2, 1], v[:, 2, 2]
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    xf, xl = _pixel_span(np.minimum(np.minimum(x0, x1), x2), np.maximum(np.maximum(x0, x1), x2), width)
    yf, yl = _pixel_span(np.minimum(np.minimum(y0, y1), y2), np.maximum(np.maximum(y0, y1), y2), height)
    nx, ny = np.maximum(xl - xf + 1, 0), np.maximum(yl - yf + 1, 0)
    count = np.where(area != 0, nx * ny, 0)
    f = np.repeat(np.arange(len(triangles)), count)
    k = np.arange(f.size) - np.repeat(np.cumsum(count) - count, count)  # index inside each bbox
    px = (xf[f] + k % nx[f]).astype(f32)
    py = (yf[f] + k // nx[f]).astype(f32)
    X0, Y0, Z0, X1, Y1, Z1, X2, Y2, Z2, A = (t[f] for t in (x0, y0, z0, x1, y1, z1, x2, y2, z2, area))
    w0 = (X2 - X1) * (py - Y1) - (Y2 - Y1) * (px - X1)
    w1 = (X0 - X2) * (py - Y2) - (Y0 - Y2) * (px - X2)
    w2 = (X1 - X0) * (py - Y0) - (Y1 - Y0) * (px - X0)
    inside = np.where(A > 0, (w0 >= 0) & (w1 >= 0) & (w2 >= 0), (w0 <= 0) & (w1 <= 0) & (w2 <= 0))
    f, px, py, w0, w1, w2, Z0, Z1, Z2, A = (t[inside] for t in (f, px, py, w0, w1, w2, Z0, Z1, Z2, A))
    if f.size == 0:
        return
    b0, b1, b2 = w0 / A, w1 / A, w2 / A
    z = (b0 * Z0 + b1 * Z1) + b2 * Z2 + f32(0)
    pix = py.astype(np.int64) * width + px.astype(np.int64)
    order = np.lexsort((f, -z, pix))  # per pixel: largest depth first, then smallest index
    first = order[np.r_[True, pix[order][1:] != pix[order][:-1]]]
    flat_depth, flat_id, flat_bary = depth.reshape(-1), tri_id.reshape(-1), bary.reshape(-1, 3)
    flat_depth[pix[first]] = z[first]
    flat_id[pix[first]] = f[first]
    flat_bary[pix[first]] = np.stack([b0[first], b1[first], b2[first]], axis=1)


def landmark_visibility_reference(vertices: np.ndarray, landmark_index: np.ndarray, depth: np.ndarray,
                                  tolerance: float) -> np.ndarray:
    """Twin of ``dffx._C.landmark_visibility``: (B, N, 3), (L,), (B, H, W) -> bool (B, L)."""
    vertices = np.asarray(vertices, dtype=f32)
    q = vertices[:, np.asarray(landmark_index, dtype=np.int64)]  # (B, L, 3)
    B, H, W = depth.shape
    x, y = q[..., 0], q[..., 1]
    inside = (x >= f32(-0.5)) & (x < f32(W) - f32(0.5)) & (y >= f32(-0.5)) & (y < f32(H) - f32(0.5))
    fx = np.floor(np.where(inside, x, 0)).astype(np.int64)
    fy = np.floor(np.where(inside, y, 0)).astype(np.int64)
    xa, xb = np.clip(fx, 0, W - 1), np.clip(fx + 1, 0, W - 1)
    ya, yb = np.clip(fy, 0, H - 1), np.clip(fy + 1, 0, H - 1)
    bi = np.arange(B)[:, None]
    front = np.minimum.reduce([depth[bi, ya, xa], depth[bi, ya, xb], depth[bi, yb, xa], depth[bi, yb, xb]])
    return inside & (q[..., 2] + f32(tolerance) >= front)


def mesh_landmark_visibility_reference(vertices: np.ndarray, triangles: np.ndarray, landmark_index: np.ndarray,
                                       height: int, width: int, tolerance: float) -> np.ndarray:
    """Twin of ``dffx._C.mesh_landmark_visibility``: the full depth buffer, then the visibility test."""
    depth = rasterize_reference(vertices, triangles, height, width)[0]
    return landmark_visibility_reference(vertices, landmark_index, depth, tolerance)


def _normal_equations(mean, basis, target, weight, camera, scale):
    """A^T C A and A^T C r of one image (A = dY/dp, r = X - Y(w, 0)), float64."""
    R = rotation_matrix(camera[1], camera[2], camera[3])
    s, t = float(camera[0]), np.array([camera[4], camera[5]], np.float64)
    flip = np.array([1.0, -1.0])
    proj = s * flip * (mean.astype(np.float64) @ R[:2].T) + t                  # (L, 2)
    A = s * flip[None, :, None] * np.einsum("ij,ljm->lim", R[:2], basis.astype(np.float64))  # (L, 2, M)
    c = scale * (np.ones(len(mean)) if weight is None else np.asarray(weight, np.float64))
    A2 = A.reshape(-1, A.shape[2])
    cw = np.repeat(c, 2)
    r = (np.asarray(target, np.float64) - proj).reshape(-1)
    return A2.T @ (cw[:, None] * A2), A2.T @ (cw * r)


def fit_shape_reference(mean, basis, prior_variance, targets, landmark_weights, cameras, w_lan=1.0, w_reg=1.0):
    """Twin of ``dffx._C.fit_shape`` (eq. 6-8): returns float64 (B, M)."""
    out = []
    for b in range(len(targets)):
        AtA, Atr = _normal_equations(mean, basis, targets[b], None if landmark_weights is None
                                     else landmark_weights[b], cameras[b], w_lan)
        out.append(np.linalg.solve(AtA + np.diag(w_reg / np.asarray(prior_variance, np.float64)), Atr))
    return np.stack(out)


def fit_shared_shape_reference(mean, basis, prior_variance, targets, landmark_weights, cameras, w_lan=1.0,
                               w_reg=1.0):
    """Twin of ``dffx._C.fit_shared_shape`` (eq. 11): returns float64 (M,)."""
    M = basis.shape[2]
    AtA, Atr = np.zeros((M, M)), np.zeros(M)
    for i in range(len(targets)):
        a, r = _normal_equations(mean, basis, targets[i], None if landmark_weights is None
                                 else landmark_weights[i], cameras[i], w_lan / len(targets))
        AtA += a
        Atr += r
    return np.linalg.solve(AtA + np.diag(w_reg / np.asarray(prior_variance, np.float64)), Atr)


def _landmark_taps(points: np.ndarray, visible: np.ndarray, height: int, width: int):
    """Bilinear taps of (B, L) landmarks: active mask, x0, x1, y0, y1 (int64) and ax, ay (float32)."""
    x, y = points[..., 0], points[..., 1]
    inside = (x >= f32(-0.5)) & (x < f32(width) - f32(0.5)) & (y >= f32(-0.5)) & (y < f32(height) - f32(0.5))
    active = np.asarray(visible, dtype=bool) & inside
    xc = np.minimum(np.maximum(x, f32(0)), f32(width - 1))
    yc = np.minimum(np.maximum(y, f32(0)), f32(height - 1))
    x0, y0 = np.floor(xc).astype(np.int64), np.floor(yc).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    return active, x0, x1, y0, y1, xc - x0.astype(f32), yc - y0.astype(f32)


def _sample_unnormalised(maps, x0, x1, y0, y1, ax, ay):
    """(B, L, C) bilinear values v in the C++ kernel's order (float32)."""
    bi = np.arange(maps.shape[0])[:, None]
    m = np.moveaxis(maps, 1, -1)  # (B, H, W, C) view
    ax, ay = ax[..., None], ay[..., None]
    bx, by = f32(1) - ax, f32(1) - ay
    return by * (bx * m[bi, y0, x0] + ax * m[bi, y0, x1]) + ay * (bx * m[bi, y1, x0] + ax * m[bi, y1, x1])


def _sequential_norm(v: np.ndarray) -> np.ndarray:
    """sqrt of the sum of squares over the last axis, summed channel by channel like the C++ kernel."""
    ss = np.zeros(v.shape[:-1], dtype=f32)
    for c in range(v.shape[-1]):
        ss = ss + v[..., c] * v[..., c]
    return np.sqrt(ss)


def sample_landmark_features_reference(maps: np.ndarray, points: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Twin of ``dffx._C.sample_landmark_features`` (paper Sec. III-C2, F^(k)).

    maps (B, C, H, W) float32, points (B, L, 2) float32 pixels (x, y), visible (B, L) bool
    -> features float32 (B, L * C), landmark-major. A landmark outside ``[-0.5, W - 0.5) x
    [-0.5, H - 0.5)`` or with ``visible`` False gets zeros; otherwise the bilinear sample at the
    point clamped to ``[0, W - 1] x [0, H - 1]``, divided by its norm (zeros when the norm is
    below 1e-12). Same float32 expressions as csrc/cpu/sampling.cpp.
    """
    maps = np.asarray(maps, dtype=f32)
    points = np.asarray(points, dtype=f32)
    B, C, H, W = maps.shape
    L = points.shape[1]
    active, x0, x1, y0, y1, ax, ay = _landmark_taps(points, visible, H, W)
    v = _sample_unnormalised(maps, x0, x1, y0, y1, ax, ay)        # (B, L, C)
    n = _sequential_norm(v)[..., None]
    keep = active[..., None] & (n >= f32(1e-12))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(keep, v / np.where(keep, n, f32(1)), f32(0))
    return f.astype(f32).reshape(B, L * C)


def sample_landmark_features_backward_reference(maps: np.ndarray, points: np.ndarray, visible: np.ndarray,
                                                grad_features: np.ndarray) -> np.ndarray:
    """Twin of ``dffx._C.sample_landmark_features_backward``: dL/dmaps (B, C, H, W) float32.

    Per active landmark with norm n >= 1e-12 and f = v / n: dL/dv = (g - f (f . g)) / n,
    scattered with the four bilinear weights; taps are added landmark by landmark in the
    order 00, 01, 10, 11 (``np.add.at`` is unbuffered), like the C++ kernel.
    """
    maps = np.asarray(maps, dtype=f32)
    points = np.asarray(points, dtype=f32)
    B, C, H, W = maps.shape
    L = points.shape[1]
    g = np.asarray(grad_features, dtype=f32).reshape(B, L, C)
    active, x0, x1, y0, y1, ax, ay = _landmark_taps(points, visible, H, W)
    v = _sample_unnormalised(maps, x0, x1, y0, y1, ax, ay)
    n = _sequential_norm(v)
    active = active & (n >= f32(1e-12))
    grad = np.zeros((B, C, H, W), dtype=f32)
    for b in range(B):
        ls = np.nonzero(active[b])[0]
        if ls.size == 0:
            continue
        nb = n[b, ls][:, None]
        fb = v[b, ls] / nb                                          # (K, C)
        dot = np.zeros(ls.size, dtype=f32)
        for c in range(C):
            dot = dot + fb[:, c] * g[b, ls, c]
        gv = (g[b, ls] - fb * dot[:, None]) / nb                    # (K, C)
        axb, ayb = ax[b, ls], ay[b, ls]
        bx, by = f32(1) - axb, f32(1) - ayb
        weights = np.stack([by * bx, by * axb, ayb * bx, ayb * axb], axis=1)                  # (K, 4)
        pix = np.stack([y0[b, ls] * W + x0[b, ls], y0[b, ls] * W + x1[b, ls],
                        y1[b, ls] * W + x0[b, ls], y1[b, ls] * W + x1[b, ls]], axis=1)       # (K, 4)
        flat = grad[b].reshape(C, H * W)
        for c in range(C):
            np.add.at(flat[c], pix.reshape(-1), (weights * gv[:, c:c + 1]).reshape(-1))
    return grad
