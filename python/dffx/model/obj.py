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
