"""Rasterizer and landmark-visibility benchmarks: native kernels vs. the NumPy reference twins.

Groups (each holds the native C++ kernel, the NumPy twin and, with a GPU, the CUDA kernel):

* ``raster-b1`` / ``raster-b64``: ``dffx.rasterize(verts, triangles, 224)`` on 1 / 64 framed
  random faces (18460 triangles each) vs. ``rasterize_reference``;
* ``visibility-b64``: ``dffx.landmark_visibility`` of the 160 landmarks of 64 faces against
  their depth buffers vs. ``landmark_visibility_reference``;
* ``mesh-visibility-b1`` / ``-b64``: the visibility of the 160 landmarks straight from the mesh
  (``dffx.ops.mesh_landmark_visibility``, depth only at the pixels the test reads) vs. the full
  depth buffer followed by the test (``rasterize`` + ``landmark_visibility``).

Every benchmark checks its own output against the other implementation, so a broken kernel
fails instead of producing a fast number.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import dffx
from dffx.ops import _reference
from dffx.ops.raster import DEFAULT_VISIBILITY_TOLERANCE

MIN_ID_AGREEMENT = 0.999     # fraction of pixels whose triangle id must match the twin
MIN_VIS_AGREEMENT = 0.999    # fraction of landmarks whose visibility must match the twin
REFERENCE_B64_ROUNDS = 3     # the twin takes ~0.5-1 s for 64 faces: a few rounds are enough
CUDA_ROUNDS, CUDA_WARMUP = 50, 3


def assert_same_triangles(ids, expected, what: str) -> None:
    ids, expected = np.asarray(ids), np.asarray(expected)
    assert ids.shape == expected.shape, f"{what}: triangle_id shape {ids.shape} != {expected.shape}"
    agree = float(np.mean(ids == expected))
    assert agree >= MIN_ID_AGREEMENT, (
        f"{what}: triangle ids agree with the reference on only {agree:.4%} of pixels "
        f"({int(np.sum(ids != expected))} of {ids.size} differ; need >= {MIN_ID_AGREEMENT:.1%})")
    covered = float(np.mean(expected >= 0))
    assert covered > 0.05, f"{what}: the reference covers only {covered:.2%} of pixels - bad benchmark input"


def assert_same_visibility(vis, expected, what: str) -> None:
    vis, expected = np.asarray(vis, dtype=bool), np.asarray(expected, dtype=bool)
    assert vis.shape == expected.shape, f"{what}: visibility shape {vis.shape} != {expected.shape}"
    agree = float(np.mean(vis == expected))
    assert agree >= MIN_VIS_AGREEMENT, (
        f"{what}: visibility agrees with the reference on only {agree:.4%} of landmarks "
        f"({int(np.sum(vis != expected))} of {vis.size} differ)")


def _info(benchmark, backend: str, meshes) -> None:
    benchmark.extra_info.update(backend=backend, batch=int(meshes.vertices.shape[0]), size=meshes.size,
                                triangles=int(meshes.triangles.shape[0]))


class _ByIdentity:
    """Wraps a fixture value so lru_cache keys on the object, not on (unhashable) array contents."""

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _ByIdentity) and other.obj is self.obj


@functools.lru_cache(maxsize=None)
def _reference_ids_cached(key: _ByIdentity) -> np.ndarray:
    m = key.obj
    return _reference.rasterize_reference(m.vertices, m.triangles, m.size, m.size)[1]


def reference_triangle_ids(meshes) -> np.ndarray:
    """The twin's triangle ids for a mesh fixture, computed once per session."""
    return _reference_ids_cached(_ByIdentity(meshes))


# ---------------------------------------------------------------------------- rasterize
@pytest.fixture(params=[1, 64], ids=["b1", "b64"])
def meshes(request):
    return request.getfixturevalue(f"meshes_b{request.param}")


def _group(benchmark, meshes) -> None:
    benchmark.group = f"raster-b{meshes.vertices.shape[0]}"


def test_raster_native_cpu(benchmark, meshes):
    _group(benchmark, meshes)
    _info(benchmark, "native-cpu", meshes)
    out = benchmark(dffx.rasterize, meshes.vertices, meshes.triangles, meshes.size)
    assert_same_triangles(out.triangle_id, reference_triangle_ids(meshes), "native CPU rasterize")


def test_raster_reference(benchmark, meshes):
    _group(benchmark, meshes)
    _info(benchmark, "numpy-reference", meshes)
    args = (meshes.vertices, meshes.triangles, meshes.size, meshes.size)
    if meshes.vertices.shape[0] > 1:  # slow: time a few single calls instead of calibrating
        out = benchmark.pedantic(_reference.rasterize_reference, args=args, rounds=REFERENCE_B64_ROUNDS, iterations=1)
    else:
        out = benchmark(_reference.rasterize_reference, *args)
    native = dffx.rasterize(meshes.vertices, meshes.triangles, meshes.size)
    assert_same_triangles(native.triangle_id, out[1], "reference rasterize vs native CPU")


@pytest.mark.cuda
def test_raster_native_cuda(benchmark, meshes, cuda_torch):
    torch = cuda_torch
    _group(benchmark, meshes)
    _info(benchmark, "native-cuda", meshes)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
    vertices = torch.from_numpy(meshes.vertices).cuda()  # input transfer is not timed

    def run():
        out = dffx.rasterize(vertices, meshes.triangles, meshes.size)
        torch.cuda.synchronize()
        return out

    out = benchmark.pedantic(run, rounds=CUDA_ROUNDS, iterations=1, warmup_rounds=CUDA_WARMUP)
    assert out.triangle_id.is_cuda
    assert_same_triangles(out.triangle_id.cpu().numpy(), reference_triangle_ids(meshes), "native CUDA rasterize")


# ---------------------------------------------------------------------------- visibility
@pytest.fixture(scope="module")
def visibility_inputs(meshes_b64, face_model):
    """(vertices, landmarks160, native depth buffers) of the 64 faces: both implementations read
    the same depth, so the comparison isolates the visibility test itself."""
    depth = dffx.rasterize(meshes_b64.vertices, meshes_b64.triangles, meshes_b64.size).depth
    return meshes_b64.vertices, np.asarray(face_model.landmarks160), depth


def _vis_info(benchmark, backend, vertices, landmarks) -> None:
    benchmark.group = "visibility-b64"
    benchmark.extra_info.update(backend=backend, batch=int(vertices.shape[0]), landmarks=int(len(landmarks)),
                                tolerance=DEFAULT_VISIBILITY_TOLERANCE)


def _reference_visibility(vertices, landmarks, depth):
    return _reference.landmark_visibility_reference(vertices, landmarks, depth, DEFAULT_VISIBILITY_TOLERANCE)


def test_visibility_native_cpu(benchmark, visibility_inputs):
    vertices, landmarks, depth = visibility_inputs
    _vis_info(benchmark, "native-cpu", vertices, landmarks)
    vis = benchmark(dffx.landmark_visibility, vertices, landmarks, depth)
    assert vis.shape == (vertices.shape[0], len(landmarks))
    assert 0.2 < vis.mean() < 1.0, f"implausible visible fraction {vis.mean():.3f} - bad benchmark input"
    assert_same_visibility(vis, _reference_visibility(vertices, landmarks, depth), "native CPU visibility")


def test_visibility_reference(benchmark, visibility_inputs):
    vertices, landmarks, depth = visibility_inputs
    _vis_info(benchmark, "numpy-reference", vertices, landmarks)
    vis = benchmark(_reference_visibility, vertices, landmarks, depth)
    assert_same_visibility(dffx.landmark_visibility(vertices, landmarks, depth), vis,
                           "reference visibility vs native CPU")


@pytest.mark.cuda
def test_visibility_native_cuda(benchmark, visibility_inputs, cuda_torch):
    torch = cuda_torch
    vertices, landmarks, depth = visibility_inputs
    _vis_info(benchmark, "native-cuda", vertices, landmarks)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
    v_gpu, d_gpu = torch.from_numpy(vertices).cuda(), torch.from_numpy(depth).cuda()

    def run():  # indices stay NumPy: the dispatch range-checks them on the host either way
        out = dffx.landmark_visibility(v_gpu, landmarks, d_gpu)
        torch.cuda.synchronize()
        return out

    vis = benchmark.pedantic(run, rounds=CUDA_ROUNDS, iterations=1, warmup_rounds=CUDA_WARMUP)
    assert_same_visibility(vis.cpu().numpy(), _reference_visibility(vertices, landmarks, depth),
                           "native CUDA visibility")


# ---------------------------------------------------------------------------- visibility from the mesh
def _full_visibility(vertices, triangles, landmarks, size):
    """The path mesh_landmark_visibility replaces: the whole depth buffer, then the test."""
    return dffx.landmark_visibility(vertices, landmarks, dffx.rasterize(vertices, triangles, size).depth)


@pytest.mark.parametrize("how", ["mesh", "full-depth-buffer"])
def test_mesh_visibility(benchmark, meshes, face_model, how):
    """The cascade's per-iteration visibility of the 160 landmarks: depth only where the test reads
    it (``mesh_landmark_visibility``) vs the full depth buffer; both must agree exactly."""
    benchmark.group = f"mesh-visibility-b{meshes.vertices.shape[0]}"
    _info(benchmark, how, meshes)
    landmarks = np.asarray(face_model.landmarks160)
    fn = dffx.ops.mesh_landmark_visibility if how == "mesh" else _full_visibility
    vis = benchmark(fn, meshes.vertices, meshes.triangles, landmarks, meshes.size)
    other = _full_visibility if how == "mesh" else dffx.ops.mesh_landmark_visibility
    np.testing.assert_array_equal(vis, other(meshes.vertices, meshes.triangles, landmarks, meshes.size))
    assert 0.2 < vis.mean() < 1.0, f"implausible visible fraction {vis.mean():.3f} - bad benchmark input"
