"""Random uniform segmentations of the mean face surface (paper Sec. III-B, Fig. 4).

The DFF extractor is trained as a per-pixel classifier against many random segmentations of
the face surface: "we randomly generate 100 uniform segmentations of the mean face model, where
each segmentation consists of 500 patches, and each set is a union of mesh faces ... computing
centroidal Voronoi tessellation on the surface, using random sample points as initial
generators". This module builds them.

Method (a discrete, area-weighted Lloyd iteration on the triangle set):

1. Generators start at ``n_patches`` random surface points: triangles drawn with probability
   proportional to their area, a uniform random barycentric point inside each
   (``np.random.default_rng(seed)``).
2. Each iteration assigns every triangle, represented by its centroid, to the nearest generator,
   moves each generator to the area-weighted centroid of its triangles and snaps it back onto
   the surface (the centroid of a curved patch lies slightly off it): the generator goes to the
   exact closest point on the 8 triangles whose centroids are nearest. (Snapping to the nearest
   triangle centroid instead quantises the generators, stalls Lloyd early and leaves a ~8%
   higher CVT energy and a ~25% higher spread of patch areas on the ICT face.)
   When an iteration leaves every label unchanged the iteration has reached its fixed point and
   stops early (the result is identical to running the remaining iterations).
3. After the last iteration the triangles are assigned once more; that assignment is the result.

Distances are Euclidean in 3D between triangle centroids and generators. For patches this small
(500 patches on ~840 cm^2 of ICT-FaceKit's face region: ~1.7 cm^2 each, radius ~0.7 cm) this is
a good approximation of the geodesic distance, except across narrow gaps in the surface, where
a Euclidean Voronoi cell can take triangles from both sides: on the ICT mean face about 3% of
the 500 patches (~15 per segmentation) are not edge-connected, mostly patches spanning the upper
and lower lip or the two walls of a nostril, plus a few single-triangle islands.

Patch areas are uniform up to a coefficient of variation of ~0.25 (500 patches, 30 iterations):
cells cut by the mesh border, coarse neck and ear triangles (up to 0.3 cm^2, a sixth of a patch)
and cells spanning thin gaps keep it above that of an ideal continuous CVT.

Empty patches never survive: whenever a generator owns no triangle, it is re-seeded at the
centroid of the triangle farthest from its generator inside the largest patch (by area, among
patches with at least two triangles) and that triangle is given to it. Every result therefore
has exactly ``n_patches`` non-empty labels ``0 .. n_patches-1``.

The segmentations of a set form a lookup table ``lut`` of shape (count, F): the label map of
segmentation k for a rendered image is ``lut[k][triangle_id]`` (see :func:`label_map`, which keeps
the background ``-1``). Because labels are defined per mesh face, the same table serves every
face shape S(p) with the mean face's topology, as the paper requires.

Units: vertices in cm, areas in cm^2.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from .._validate import as_float_array, as_index_array

FORMAT_TAG = "dffx-segmentations-v1"
DEFAULT_COUNT = 100      # segmentations per set (paper Sec. III-B)
DEFAULT_PATCHES = 500    # patches per segmentation (paper Sec. III-B)
DEFAULT_ITERATIONS = 30  # Lloyd iterations (500 patches on ICT: ~0.1% of triangles still move at 30)
SNAP_CANDIDATES = 8      # triangles (nearest centroids first) searched when projecting a generator


# --------------------------------------------------------------------------- validation / geometry
def _check_mesh(vertices, triangles) -> tuple[np.ndarray, np.ndarray]:
    v = as_float_array(vertices, "vertices", ndim=2, last=3, dtype=np.float64)
    t = as_index_array(triangles, "triangles", v.shape[0], ndim=2, last=3)
    return v, t


def _check_int(value, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def _check_labels(labels, n_triangles: int, n_patches: int | None, name: str = "labels") -> tuple[np.ndarray, int]:
    arr = np.asarray(labels)
    if arr.ndim not in (1, 2) or arr.shape[-1] != n_triangles:
        raise ValueError(f"{name} must have shape ({n_triangles},) or (K, {n_triangles}), got {arr.shape}")
    if n_patches is None:
        n_patches = int(arr.max()) + 1 if arr.size and np.issubdtype(arr.dtype, np.integer) else 1
    n_patches = _check_int(n_patches, "n_patches", 1)
    return as_index_array(arr, name, n_patches, ndim=arr.ndim), n_patches


def triangle_areas(vertices, triangles) -> np.ndarray:
    """float64 (F,) triangle areas in cm^2 of a (N, 3) cm mesh with (F, 3) vertex indices."""
    v, t = _check_mesh(vertices, triangles)
    return _areas(v, t)


def _areas(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def mesh_hash(triangles) -> str:
    """SHA-1 (hex) of the int32 triangle index array: identifies a mesh topology."""
    t = np.ascontiguousarray(np.asarray(triangles), dtype=np.int32)
    return hashlib.sha1(t.tobytes() + str(t.shape).encode()).hexdigest()


def _closest_point_on_triangles(p, a, b, c) -> np.ndarray:
    """Closest point to p on triangle (a, b, c), row-wise: (M, 3) arrays -> (M, 3).

    Voronoi-region test of Ericson, *Real-Time Collision Detection*, Sec. 5.1.5, vectorised.
    A degenerate (zero-area) triangle whose regions are undefined falls back to its vertex a.
    """
    ab, ac = b - a, c - a

    def dots(x, y):
        return np.einsum("ij,ij->i", x, y)

    ap, bp, cp = p - a, p - b, p - c
    d1, d2 = dots(ab, ap), dots(ac, ap)
    d3, d4 = dots(ab, bp), dots(ac, bp)
    d5, d6 = dots(ab, cp), dots(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        out = a + ab * (vb / denom)[:, None] + ac * (vc / denom)[:, None]          # interior
        m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)                                          # edge ab
        out = np.where(m[:, None], a + ab * (d1 / (d1 - d3))[:, None], out)
        m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)                                          # edge ac
        out = np.where(m[:, None], a + ac * (d2 / (d2 - d6))[:, None], out)
        m = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)                                # edge bc
        out = np.where(m[:, None], b + (c - b) * ((d4 - d3) / ((d4 - d3) + (d5 - d6)))[:, None], out)
    out = np.where(((d1 <= 0) & (d2 <= 0))[:, None], a, out)                          # vertex a
    out = np.where(((d3 >= 0) & (d4 <= d3))[:, None], b, out)                         # vertex b
    out = np.where(((d6 >= 0) & (d5 <= d6))[:, None], c, out)                         # vertex c
    return np.where(np.isfinite(out).all(axis=1)[:, None], out, a)


# --------------------------------------------------------------------------- the Lloyd iteration
class _Mesh:
    """Per-mesh data shared by all segmentations of a set."""

    def __init__(self, v: np.ndarray, t: np.ndarray):
        self.v, self.t = v, t
        self.area = _areas(v, t)
        total = self.area.sum()
        if not total > 0:
            raise ValueError("the mesh has zero total area")
        self.prob = self.area / total
        self.centroid = v[t].mean(axis=1)             # (F, 3)
        self.tree = cKDTree(self.centroid)            # snapping generators onto the surface
        self.F = t.shape[0]

    def sample_points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n uniform random surface points: area-weighted triangle, uniform barycentric point."""
        tri = rng.choice(self.F, size=n, p=self.prob)
        r1, r2 = rng.random(n), rng.random(n)
        s = np.sqrt(r1)
        w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
        return np.einsum("nk,nkd->nd", w, self.v[self.t[tri]])

    def assign(self, generators: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest generator of every triangle centroid: (labels int64 (F,), distances (F,))."""
        dist, labels = cKDTree(generators).query(self.centroid, k=1)
        return labels.astype(np.int64), dist

    def patch_centroids(self, labels: np.ndarray, n: int, fallback: np.ndarray) -> np.ndarray:
        """Area-weighted centroid of every patch; ``fallback`` rows where a patch has zero area."""
        w = np.bincount(labels, weights=self.area, minlength=n)
        sums = np.stack([np.bincount(labels, weights=self.area * self.centroid[:, d], minlength=n)
                         for d in range(3)], axis=1)
        out = fallback.copy()
        ok = w > 0
        out[ok] = sums[ok] / w[ok, None]
        return out

    def snap(self, points: np.ndarray) -> np.ndarray:
        """Project points onto the surface: the closest point on the ``SNAP_CANDIDATES`` triangles
        whose centroids are nearest (exact closest point on each triangle, then the nearest)."""
        k = min(SNAP_CANDIDATES, self.F)
        _, idx = self.tree.query(points, k=k)
        idx = idx.reshape(len(points), k)
        tri = self.t[idx.ravel()]
        q = _closest_point_on_triangles(np.repeat(points, k, axis=0), self.v[tri[:, 0]], self.v[tri[:, 1]],
                                        self.v[tri[:, 2]]).reshape(len(points), k, 3)
        best = np.sum((q - points[:, None]) ** 2, axis=2).argmin(axis=1)
        return q[np.arange(len(points)), best]

    def repair(self, labels: np.ndarray, dist: np.ndarray, generators: np.ndarray, n: int) -> int:
        """Give every empty generator one triangle, in place; returns how many were re-seeded.

        Rule: the empty generator moves to the centroid of the triangle farthest from its
        generator inside the largest patch (by area, among patches with >= 2 triangles; ties go
        to the lowest label) and takes that triangle.
        """
        counts = np.bincount(labels, minlength=n)
        empty = np.flatnonzero(counts == 0)
        if empty.size == 0:
            return 0
        areas = np.bincount(labels, weights=self.area, minlength=n)
        for e in empty:
            big = int(np.argmax(np.where(counts >= 2, areas, -1.0)))   # ties: lowest label
            members = np.flatnonzero(labels == big)
            t = members[np.argmax(dist[members])]
            generators[e] = self.centroid[t]
            labels[t], dist[t] = e, 0.0
            counts[big] -= 1
            counts[e] = 1
            areas[big] -= self.area[t]
            areas[e] = self.area[t]
        return int(empty.size)


def _lloyd(mesh: _Mesh, n_patches: int, seed: int, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels int32 (F,) and final generators float64 (n_patches, 3)."""
    rng = np.random.default_rng(seed)
    generators = mesh.sample_points(n_patches, rng)
    previous = None
    for _ in range(iterations):
        labels, dist = mesh.assign(generators)
        reseeded = mesh.repair(labels, dist, generators, n_patches)
        if not reseeded and previous is not None and np.array_equal(labels, previous):
            break  # fixed point: the generators would not move again, later iterations change nothing
        previous = labels
        generators = mesh.snap(mesh.patch_centroids(labels, n_patches, generators))
    labels, dist = mesh.assign(generators)
    if mesh.repair(labels, dist, generators, n_patches):
        # re-seeded generators sit on a triangle centroid; let them grow one Voronoi step
        labels, dist = mesh.assign(generators)
        mesh.repair(labels, dist, generators, n_patches)
    return labels.astype(np.int32), generators


def _check_segmentation_args(vertices, triangles, n_patches, iterations, seed):
    v, t = _check_mesh(vertices, triangles)
    n_patches = _check_int(n_patches, "n_patches", 1, t.shape[0])
    iterations = _check_int(iterations, "iterations", 0)
    seed = _check_int(seed, "seed", 0)
    return v, t, n_patches, iterations, seed


def centroidal_voronoi_segmentation(vertices, triangles, n_patches: int = DEFAULT_PATCHES, seed: int = 0,
                                    iterations: int = DEFAULT_ITERATIONS) -> np.ndarray:
    """One random uniform segmentation of a mesh surface into patches (paper Sec. III-B).

    Centroidal Voronoi tessellation by area-weighted Lloyd iterations from random surface
    points (see the module docstring for the exact steps). Distances are Euclidean in 3D
    between triangle centroids and generators, a good approximation of geodesic distance for
    patches this small; after each centroid step a generator is projected back onto the surface
    (closest surface point among the triangles with the nearest centroids).

    Args:
        vertices: (N, 3) float vertices, cm (e.g. ``FaceModel.mean``).
        triangles: (F, 3) integer vertex indices.
        n_patches: number of patches, 1 <= n_patches <= F (paper: 500).
        seed: non-negative seed of ``np.random.default_rng`` for the initial generators.
        iterations: Lloyd iterations, >= 0 (0 = the Voronoi cells of the random generators).

    Returns:
        int32 (F,) patch label of every triangle; every label 0..n_patches-1 occurs.
        Deterministic for given inputs and seed.

    Raises:
        ValueError: bad shapes, indices out of range, NaN/inf, zero total area, n_patches outside
            [1, F], negative iterations or seed.
    """
    v, t, n_patches, iterations, seed = _check_segmentation_args(vertices, triangles, n_patches, iterations, seed)
    return _lloyd(_Mesh(v, t), n_patches, seed, iterations)[0]


def random_segmentations(vertices, triangles, count: int = DEFAULT_COUNT, n_patches: int = DEFAULT_PATCHES,
                         seed: int = 0, iterations: int = DEFAULT_ITERATIONS, progress: bool = True) -> np.ndarray:
    """The set of random segmentations used as DFF training targets (paper Sec. III-B).

    Segmentation k is ``centroidal_voronoi_segmentation(..., seed=seed + k)``.

    Args:
        vertices: (N, 3) float vertices, cm.
        triangles: (F, 3) integer vertex indices.
        count: number of segmentations, >= 1 (paper: 100).
        n_patches, seed, iterations: as in :func:`centroidal_voronoi_segmentation`.
        progress: show a tqdm progress bar.

    Returns:
        int32 (count, F) lookup table: ``lut[k][triangle_id]`` is the patch of a triangle in
        segmentation k.
    """
    from tqdm import tqdm

    v, t, n_patches, iterations, seed = _check_segmentation_args(vertices, triangles, n_patches, iterations, seed)
    count = _check_int(count, "count", 1)
    mesh = _Mesh(v, t)
    lut = np.empty((count, t.shape[0]), np.int32)
    for k in tqdm(range(count), desc="segmentations", unit="seg", disable=not progress):
        lut[k] = _lloyd(mesh, n_patches, seed + k, iterations)[0]
    return lut


# --------------------------------------------------------------------------- use and reports
def label_map(lut_row, triangle_id) -> np.ndarray:
    """Per-pixel patch labels of a rendered image: ``lut_row[triangle_id]``, background -1 kept.

    Args:
        lut_row: (F,) integer patch label per triangle (one row of the lookup table).
        triangle_id: integer array of any shape (e.g. (H, W) from :func:`dffx.rasterize`),
            values in [-1, F), -1 = background.

    Returns:
        int32 array of ``triangle_id``'s shape: the patch label, -1 on background.
    """
    row = np.asarray(lut_row)
    if row.ndim != 1 or row.size == 0 or not np.issubdtype(row.dtype, np.integer):
        raise ValueError(f"lut_row must be a non-empty 1-D integer array, got shape {row.shape}, dtype {row.dtype}")
    tid = np.asarray(triangle_id)
    if tid.size and not np.issubdtype(tid.dtype, np.integer):
        raise ValueError(f"triangle_id must hold integers, got dtype {tid.dtype}")
    if tid.size and (tid.min() < -1 or tid.max() >= row.size):
        bad = int(tid.min()) if tid.min() < -1 else int(tid.max())
        raise ValueError(f"triangle_id has value {bad} outside [-1, {row.size})")
    # append -1 so that index -1 (background) reads it
    table = np.append(row.astype(np.int32), np.int32(-1))
    return table[tid]


def patch_areas(vertices, triangles, labels, n_patches: int | None = None) -> np.ndarray:
    """Surface area of every patch.

    Args:
        vertices: (N, 3) cm; triangles: (F, 3).
        labels: (F,) patch label per triangle, or (K, F) for K segmentations.
        n_patches: number of patches (default: max label + 1).

    Returns:
        float64 (n_patches,) or (K, n_patches) areas in cm^2.
    """
    v, t = _check_mesh(vertices, triangles)
    lab, n = _check_labels(labels, t.shape[0], n_patches)
    area = _areas(v, t)
    rows = [np.bincount(r, weights=area, minlength=n) for r in np.atleast_2d(lab)]
    return rows[0] if lab.ndim == 1 else np.stack(rows)


def area_spread(vertices, triangles, labels, n_patches: int | None = None) -> dict:
    """Summary of patch-area uniformity, for reports.

    Args: as :func:`patch_areas`; for (K, F) labels the patch areas of all K segmentations
    are pooled.

    Returns:
        dict with ``n_patches``, ``segmentations`` and, in cm^2, ``min``, ``max``, ``mean``,
        ``std`` of the patch areas, plus ``cv`` (std / mean, the coefficient of variation)
        and ``max_over_min``.
    """
    areas = np.atleast_2d(patch_areas(vertices, triangles, labels, n_patches))
    a = areas.ravel()
    mean = float(a.mean())
    return {"n_patches": int(areas.shape[1]), "segmentations": int(areas.shape[0]),
            "min": float(a.min()), "max": float(a.max()), "mean": mean, "std": float(a.std()),
            "cv": float(a.std() / mean) if mean > 0 else float("nan"),
            "max_over_min": float(a.max() / a.min()) if a.min() > 0 else float("inf")}


def cvt_energy(vertices, triangles, labels, n_patches: int | None = None) -> float:
    """CVT energy of a partition: sum over triangles of area * |centroid - patch centroid|^2.

    The generator of each patch is taken as its area-weighted centroid (the generator that
    minimises the energy for a fixed partition), so the value depends on the labels only.

    Args: as :func:`patch_areas` with (F,) labels.

    Returns:
        energy in cm^4 (float).
    """
    v, t = _check_mesh(vertices, triangles)
    lab, n = _check_labels(labels, t.shape[0], n_patches)
    if lab.ndim != 1:
        raise ValueError(f"labels must have shape ({t.shape[0]},), got {lab.shape}")
    mesh = _Mesh(v, t)
    lab = lab.astype(np.int64)
    centres = mesh.patch_centroids(lab, n, np.zeros((n, 3)))
    return float(np.sum(mesh.area * np.sum((mesh.centroid - centres[lab]) ** 2, axis=1)))


# --------------------------------------------------------------------------- persistence
class SegmentationSet(NamedTuple):
    """A loaded segmentation set.

    lut: int32 (count, F) patch label per triangle and segmentation.
    n_patches: patches per segmentation.
    seeds: int64 (count,) seed of each segmentation, or None when not recorded.
    iterations: Lloyd iterations, or -1 when not recorded.
    n_triangles: F, the triangle count of the segmented mesh.
    mesh_hash: :func:`mesh_hash` of its triangles, or "" when not recorded.
    """

    lut: np.ndarray
    n_patches: int
    seeds: np.ndarray | None
    iterations: int
    n_triangles: int
    mesh_hash: str


def save_segmentations(path: str | os.PathLike, lut, *, n_patches: int | None = None, seeds=None,
                       iterations: int | None = None, triangles=None) -> Path:
    """Write a segmentation set as one compressed .npz.

    Args:
        path: output file (".npz" is appended by NumPy when missing).
        lut: (count, F) integer labels in [0, n_patches).
        n_patches: patches per segmentation (default: max label + 1).
        seeds: (count,) seeds used, optional.
        iterations: Lloyd iterations used, optional.
        triangles: (F, 3) triangles of the segmented mesh, optional; its hash is stored so that
            :func:`load_segmentations` can tell a different mesh with the same triangle count.

    Returns:
        the path written.
    """
    arr = np.asarray(lut)
    if arr.ndim != 2:
        raise ValueError(f"lut must have shape (count, F), got {arr.shape}")
    lab, n = _check_labels(arr, arr.shape[1], n_patches, "lut")
    count, F = lab.shape
    seeds_arr = np.zeros(0, np.int64)
    if seeds is not None:
        seeds_arr = np.asarray(seeds, dtype=np.int64).ravel()
        if seeds_arr.shape != (count,):
            raise ValueError(f"seeds must have shape ({count},), got {seeds_arr.shape}")
    digest = ""
    if triangles is not None:
        tri = np.asarray(triangles)
        if tri.ndim != 2 or tri.shape != (F, 3):
            raise ValueError(f"triangles must have shape ({F}, 3) to match the lut, got {tri.shape}")
        digest = mesh_hash(tri)
    iters = -1 if iterations is None else _check_int(iterations, "iterations", 0)
    path = Path(path)
    np.savez_compressed(path, format=FORMAT_TAG, lut=lab.astype(np.int16 if n <= 32767 else np.int32),
                        n_patches=n, seeds=seeds_arr, iterations=iters, n_triangles=F, mesh_hash=digest)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_segmentations(path: str | os.PathLike, expected_triangles=None) -> SegmentationSet:
    """Read a set written by :func:`save_segmentations`.

    Args:
        path: the .npz file.
        expected_triangles: optional check against the mesh it will be used with: an int (the
            triangle count F) or the (F, 3) triangle array (count and, when stored, hash).

    Returns:
        :class:`SegmentationSet` (lut as int32 (count, F)).

    Raises:
        ValueError: unreadable or foreign file, or a triangle count / mesh hash mismatch.
    """
    path = Path(path)
    try:
        with np.load(path) as d:
            if "format" not in d.files or str(d["format"]) != FORMAT_TAG:
                raise ValueError(f"{path} is not a dffx segmentation set (.npz written by save_segmentations)")
            seeds = d["seeds"].astype(np.int64)
            out = SegmentationSet(lut=d["lut"].astype(np.int32), n_patches=int(d["n_patches"]),
                                  seeds=seeds if seeds.size else None, iterations=int(d["iterations"]),
                                  n_triangles=int(d["n_triangles"]), mesh_hash=str(d["mesh_hash"]))
    except (OSError, KeyError, EOFError) as exc:
        raise ValueError(f"cannot read segmentation set '{path}': {exc}") from None
    if out.lut.ndim != 2 or out.lut.shape[1] != out.n_triangles:
        raise ValueError(f"{path}: corrupt segmentation set (lut shape {out.lut.shape}, {out.n_triangles} triangles)")
    if expected_triangles is not None:
        if np.isscalar(expected_triangles):
            count, digest = int(expected_triangles), ""
        else:
            tri = np.asarray(expected_triangles)
            if tri.ndim != 2 or tri.shape[1] != 3:
                raise ValueError(f"expected_triangles must be an int or an (F, 3) array, got shape {tri.shape}")
            count, digest = tri.shape[0], mesh_hash(tri)
        if count != out.n_triangles:
            raise ValueError(f"{path}: segmentations are for a mesh with {out.n_triangles} triangles, "
                             f"but the expected mesh has {count}")
        if digest and out.mesh_hash and digest != out.mesh_hash:
            raise ValueError(f"{path}: mesh hash mismatch: segmentations were made on a mesh with the same "
                             f"triangle count ({count}) but different triangles "
                             f"({out.mesh_hash[:12]} != {digest[:12]})")
    return out
