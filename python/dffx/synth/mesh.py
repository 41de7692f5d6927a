"""The face mesh as the synthesizer renders it: the model's triangles plus caps over its holes.

The face region of ICT-FaceKit has three holes: the two eye openings (the eyeballs are not
part of the face region) and the mouth opening. Rendered as they are, a real background
would show through the eyes. Each hole is closed by a fan of triangles around one extra
vertex, the centroid of the hole's boundary loop (a linear function of the shape, so caps
follow identity and expression). Cap pixels are drawn (eyes textured from the photo, the
mouth as a dark interior) but are not model-surface points: their triangle id is -1 in the
stored maps, so no segmentation label lands on them.

The mesh is mirror-symmetric (x -> -x maps vertices onto vertices): ``mirror`` holds that
map, used to texture the side of the face the photo does not show.
"""

from __future__ import annotations

import collections

import numpy as np
import scipy.sparse
from scipy.spatial import cKDTree

MIRROR_TOLERANCE_CM = 0.05


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops of a triangle mesh, longest first: list of int64 vertex index arrays."""
    t = np.asarray(triangles, np.int64)
    edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    undirected, counts = np.unique(np.sort(edges, axis=1), axis=0, return_counts=True)
    neighbours = collections.defaultdict(list)
    for a, b in undirected[counts == 1]:
        neighbours[a].append(b)
        neighbours[b].append(a)
    seen, loops = set(), []
    for start in neighbours:
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in neighbours[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(np.asarray(loop, np.int64))
    return sorted(loops, key=len, reverse=True)


class SynthMesh:
    """Face-model triangles + hole caps, the vertex mirror map and the vertex adjacency.

    Attributes:
        n_model_vertices: n, the model's vertex count.
        n_model_triangles: F, the model's triangle count (ids >= F are caps).
        triangles: int32 (F + F_cap, 3) over the extended vertex list (n + number of holes).
        hole_loops: list of int64 boundary loops (eyes and mouth).
        mouth_hole: index into ``hole_loops`` of the mouth (the lowest hole).
        cap_hole: int64 (F_cap,) which hole each cap triangle closes.
        mirror: int64 (n + holes,) mirror vertex of every extended vertex.
        adjacency: scipy CSR (n + holes, n + holes) 0/1 vertex adjacency (for colour fill).
    """

    def __init__(self, model):
        mean = np.asarray(model.mean, np.float64)
        tris = np.asarray(model.triangles, np.int64)
        self.n_model_vertices = n = len(mean)
        self.n_model_triangles = len(tris)
        loops = boundary_loops(tris)
        self.hole_loops = loops[1:]  # the longest loop is the outer border of the face region
        if not self.hole_loops:
            raise ValueError("the face mesh has no holes to cap (expected eyes and mouth)")
        centroids = np.array([mean[loop].mean(0) for loop in self.hole_loops])
        self.mouth_hole = int(np.argmin(centroids[:, 1]))
        caps, cap_hole = [], []
        for h, loop in enumerate(self.hole_loops):
            fan = np.stack([loop, np.roll(loop, -1), np.full(len(loop), n + h)], axis=1)
            # orient the fan like the face (counter-clockwise seen from the front: +z normal)
            a, b, c = (mean_ext := np.vstack([mean, centroids]))[fan[:, 0]], mean_ext[fan[:, 1]], mean_ext[fan[:, 2]]
            if np.cross(b - a, c - a)[:, 2].sum() < 0:
                fan = fan[:, [1, 0, 2]]
            caps.append(fan)
            cap_hole.append(np.full(len(loop), h))
        self.triangles = np.ascontiguousarray(np.vstack([tris] + caps), dtype=np.int32)
        self.cap_hole = np.concatenate(cap_hole)
        ext = np.vstack([mean, centroids])
        dist, mirror = cKDTree(ext).query(ext * np.array([-1.0, 1.0, 1.0]))
        if np.max(dist) > MIRROR_TOLERANCE_CM:
            raise ValueError(f"the face mesh is not mirror-symmetric (worst mismatch {np.max(dist):.3f} cm)")
        self.mirror = mirror.astype(np.int64)
        e = self.triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
        m = len(ext)
        adj = scipy.sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(m, m)).tocsr()
        self.adjacency = ((adj + adj.T) > 0).astype(np.float64).tocsr()

    @property
    def n_vertices(self) -> int:
        """Extended vertex count: model vertices + one centroid per hole."""
        return self.n_model_vertices + len(self.hole_loops)

    def extend(self, vertices: np.ndarray) -> np.ndarray:
        """(n, 3) model-space or screen-space shape -> (n + holes, 3) with the hole centroids appended.

        Centroids commute with the (affine) weak-perspective projection, so this works on
        either side of :func:`dffx.project`.
        """
        v = np.asarray(vertices)
        if v.ndim != 2 or v.shape != (self.n_model_vertices, 3):
            raise ValueError(f"vertices must have shape ({self.n_model_vertices}, 3), got {v.shape}")
        return np.vstack([v, np.array([v[loop].mean(0) for loop in self.hole_loops], dtype=v.dtype)])

    def vertex_normals(self, vertices: np.ndarray) -> np.ndarray:
        """float32 (m, 3) unit area-weighted vertex normals of an extended (m, 3) shape."""
        v = np.asarray(vertices, np.float64)
        t = self.triangles
        fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
        normals = np.zeros_like(v)
        for k in range(3):
            np.add.at(normals, t[:, k], fn)
        return (normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def fill_colours(self, colours: np.ndarray, known: np.ndarray, iterations: int = 60) -> np.ndarray:
        """Fill unknown per-vertex colours: mirror first, then diffusion from known neighbours.

        Args:
            colours: (m, 3) float colours; rows where ``known`` is False are ignored.
            known: (m,) bool.
            iterations: neighbour-averaging sweeps for what the mirror does not cover.

        Returns:
            float32 (m, 3); vertices no known colour reaches get the mean known colour.
        """
        c = np.asarray(colours, np.float64).copy()
        known = np.asarray(known, bool).copy()
        if not known.any():
            raise ValueError("no vertex has a known colour")
        use_mirror = ~known & known[self.mirror]
        c[use_mirror] = c[self.mirror[use_mirror]]
        known |= use_mirror
        c[~known] = 0.0
        for _ in range(iterations):
            if known.all():
                break
            w = self.adjacency @ known.astype(np.float64)
            s = self.adjacency @ (c * known[:, None])
            grow = ~known & (w > 0)
            c[grow] = s[grow] / w[grow, None]
            known |= grow
        c[~known] = c[known].mean(0)
        return c.astype(np.float32)
