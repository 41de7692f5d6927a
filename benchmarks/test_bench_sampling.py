"""Landmark feature sampling benchmarks (F^(k), paper Sec. III-C2): native kernels vs. the NumPy twins.

Groups (each holds the native C++ kernel, the NumPy twin and, with a GPU, the CUDA kernel):

* ``sampling-b1`` / ``sampling-b64``: ``dffx.ops.sample_landmark_features(maps, points, visible)``
  on 1 / 64 faces: C = 32 unit DFF maps of 224x224 and the L = 160 landmarks (F in R^5120 per
  face) vs. ``sample_landmark_features_reference``;
* ``sampling-backward-b1`` / ``sampling-backward-b64``: the gradient with respect to the maps
  (``dffx.ops.sampling.sample_landmark_features_backward``; CUDA: the autograd backward kernel)
  vs. ``sample_landmark_features_backward_reference``.

Inputs: the 160 landmarks of the framed random faces of ``conftest.py`` (``meshes_b1`` /
``meshes_b64``) with their visibility from the native depth buffer, so hidden landmarks and
points near silhouettes occur as in the cascade; maps are seeded random unit vectors per pixel
(the kernels' cost does not depend on the values). Every benchmark checks its output against the
other implementation, so a broken kernel fails instead of producing a fast number.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import dffx
from dffx.ops import _reference
from dffx.ops.sampling import sample_landmark_features_backward

CHANNELS = 32
MAPS_SEED = 3
FORWARD_ATOL = 1e-6          # outputs are unit vectors
BACKWARD_RTOL_OF_MAX = 1e-5  # gradient tolerance relative to its largest entry
CUDA_ROUNDS, CUDA_WARMUP = 50, 3


class SamplingInputs(NamedTuple):
    maps: np.ndarray     # float32 (B, 32, 224, 224), unit vectors per pixel
    points: np.ndarray   # float32 (B, 160, 2) pixels
    visible: np.ndarray  # bool (B, 160)
    grad: np.ndarray     # float32 (B, 160 * 32) upstream gradient for the backward groups


def _make_inputs(meshes, landmarks) -> SamplingInputs:
    B, size = meshes.vertices.shape[0], meshes.size
    rng = np.random.default_rng(MAPS_SEED + B)
    maps = np.empty((B, CHANNELS, size, size), np.float32)
    for b in range(B):  # face by face: bounded temporaries (64 faces = 411 MB of maps)
        m = rng.standard_normal((CHANNELS, size, size), dtype=np.float32)
        maps[b] = m / np.linalg.norm(m, axis=0, keepdims=True)
    depth = dffx.rasterize(meshes.vertices, meshes.triangles, size).depth
    visible = dffx.landmark_visibility(meshes.vertices, landmarks, depth)
    points = np.ascontiguousarray(meshes.vertices[:, landmarks, :2])
    grad = rng.standard_normal((B, len(landmarks) * CHANNELS), dtype=np.float32)
    return SamplingInputs(maps, points, visible, grad)


@pytest.fixture(scope="module")
def sampling_b1(meshes_b1, face_model) -> SamplingInputs:
    return _make_inputs(meshes_b1, np.asarray(face_model.landmarks160))


@pytest.fixture(scope="module")
def sampling_b64(meshes_b64, face_model) -> SamplingInputs:
    return _make_inputs(meshes_b64, np.asarray(face_model.landmarks160))


@pytest.fixture(params=[1, 64], ids=["b1", "b64"])
def inputs(request) -> SamplingInputs:
    return request.getfixturevalue(f"sampling_b{request.param}")


def _info(benchmark, group: str, backend: str, inp: SamplingInputs) -> None:
    B, Cn, H, W = inp.maps.shape
    benchmark.group = f"{group}-b{B}"
    benchmark.extra_info.update(backend=backend, batch=B, channels=Cn, size=H, landmarks=int(inp.points.shape[1]),
                                visible_fraction=float(inp.visible.mean()))


def assert_same_features(got, want, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.abs(got - want).max())
    assert err <= FORWARD_ATOL, f"{what}: max abs difference {err:.3g} > {FORWARD_ATOL}"
    B = want.shape[0]
    norms = np.linalg.norm(want.reshape(B, -1, CHANNELS), axis=-1)
    assert 0.2 < float(np.mean(norms > 0.5)) < 1.0, "implausible visible fraction - bad benchmark input"


def assert_same_gradient(got, want, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = float(np.abs(want).max())
    assert scale > 0, f"{what}: zero reference gradient - bad benchmark input"
    err = float(np.abs(got - want).max())
    assert err <= BACKWARD_RTOL_OF_MAX * scale, f"{what}: max abs difference {err:.3g} (largest entry {scale:.3g})"


def _reference_forward(inp: SamplingInputs):
    return _reference.sample_landmark_features_reference(inp.maps, inp.points, inp.visible)


def _reference_backward(inp: SamplingInputs):
    return _reference.sample_landmark_features_backward_reference(inp.maps, inp.points, inp.visible, inp.grad)


# ---------------------------------------------------------------------------- forward
def test_sampling_native_cpu(benchmark, inputs):
    _info(benchmark, "sampling", "native-cpu", inputs)
    out = benchmark(dffx.ops.sample_landmark_features, inputs.maps, inputs.points, inputs.visible)
    assert_same_features(out, _reference_forward(inputs), "native CPU sampling")


def test_sampling_reference(benchmark, inputs):
    _info(benchmark, "sampling", "numpy-reference", inputs)
    out = benchmark(_reference_forward, inputs)
    assert_same_features(dffx.ops.sample_landmark_features(inputs.maps, inputs.points, inputs.visible), out,
                         "reference sampling vs native CPU")


@pytest.mark.cuda
def test_sampling_native_cuda(benchmark, inputs, cuda_torch):
    torch = cuda_torch
    _info(benchmark, "sampling", "native-cuda", inputs)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
    maps, points, visible = (torch.from_numpy(a).cuda() for a in (inputs.maps, inputs.points, inputs.visible))

    def run():  # input transfer is not timed
        out = dffx.ops.sample_landmark_features(maps, points, visible)
        torch.cuda.synchronize()
        return out

    out = benchmark.pedantic(run, rounds=CUDA_ROUNDS, iterations=1, warmup_rounds=CUDA_WARMUP)
    assert out.is_cuda
    assert_same_features(out.cpu().numpy(), _reference_forward(inputs), "native CUDA sampling")


# ---------------------------------------------------------------------------- backward
def test_sampling_backward_native_cpu(benchmark, inputs):
    _info(benchmark, "sampling-backward", "native-cpu", inputs)
    grad = benchmark(sample_landmark_features_backward, inputs.maps, inputs.points, inputs.visible, inputs.grad)
    assert_same_gradient(grad, _reference_backward(inputs), "native CPU sampling backward")


def test_sampling_backward_reference(benchmark, inputs):
    _info(benchmark, "sampling-backward", "numpy-reference", inputs)
    grad = benchmark(_reference_backward, inputs)
    assert_same_gradient(sample_landmark_features_backward(inputs.maps, inputs.points, inputs.visible, inputs.grad),
                         grad, "reference sampling backward vs native CPU")


@pytest.mark.cuda
def test_sampling_backward_native_cuda(benchmark, inputs, cuda_torch):
    torch = cuda_torch
    from dffx.ops.sampling import _backward_native  # the kernel the autograd backward calls

    _info(benchmark, "sampling-backward", "native-cuda", inputs)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
    maps, points, grad = (torch.from_numpy(a).cuda() for a in (inputs.maps, inputs.points, inputs.grad))
    visible = torch.from_numpy(inputs.visible).cuda().to(torch.uint8)

    def run():  # includes zeroing the (B, 32, 224, 224) gradient buffer
        out = _backward_native(maps, points, visible, grad, 0)
        torch.cuda.synchronize()
        return out

    out = benchmark.pedantic(run, rounds=CUDA_ROUNDS, iterations=1, warmup_rounds=CUDA_WARMUP)
    assert out.is_cuda
    assert_same_gradient(out.cpu().numpy(), _reference_backward(inputs), "native CUDA sampling backward")
