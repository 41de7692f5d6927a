"""Latency of a tiny face (issue 26): a 16-px face with its box given.

Group ``latency-tiny``:

* ``FaceAligner.align`` with ``tiny="always"`` and ``tiny_method="sr-cascade"`` (what
  ``"auto"`` runs at 16 px): the 32-px crop, the joint network's super-resolved face, the DFF
  pipeline on it;
* the same with ``tiny_method="network"`` (what ``"auto"`` runs under 17 px): the landmark-only
  network's landmarks, the cascade's 3DMM and camera fit to them, the mesh and visibility;
* the same face through the DFF pipeline on the upsampled face (``tiny="never"``), the reference;
* the landmark-only network alone, and the joint network with its SR head (as ``super_resolve``
  runs it);
* the 3DMM fit alone (:func:`dffx.align.tiny_route.fit_tiny_landmarks`: the cascade's fit in C++).

The issue's target is under 5 ms per tiny face on the 2-core CPU.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import dffx

from conftest import REPO_ROOT

PHOTO = REPO_ROOT.parent / "shared" / "data" / "dev" / "aflw2000-3d-sample" / "image00050.jpg"
BOX = np.array([150.0, 160.0, 310.0, 370.0])
FACE_SIZE = 16


@pytest.fixture(scope="module")
def tiny_face():
    from dffx.tiny.degrade import Degradation, shrink_to_face_size

    image = cv2.imread(str(PHOTO))
    if image is None:
        pytest.skip(f"sample photo not found: {PHOTO}")
    small, M = shrink_to_face_size(image, BOX, FACE_SIZE, Degradation())
    return small, (BOX.reshape(2, 2) @ M[:, :2].T + M[:, 2]).reshape(4)


@pytest.fixture(scope="module")
def aligner(face_model):
    pytest.importorskip("torch")
    return dffx.FaceAligner("dff", model=face_model, device="cpu", refine=0)


def _align(aligner, mode, method, image, box):
    aligner.tiny, aligner.tiny_method = mode, method
    return aligner.align(image, box)


@pytest.mark.benchmark(group="latency-tiny")
def test_tiny_path_sr_cascade(benchmark, aligner, tiny_face):
    (face,) = benchmark(_align, aligner, "always", "sr-cascade", *tiny_face)
    assert face.score is not None and face.vertices.shape[1] == 3


@pytest.mark.benchmark(group="latency-tiny")
def test_tiny_path_network(benchmark, aligner, tiny_face):
    (face,) = benchmark(_align, aligner, "always", "network", *tiny_face)
    assert face.score is None and face.vertices.shape[1] == 3


@pytest.mark.benchmark(group="latency-tiny")
def test_tiny_face_through_the_default_pipeline(benchmark, aligner, tiny_face):
    (face,) = benchmark(_align, aligner, "never", "sr-cascade", *tiny_face)
    assert face.score is not None


@pytest.mark.benchmark(group="latency-tiny")
def test_tiny_network_landmarks(benchmark, aligner, tiny_face):
    result = benchmark(aligner.tiny_route.landmark_path.run, *tiny_face, super_resolve=False)
    assert result.sr is None and result.landmarks.shape == (1, 68, 2)


@pytest.mark.benchmark(group="latency-tiny")
def test_tiny_network_with_super_resolution(benchmark, aligner, tiny_face):
    result = benchmark(aligner.tiny_route.path.run, *tiny_face)
    assert result.sr.shape == (1, 128, 128, 3)


@pytest.mark.benchmark(group="latency-tiny")
def test_tiny_3dmm_fit(benchmark, aligner, tiny_face, face_model):
    from dffx.align.tiny_route import fit_tiny_landmarks

    landmarks = aligner.tiny_route.landmark_path.run(*tiny_face, super_resolve=False).landmarks
    fit = benchmark(fit_tiny_landmarks, face_model, aligner.cascade, landmarks, tiny_face[1][None])
    assert np.isfinite(fit["camera"]).all()
