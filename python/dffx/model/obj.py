"""Minimal Wavefront OBJ reading for ICT-FaceKit meshes (vertex positions and polygon faces)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_obj_vertices(path: Path) -> np.ndarray:
    """Vertex positions of an OBJ file as float32 (N, 3).

    Raises:
        ValueError: the file has no ``v`` lines or a malformed one.
    """
    rows = [line[2:].split()[:3] for line in Path(path).read_text().splitlines() if line.startswith("v ")]
    if not rows:
        raise ValueError(f"{path}: no vertices ('v' lines) in OBJ file")
    try:
        return np.asarray(rows, dtype=np.float32)
    except ValueError as exc:
        raise ValueError(f"{path}: malformed vertex line: {exc}") from None


def read_obj_faces(path: Path) -> list[list[int]]:
    """Polygon faces of an OBJ file as lists of 0-based vertex indices, in file order."""
    faces = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("f "):
            faces.append([int(tok.split("/")[0]) - 1 for tok in line.split()[1:]])
    if not faces:
        raise ValueError(f"{path}: no faces ('f' lines) in OBJ file")
    return faces


def triangulate(polygons: list[list[int]]) -> np.ndarray:
    """Fan-triangulate polygons (quad a,b,c,d -> (a,b,c), (a,c,d)); int32 (F, 3), winding kept."""
    tris = [(poly[0], poly[k], poly[k + 1]) for poly in polygons for k in range(1, len(poly) - 1)]
    return np.asarray(tris, dtype=np.int32)


def write_obj(path, vertices: np.ndarray, triangles: np.ndarray, comment: str | None = None) -> Path:
    """Write a triangle mesh as a Wavefront OBJ file (``v x y z`` lines, then 1-based ``f a b c``).

    Args:
        path: the file to write (its folder must exist).
        vertices: (N, 3) finite float positions, written with 4 decimals.
        triangles: (T, 3) int 0-based vertex indices; the winding is kept.
        comment: optional text written as ``#`` lines at the top.

    Returns:
        the path written.

    Raises:
        ValueError: vertices not (N, 3) finite numbers, or triangles not (T, 3) indices into them.
    """
    vertices = np.asarray(vertices, np.float64)
    triangles = np.asarray(triangles)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0 or not np.isfinite(vertices).all():
        raise ValueError(f"vertices must be a non-empty (N, 3) array of finite numbers, got shape {vertices.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3 or not np.issubdtype(triangles.dtype, np.integer) \
            or triangles.size == 0 or triangles.min() < 0 or triangles.max() >= len(vertices):
        raise ValueError(f"triangles must be a non-empty (T, 3) integer array of indices in [0, {len(vertices)}), "
                         f"got shape {triangles.shape}, dtype {triangles.dtype}")
    lines = [f"# {line}" for line in (comment or "").splitlines()]
    lines += [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in vertices]
    lines += [f"f {a} {b} {c}" for a, b, c in triangles + 1]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
