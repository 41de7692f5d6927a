"""Shared fixtures: the real ICT-FaceKit model and the shared AFLW2000-3D sample.

Data comes from ``$DFFX_FACE_MODEL`` or, by default, ``../shared`` beside the repository
(the layout CI provides). Missing data is an error, not a skip: these tests exist to check
the library on real data. Every test that needs it is marked ``data`` (found from the fixtures
it uses and the names its code reads, :func:`needs_data`), so that without ``../shared``
``pytest -m "not data"`` runs the rest.
"""

from __future__ import annotations

import inspect
import struct
import zlib
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


# Fixtures and names through which a test reaches ../shared (or $DFFX_FACE_MODEL); the dffx
# subcommands that load the face model from $DFFX_FACE_MODEL
DATA_FIXTURES = {"ict_dir", "face_model", "aflw2000_dir"}
DATA_NAMES = {"SHARED", "DLIB_EXAMPLES", "dlib_faces", "face_model_dir", "DFFX_FACE_MODEL"}
MODEL_COMMANDS = ('"align"', '"track"', '"eval"', '"synth"', '"match"', '"export-cascade"')
_module_data_names: dict[str, set[str]] = {}


def _data_names(module) -> set[str]:
    """DATA_NAMES and the module-level constants and helpers of a test module whose code reads
    one of them (repeated until none is added: a helper calling a helper)."""
    import ast
    import re

    if module.__name__ in _module_data_names:
        return _module_data_names[module.__name__]
    names = set(DATA_NAMES)
    source = inspect.getsource(module)
    nodes = [n for n in ast.parse(source).body if isinstance(n, (ast.Assign, ast.FunctionDef))]
    grew = True
    while grew:
        grew = False
        for node in nodes:
            targets = [node.name] if isinstance(node, ast.FunctionDef) else \
                [t.id for t in node.targets if isinstance(t, ast.Name)]
            if set(targets) <= names:
                continue
            if re.search(r"\b(" + "|".join(map(re.escape, names)) + r")\b", ast.get_source_segment(source, node) or ""):
                names |= set(targets)
                grew = True
    _module_data_names[module.__name__] = names
    return names


def needs_data(item) -> bool:
    """True when a test uses a data fixture, runs a dffx subcommand that loads the face model, or
    its code or one of its fixtures' code reads a name that leads into ../shared."""
    import re

    if DATA_FIXTURES & set(item.fixturenames):
        return True
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, _data_names(item.module))) + r")\b")
    functions = [item.function] + [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
    for function in functions:
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        if pattern.search(source) or ("main([" in source and any(c in source for c in MODEL_COMMANDS)):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        if needs_data(item):
            item.add_marker(pytest.mark.data)


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


DLIB_EXAMPLES = SHARED / "data" / "dev" / "dlib-examples"


def dlib_faces() -> dict[str, list[tuple[int, int, int, int]]]:
    """The 43 faces dlib's ``{training,testing}.xml`` box in its 9 example photos: file name ->
    list of (left, top, width, height)."""
    import xml.etree.ElementTree as ET

    faces = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(DLIB_EXAMPLES / name).getroot().iter("image"):
            faces[image.get("file")] = [(int(b.get("left")), int(b.get("top")), int(b.get("width")),
                                         int(b.get("height"))) for b in image.iter("box")]
    assert sum(map(len, faces.values())) == 43
    return faces


def match_dlib_faces(detections: np.ndarray, truth: list) -> tuple[int, int]:
    """(true hits, false hits) of (K, 5+) x0 y0 x1 y1 detections against dlib boxes: greedy,
    best first, each annotated face used once. A hit has its centre inside an annotated box of
    similar size (dlib's boxes and dffx's landmark boxes follow different conventions, so IoU
    would be unfair)."""
    used, false = set(), 0
    for x0, y0, x1, y1 in np.asarray(detections)[:, :4]:
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
        hit = next((j for j, (l, t, w, h) in enumerate(truth)
                    if j not in used and l <= cx <= l + w and t <= cy <= t + h and 0.5 < side / w < 2), None)
        if hit is None:
            false += 1
        else:
            used.add(hit)
    return len(used), false


def _aflw2000_faces(aflw2000_dir, names):
    """(image, ground-truth landmarks, ground-truth box) in image pixels for some sample images."""
    import cv2

    from dffx.data import load_aflw2000_3d

    samples, _ = load_aflw2000_3d(aflw2000_dir)
    out = []
    for sample in samples:
        if sample.name in names:
            image = cv2.imread(str(sample.image_path))
            size = image.shape[:2]
            gt = sample.ground_truth_to_image(sample.landmarks, size)
            box = sample.ground_truth_to_image(sample.face_box.reshape(2, 2), size).reshape(4)
            out.append((image, gt, box))
    return out


def _png_header_only(path, width, height):
    """A PNG of a few dozen bytes whose IHDR declares width x height (no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))
    return path
