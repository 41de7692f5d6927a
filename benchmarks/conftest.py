"""Shared fixtures of the dffx benchmark suites (native kernels vs. their NumPy reference twins).

Run: ``pytest benchmarks/ --benchmark-only`` (see benchmarks/README.md).

The face model comes from ``$DFFX_FACE_MODEL``; when that variable is unset the suites try
``<repo>/../shared/data/ict-facekit`` (the layout of this project's machines and CI). When no
model is found every benchmark is skipped with the reason, instead of failing.

All inputs are generated once per session from seeded RNGs, so every run (and every machine)
times exactly the same problems:

* screen-space face meshes at 224x224 (batch 1 and 64): model shapes S(p) with random
  identity/expression parameters, random poses (yaw in [-90, 90] deg, pitch and roll in
  [-30, 30] deg), each framed into the image with :func:`dffx.render.frame_camera`;
* shape-fit problems (batch 1 and 256): the 68 landmarks of random shapes projected with
  random weak-perspective cameras (plus 1 px Gaussian noise) as targets;
* a shared-shape problem (eq. 11): one random shape seen by 256 random cameras.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import dffx
from dffx.config import FACE_MODEL_ENV
from dffx.render import frame_camera

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FACE_MODEL = REPO_ROOT.parent / "shared" / "data" / "ict-facekit"

IMAGE_SIZE = 224
MESH_SEED = 0
FIT_SEED = 1
SHARED_FIT_SEED = 2
TARGET_NOISE_PX = 1.0


class Meshes(NamedTuple):
    """A batch of screen-space meshes ready for :func:`dffx.rasterize`."""

    vertices: np.ndarray   # float32 (B, N, 3) screen space (pixels, depth larger = closer)
    triangles: np.ndarray  # int32 (F, 3)
    cameras: np.ndarray    # float64 (B, 6) the framing cameras
    size: int              # square image size


class FitProblem(NamedTuple):
    """Inputs of :func:`dffx.fit_shape` / :func:`dffx.fit_shared_shape` and of their twins."""

    mean: np.ndarray       # float32 (68, 3) landmark-restricted model (model.landmark_model())
    basis: np.ndarray      # float32 (68, 3, M)
    prior: np.ndarray      # float32 (M,)
    targets: np.ndarray    # float32 (B, 68, 2) pixels
    cameras: np.ndarray    # float32 (B, 6); float32 so native and twin see identical cameras
    params: np.ndarray     # float32 (B, M) or (M,) the parameters that generated the targets


def face_model_location() -> tuple[Path, str]:
    """(path, how it was chosen): $DFFX_FACE_MODEL if set, else the repo's shared-data default."""
    env = os.environ.get(FACE_MODEL_ENV)
    if env:
        return Path(env).expanduser(), f"${FACE_MODEL_ENV}"
    return DEFAULT_FACE_MODEL, f"default (${FACE_MODEL_ENV} is unset)"


@pytest.fixture(scope="session")
def face_model():
    """The ICT-FaceKit face model, loaded once (~1 s); skips the benchmarks when it is missing."""
    path, origin = face_model_location()
    if not path.exists():
        pytest.skip(f"face model not found at '{path}' ({origin}); point {FACE_MODEL_ENV} at the "
                    "ICT-FaceKit folder to run the dffx benchmarks")
    try:
        return dffx.load_face_model(path)
    except dffx.ModelNotFoundError as exc:
        pytest.skip(f"no usable face model at '{path}' ({origin}): {exc}")


# ---------------------------------------------------------------------------- parameters
def _random_params(model, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Identity ~ N(0, D_id) (D_id = I); blendshape weights uniform in [0, 0.5] (mild expressions)."""
    p_id = rng.standard_normal((batch, model.n_identity)) * np.sqrt(model.identity_variance)
    p_exp = rng.uniform(0.0, 0.5, (batch, model.n_expression))
    return p_id.astype(np.float32), p_exp.astype(np.float32)


def _random_angles(rng: np.random.Generator, batch: int) -> np.ndarray:
    """(B, 3) radians (pitch, yaw, roll): yaw in [-90, 90] deg, pitch and roll in [-30, 30] deg."""
    deg = np.stack([rng.uniform(-30, 30, batch), rng.uniform(-90, 90, batch), rng.uniform(-30, 30, batch)], axis=1)
    return np.deg2rad(deg)


def _random_cameras(rng: np.random.Generator, batch: int) -> np.ndarray:
    """(B, 6) float32 cameras for a 224 px image: s in [6, 9] px/cm (face ~90-140 px wide), random
    pose, translation within 20 px of the image centre."""
    centre = (IMAGE_SIZE - 1) / 2
    cams = np.concatenate([rng.uniform(6.0, 9.0, (batch, 1)), _random_angles(rng, batch),
                           centre + rng.uniform(-20.0, 20.0, (batch, 2))], axis=1)
    return cams.astype(np.float32)


# ---------------------------------------------------------------------------- raster inputs
def _make_meshes(model, batch: int, seed: int) -> Meshes:
    rng = np.random.default_rng(seed)
    shapes = model.shape(*_random_params(model, rng, batch))  # (B, N, 3) cm
    angles = _random_angles(rng, batch)
    cameras = np.stack([frame_camera(shapes[b], *angles[b], IMAGE_SIZE) for b in range(batch)])
    vertices = dffx.project(shapes, cameras)  # (B, N, 3) float32
    return Meshes(np.ascontiguousarray(vertices), np.ascontiguousarray(model.triangles, dtype=np.int32),
                  cameras, IMAGE_SIZE)


@pytest.fixture(scope="session")
def meshes_b1(face_model) -> Meshes:
    """One framed random face at 224x224."""
    return _make_meshes(face_model, 1, MESH_SEED)


@pytest.fixture(scope="session")
def meshes_b64(face_model) -> Meshes:
    """64 framed random faces at 224x224 (the first one is not ``meshes_b1``'s face)."""
    return _make_meshes(face_model, 64, MESH_SEED + 64)


# ---------------------------------------------------------------------------- shape-fit inputs
def _make_fit_problem(model, batch: int, seed: int) -> FitProblem:
    rng = np.random.default_rng(seed)
    mean, basis, prior = model.landmark_model()  # the 68 iBUG landmarks
    params = np.concatenate(_random_params(model, rng, batch), axis=1)  # (B, M)
    shapes = mean[None] + np.einsum("lkm,bm->blk", basis, params)       # (B, 68, 3)
    cameras = _random_cameras(rng, batch)
    targets = dffx.project(shapes, cameras)[..., :2]
    targets = targets + rng.normal(0.0, TARGET_NOISE_PX, targets.shape)
    return FitProblem(mean, basis, prior, np.ascontiguousarray(targets, dtype=np.float32), cameras, params)


def _make_shared_fit_problem(model, images: int, seed: int) -> FitProblem:
    rng = np.random.default_rng(seed)
    mean, basis, prior = model.landmark_model()
    params = np.concatenate(_random_params(model, rng, 1), axis=1)[0]  # one shape (M,)
    shape = mean + np.einsum("lkm,m->lk", basis, params)
    cameras = _random_cameras(rng, images)
    targets = dffx.project(shape, cameras)[..., :2]  # the shared shape under every camera
    targets = targets + rng.normal(0.0, TARGET_NOISE_PX, targets.shape)
    return FitProblem(mean, basis, prior, np.ascontiguousarray(targets, dtype=np.float32), cameras, params)


@pytest.fixture(scope="session")
def fit_problem_b1(face_model) -> FitProblem:
    """One 68-landmark shape-fit problem."""
    return _make_fit_problem(face_model, 1, FIT_SEED)


@pytest.fixture(scope="session")
def fit_problem_b256(face_model) -> FitProblem:
    """256 independent 68-landmark shape-fit problems."""
    return _make_fit_problem(face_model, 256, FIT_SEED + 256)


@pytest.fixture(scope="session")
def shared_fit_problem_n256(face_model) -> FitProblem:
    """One shape seen in 256 images (eq. 11)."""
    return _make_shared_fit_problem(face_model, 256, SHARED_FIT_SEED)


# ---------------------------------------------------------------------------- CUDA
def _cuda_skip_reason() -> str | None:
    """Why the CUDA benchmarks cannot run here, or None when they can."""
    if not dffx._C.cuda_compiled():
        return "dffx was built without CUDA kernels"
    if dffx._C.cuda_device_count() <= 0:
        return "no CUDA device visible to dffx (dffx._C.cuda_device_count() == 0)"
    try:
        import torch
    except ImportError:
        return "torch is not installed (the CUDA benchmarks take torch CUDA tensors)"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


@pytest.fixture(scope="session")
def cuda_torch():
    """The torch module when a CUDA GPU is usable by both dffx and torch; skips otherwise."""
    reason = _cuda_skip_reason()
    if reason:
        pytest.skip(f"CUDA benchmark: {reason}")
    import torch

    return torch
