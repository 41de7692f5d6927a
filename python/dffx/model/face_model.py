"""The parametric face model of paper eq. 3, built from ICT-FaceKit.

    S(p) = S_mean + A_id p_id + A_exp p_exp

Model space: centimetres, x to the subject's left, y up, z towards the viewer.

* Face region: vertices 0-9408 of ICT-FaceKit and its first 9230 polygons (all quads),
  fan-triangulated into 18460 triangles. The rest of the head (back of head, mouth and eye
  sockets, teeth, eyeballs) is dropped: alignment only sees the face.
* Identity: ICT's identity modes are absolute shapes at +1 standard deviation, so
  ``A_id[:, k] = identity_k - neutral`` and p_id ~ N(0, 1): D_id = I (eq. 8).
* Expression: ICT's blendshapes are absolute shapes at full activation, ``A_exp[:, j] =
  blendshape_j - neutral``, weights nominally in [0, 1]. Blendshapes are not PCA modes and
  have no eigenvalues, so D_exp is a chosen prior variance per weight, by default 1 for every
  blendshape: a full activation costs as much as a 1-sd identity change. Blendshapes that move
  no face-region vertex by more than 0.01 cm (ICT's PupilDilate_L/R) are left out.
* Landmarks: ``landmarks68`` are ICT's 68 Multi-PIE vertices (iBUG order, from
  vertex_indices.json); ``landmarks160`` starts with them and adds 92 vertices of the narrow
  face area (0-6705) by farthest-point sampling (paper Fig. 7).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import _blas
from .._validate import as_float_array
from ..config import HOW_TO_GET_ICT, cache_dir, face_model_path
from ..errors import ModelNotFoundError
from .landmarks import dense_landmarks
from .obj import read_obj_faces, read_obj_vertices, triangulate

FACE_VERTEX_COUNT = 9409       # ICT vertices 0-9408 form the face region
FACE_POLYGON_COUNT = 9230      # ICT polygons 0-9229 belong to the face region
NARROW_FACE_VERTEX_COUNT = 6706  # vertices 0-6705: the narrow face area (dense landmarks)
DEFAULT_IDENTITY_MODES = 80    # m1 of the paper
MIN_EXPRESSION_DISPLACEMENT_CM = 0.01
FORMAT_TAG = "dffx-face-model-v1"


@dataclass(frozen=True)
class FaceModel:
    """A linear 3D morphable face model restricted to the face region (eq. 3).

    Attributes:
        mean: float32 (n, 3) mean (neutral) shape S_mean, cm.
        triangles: int32 (F, 3) vertex indices, counter-clockwise seen from the front.
        identity_basis: float32 (n, 3, m1) A_id, cm per unit coefficient.
        expression_basis: float32 (n, 3, m2) A_exp, cm per unit blendshape weight.
        identity_variance: float32 (m1,) diagonal of D_id.
        expression_variance: float32 (m2,) diagonal of D_exp.
        landmarks68: int64 (68,) vertex indices in iBUG order.
        landmarks160: int64 (160,) vertex indices; the first 68 equal ``landmarks68``.
        identity_names, expression_names: names of the basis columns.
        source: where the model was loaded from.
    """

    mean: np.ndarray
    triangles: np.ndarray
    identity_basis: np.ndarray
    expression_basis: np.ndarray
    identity_variance: np.ndarray
    expression_variance: np.ndarray
    landmarks68: np.ndarray
    landmarks160: np.ndarray
    identity_names: tuple[str, ...]
    expression_names: tuple[str, ...]
    source: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ sizes
    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_identity(self) -> int:
        return self.identity_basis.shape[2]

    @property
    def n_expression(self) -> int:
        return self.expression_basis.shape[2]

    @property
    def n_params(self) -> int:
        """M = m1 + m2, the length of p = (p_id, p_exp)."""
        return self.n_identity + self.n_expression

    @property
    def basis(self) -> np.ndarray:
        """float32 (n, 3, M): [A_id | A_exp], the basis of p = (p_id, p_exp)."""
        if "basis" not in self._cache:
            self._cache["basis"] = np.ascontiguousarray(
                np.concatenate([self.identity_basis, self.expression_basis], axis=2))
        return self._cache["basis"]

    @property
    def prior_variance(self) -> np.ndarray:
        """float32 (M,): the diagonal of blockdiag(D_id, D_exp) of eq. 8."""
        return np.concatenate([self.identity_variance, self.expression_variance]).astype(np.float32)

    # ------------------------------------------------------------------ eq. 3
    def _split_params(self, p_id, p_exp):
        def prep(p, m, name):
            if p is None:
                return None
            arr = as_float_array(p, name, last=m)
            if arr.ndim > 2:
                raise ValueError(f"{name} must have shape ({m},) or (B, {m}), got {arr.shape}")
            return arr
        return prep(p_id, self.n_identity, "p_id"), prep(p_exp, self.n_expression, "p_exp")

    def shape(self, p_id=None, p_exp=None) -> np.ndarray:
        """Evaluate eq. 3 in NumPy (one matrix product on one BLAS thread, ``dffx._blas``).

        Args:
            p_id: (m1,) or (B, m1) identity coefficients, or None for zeros.
            p_exp: (m2,) or (B, m2) blendshape weights, or None for zeros.

        Returns:
            float32 (n, 3) when every given parameter is 1-D (or none is given), else (B, n, 3); cm.

        Raises:
            ValueError: wrong length, NaN/inf, or batch sizes that differ.
        """
        pid, pex = self._split_params(p_id, p_exp)
        batched = any(p is not None and p.ndim == 2 for p in (pid, pex))
        rows = self.basis_rows
        m1 = self.n_identity
        out = self.mean.reshape(1, -1).astype(np.float32)  # a copy: callers may modify the result
        with _blas.single_threaded_blas():  # see dffx._blas: BLAS threads would slow the network
            for p, A in ((pid, rows[:m1]), (pex, rows[m1:])):
                if p is not None:
                    out = out + p.reshape(-1, A.shape[0]) @ A  # (B, m) @ (m, 3n): one BLAS call
        if batched and out.shape[0] == 1 and any(p is not None and p.ndim == 2 and p.shape[0] != 1 for p in (pid, pex)):
            raise ValueError("p_id and p_exp batch sizes differ")
        out = out.reshape(-1, self.n_vertices, 3)
        return out if batched else out[0]

    @property
    def basis_rows(self) -> np.ndarray:
        """float32 (M, 3n): [A_id | A_exp] with one row per parameter, so that S(p) is a single
        matrix product (about twice as fast as an einsum over the (n, 3, M) layout)."""
        if "basis_rows" not in self._cache:
            self._cache["basis_rows"] = np.ascontiguousarray(self.basis.reshape(-1, self.n_params).T)
        return self._cache["basis_rows"]

    def shape_torch(self, p_id=None, p_exp=None):
        """Torch twin of :meth:`shape`: (B, m1) / (B, m2) tensors -> (B, n, 3), differentiable.

        The bases are moved to the parameters' device and dtype on first use (and cached).
        """
        import torch

        ref = p_id if p_id is not None else p_exp
        if ref is None:
            return torch.from_numpy(self.mean).unsqueeze(0)
        key = ("torch", ref.device, ref.dtype)
        if key not in self._cache:
            self._cache[key] = tuple(torch.as_tensor(a, device=ref.device, dtype=ref.dtype)
                                     for a in (self.mean, self.identity_basis, self.expression_basis))
        mean, a_id, a_exp = self._cache[key]
        out = mean.unsqueeze(0)
        if p_id is not None:
            out = out + torch.einsum("nkm,bm->bnk", a_id, p_id.reshape(-1, self.n_identity))
        if p_exp is not None:
            out = out + torch.einsum("nkm,bm->bnk", a_exp, p_exp.reshape(-1, self.n_expression))
        return out

    def landmark_model(self, indices=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model restricted to landmark vertices, as the shape fit (eq. 6-8) needs it.

        Args:
            indices: (L,) vertex indices; default ``landmarks68``.

        Returns:
            (mean (L, 3), basis (L, 3, M), prior_variance (M,)), all float32 C-contiguous.
        """
        idx = self.landmarks68 if indices is None else np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= self.n_vertices:
            raise ValueError(f"landmark indices must be a non-empty (L,) array in [0, {self.n_vertices})")
        return (np.ascontiguousarray(self.mean[idx]), np.ascontiguousarray(self.basis[idx]), self.prior_variance)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as one compressed .npz (our compact format; ~15 MB for 80 + 55 modes)."""
        path = Path(path)
        np.savez_compressed(
            path, format=FORMAT_TAG, mean=self.mean, triangles=self.triangles,
            identity_basis=self.identity_basis, expression_basis=self.expression_basis,
            identity_variance=self.identity_variance, expression_variance=self.expression_variance,
            landmarks68=self.landmarks68, landmarks160=self.landmarks160,
            identity_names=np.asarray(self.identity_names), expression_names=np.asarray(self.expression_names))
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_face_model(path: str | os.PathLike | None = None, n_identity: int = DEFAULT_IDENTITY_MODES,
                    expression_variance: float = 1.0) -> FaceModel:
    """Load the face model from ICT-FaceKit or from a .npz written by :meth:`FaceModel.save`.

    Accepted layouts (auto-detected):

    * ICT-FaceKit as published: a ``FaceXModel`` folder (or its parent) with
      ``generic_neutral_mesh.obj``, ``identity000.obj`` ... and one ``.obj`` per expression,
      plus ``vertex_indices.json``. The first load parses the OBJ files (seconds) and caches
      their vertices in :func:`dffx.config.cache_dir` (``$DFFX_CACHE_DIR``, ~50 MB; an empty
      value turns it off); later loads read the cache until an ``.obj`` file changes;
    * the repacked layout of ``../shared/data/ict-facekit``: ``shapes.npz`` +
      ``generic_neutral_mesh.obj`` + ``vertex_indices.json``;
    * a ``.npz`` file from :meth:`FaceModel.save` (``n_identity``/``expression_variance`` ignored).

    Args:
        path: file or folder; None reads ``$DFFX_FACE_MODEL``.
        n_identity: m1, the number of identity modes kept (1..available, default 80).
        expression_variance: the diagonal value of D_exp (> 0).

    Raises:
        ModelNotFoundError: no path configured, the path is missing, or the folder has none of
            the expected files (the message says how to obtain ICT-FaceKit).
        ValueError: bad n_identity / expression_variance, or inconsistent model files.
    """
    root = face_model_path(path)
    if root.is_file():
        return _load_npz(root)
    if (root / "FaceXModel").is_dir():
        root = root / "FaceXModel"
    if n_identity < 1:
        raise ValueError(f"n_identity must be >= 1, got {n_identity}")
    if not expression_variance > 0:
        raise ValueError(f"expression_variance must be > 0, got {expression_variance}")
    if (root / "shapes.npz").is_file():
        try:
            arrays = _read_repacked(root / "shapes.npz")
        except Exception as exc:  # noqa: BLE001 - BadZipFile, pickle refusal, missing keys, bad CRC, ...
            raise ValueError(f"cannot read face model '{root / 'shapes.npz'}' (damaged or not ICT-FaceKit's "
                             f"repacked shapes): {type(exc).__name__}: {exc}") from None
    elif (root / "identity000.obj").is_file():
        arrays = _read_published_cached(root)
    else:
        raise ModelNotFoundError(
            f"'{root}' holds no ICT-FaceKit model (expected shapes.npz or identity000.obj next to "
            f"generic_neutral_mesh.obj and vertex_indices.json). {HOW_TO_GET_ICT}")
    return _build(root, *arrays, n_identity=n_identity, expression_variance=expression_variance)


def _require(root: Path, name: str) -> Path:
    f = root / name
    if not f.is_file():
        raise ModelNotFoundError(f"face model file missing: '{f}'. {HOW_TO_GET_ICT}")
    return f


def _read_repacked(path: Path):
    """(neutral, identity, identity names, expression, expression names) of a shapes.npz."""
    with np.load(path) as d:
        return (d["neutral"], d["identity"], [str(s) for s in d["identity_names"]],
                d["expression"], [str(s) for s in d["expression_names"]])


# Bump when the cached arrays change meaning, so that old cache files are not read.
_PUBLISHED_CACHE_VERSION = 1


def _published_cache_path(root: Path) -> Path | None:
    """The cache file for a published FaceXModel folder: named by a hash of the folder's path
    and of every .obj file's name, size and modification time, so that an edited model is
    parsed again. None when caching is off."""
    folder = cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(f"{_PUBLISHED_CACHE_VERSION}|{root.resolve()}".encode())
    for f in sorted(root.glob("*.obj")):
        stat = f.stat()
        digest.update(f"|{f.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return folder / f"ict-facexmodel-{digest.hexdigest()[:20]}.npz"


def _read_published_cached(root: Path):
    """:func:`_read_published`, through a cache in :func:`dffx.config.cache_dir` in the shapes.npz
    layout: parsing the 157 OBJ files of the published model takes seconds (4.2 s here), reading
    the cache about 0.2 s. A cache that cannot be read is ignored; one that cannot be written is
    skipped."""
    cached = _published_cache_path(root)
    if cached is not None and cached.is_file():
        try:
            return _read_repacked(cached)
        except Exception:  # noqa: BLE001 - truncated zip, foreign keys, ...: parse again, overwrite it
            pass
    arrays = _read_published(root)
    if cached is not None:
        neutral, identity, identity_names, expression, expression_names = arrays
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.npz")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(partial, neutral=neutral, identity=identity, identity_names=np.asarray(identity_names),
                     expression=expression, expression_names=np.asarray(expression_names))
            os.replace(partial, cached)
        except OSError:  # read-only or full: work without the cache
            with contextlib.suppress(OSError):
                partial.unlink()
    return arrays


def _read_published(root: Path):
    neutral = read_obj_vertices(_require(root, "generic_neutral_mesh.obj"))
    id_files = sorted(root.glob("identity[0-9][0-9][0-9].obj"))
    exp_files = sorted(f for f in root.glob("*.obj")
                       if f.name != "generic_neutral_mesh.obj" and f not in id_files)
    identity = np.stack([read_obj_vertices(f) for f in id_files])
    expression = (np.stack([read_obj_vertices(f) for f in exp_files]) if exp_files
                  else np.zeros((0,) + neutral.shape, np.float32))
    return neutral, identity, [f.stem for f in id_files], expression, [f.stem for f in exp_files]


def _build(root: Path, neutral, identity, identity_names, expression, expression_names, *,
           n_identity: int, expression_variance: float) -> FaceModel:
    index_file = _require(root, "vertex_indices.json")
    try:
        indices = json.loads(index_file.read_text())
        if not isinstance(indices, dict) or "idx_to_landmark_verts" not in indices:
            raise ValueError("no 'idx_to_landmark_verts' list")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"cannot read '{index_file}': {exc}") from None
    polygons = read_obj_faces(_require(root, "generic_neutral_mesh.obj"))
    if neutral.shape[0] < FACE_VERTEX_COUNT or len(polygons) < FACE_POLYGON_COUNT:
        raise ValueError(f"{root}: not an ICT-FaceKit mesh ({neutral.shape[0]} vertices, {len(polygons)} polygons)")
    if identity.shape[1:] != neutral.shape or expression.shape[1:] != neutral.shape:
        raise ValueError(f"{root}: identity/expression shapes do not match the neutral mesh {neutral.shape}")
    if n_identity > identity.shape[0]:
        raise ValueError(f"n_identity={n_identity} but the model has {identity.shape[0]} identity modes")
    triangles = triangulate(polygons[:FACE_POLYGON_COUNT])
    if triangles.max() >= FACE_VERTEX_COUNT:
        raise ValueError(f"{root}: face-region polygons reference vertices outside 0-{FACE_VERTEX_COUNT - 1}")
    n = FACE_VERTEX_COUNT
    mean = np.ascontiguousarray(neutral[:n], dtype=np.float32)
    a_id = np.ascontiguousarray((identity[:n_identity, :n] - mean).transpose(1, 2, 0), dtype=np.float32)
    deltas = expression[:, :n] - mean
    keep = np.linalg.norm(deltas, axis=2).max(axis=1) > MIN_EXPRESSION_DISPLACEMENT_CM if len(deltas) else []
    a_exp = np.ascontiguousarray(deltas[keep].transpose(1, 2, 0), dtype=np.float32)
    lmk68 = np.asarray(indices["idx_to_landmark_verts"], dtype=np.int64)
    if lmk68.shape != (68,) or lmk68.max() >= n:
        raise ValueError(f"{root}: vertex_indices.json must list 68 face-region landmark vertices")
    lmk160 = dense_landmarks(mean, lmk68, np.arange(NARROW_FACE_VERTEX_COUNT))
    return FaceModel(
        mean=mean, triangles=triangles, identity_basis=a_id, expression_basis=a_exp,
        identity_variance=np.ones(n_identity, np.float32),
        expression_variance=np.full(a_exp.shape[2], expression_variance, np.float32),
        landmarks68=lmk68, landmarks160=lmk160,
        identity_names=tuple(identity_names[:n_identity]),
        expression_names=tuple(np.asarray(expression_names)[keep].tolist()) if len(deltas) else (),
        source=str(root))


def _load_npz(path: Path) -> FaceModel:
    try:
        with np.load(path) as d:
            if "format" not in d.files or str(d["format"]) != FORMAT_TAG:
                raise ValueError(f"{path} is not a dffx face model (.npz written by FaceModel.save)")
            return FaceModel(
                mean=d["mean"], triangles=d["triangles"], identity_basis=d["identity_basis"],
                expression_basis=d["expression_basis"], identity_variance=d["identity_variance"],
                expression_variance=d["expression_variance"], landmarks68=d["landmarks68"],
                landmarks160=d["landmarks160"], identity_names=tuple(d["identity_names"].tolist()),
                expression_names=tuple(d["expression_names"].tolist()), source=str(path))
    except Exception as exc:  # noqa: BLE001 - OSError, KeyError, BadZipFile, pickle refusal, bad CRC, ...
        if isinstance(exc, ValueError) and str(path) in str(exc):
            raise
        raise ValueError(f"cannot read face model '{path}': {type(exc).__name__}: {exc}") from None
