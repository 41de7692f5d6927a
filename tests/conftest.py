"""Shared fixtures: the real ICT-FaceKit model and the shared AFLW2000-3D sample.

Data comes from ``$DFFX_FACE_MODEL`` or, by default, ``../shared`` beside the repository
(the layout CI provides). Missing data is an error, not a skip: these tests exist to check
the library on real data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DFFX_SHARED", REPO.parent / "shared"))


def face_model_dir() -> Path:
    return Path(os.environ.get("DFFX_FACE_MODEL", SHARED / "data" / "ict-facekit"))


@pytest.fixture(scope="session")
def ict_dir() -> Path:
    path = face_model_dir()
    assert path.exists(), f"ICT-FaceKit not found at {path} (set DFFX_FACE_MODEL)"
    return path


@pytest.fixture(scope="session")
def face_model(ict_dir):
    import dffx

    return dffx.load_face_model(ict_dir)


@pytest.fixture(scope="session")
def aflw2000_dir() -> Path:
    path = SHARED / "data" / "dev" / "aflw2000-3d-sample"
    assert path.is_dir(), f"AFLW2000-3D sample not found at {path}"
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def gpu_available() -> bool:
    try:
        import torch

        import dffx._C as C
    except ImportError:
        return False
    return bool(C.cuda_compiled()) and C.cuda_device_count() > 0 and torch.cuda.is_available()


requires_gpu = pytest.mark.skipif(not gpu_available(), reason="needs dffx CUDA kernels and a visible CUDA GPU")
