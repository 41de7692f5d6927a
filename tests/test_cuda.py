"""CUDA kernels against the C++ CPU backend (bit for bit). Skipped without a visible GPU;
the build-level facts (kernels compiled, architectures) are checked everywhere."""

import os

import numpy as np
import pytest

import dffx
import dffx._C as C
from conftest import requires_gpu
from dffx.render import frame_camera
from test_raster import random_soup


def test_build_reports_cuda_consistently():
    archs = [a for a in C.cuda_architectures().split(";") if a]
    assert bool(archs) == bool(C.cuda_compiled())
    if os.environ.get("DFFX_EXPECT_CUDA") == "1":  # set by .ci/run when nvcc is on PATH
        assert C.cuda_compiled(), "nvcc was available but the CUDA kernels were not compiled"
        assert {"80", "90"} <= set(archs) or os.environ.get("DFFX_CUDA_ARCHITECTURES")
    assert C.cuda_device_count() >= 0


@pytest.mark.skipif(C.cuda_compiled(), reason="this build has CUDA kernels")
def test_cuda_tensor_without_cuda_kernels_raises():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    with pytest.raises(RuntimeError, match="without CUDA"):
        dffx.rasterize(torch.zeros(3, 3, device="cuda"), [[0, 1, 2]], 8)


@requires_gpu
@pytest.mark.parametrize("seed", range(3))
def test_cuda_rasterizer_matches_cpu_bitwise(seed):
    import torch

    rng = np.random.default_rng(seed)
    v, tris = random_soup(rng, 4, 80, 400, 45, 61)
    if seed == 2:  # many exact ties
        v = np.round(v)
        v[..., 2] = 3.0
    cpu = dffx.rasterize(v, tris, (45, 61))
    gpu = dffx.rasterize(torch.from_numpy(v).cuda(), torch.from_numpy(tris).cuda(), (45, 61))
    assert gpu.depth.is_cuda
    for name, a, b in zip(cpu._fields, cpu, gpu):
        np.testing.assert_array_equal(a, b.cpu().numpy(), err_msg=name)


@requires_gpu
def test_cuda_face_mesh_and_visibility_match_cpu(face_model):
    import torch

    rng = np.random.default_rng(5)
    shapes = face_model.shape(rng.normal(size=(8, 80)), rng.uniform(0, 0.5, (8, 55)))
    screen = np.stack([dffx.project(s, frame_camera(s, 0.2, yaw, 0.1, 224))
                       for s, yaw in zip(shapes, np.linspace(-1.5, 1.5, 8))])
    cpu = dffx.rasterize(screen, face_model.triangles, 224)
    gpu = dffx.rasterize(torch.from_numpy(screen).cuda(), face_model.triangles, 224)
    for name, a, b in zip(cpu._fields, cpu, gpu):
        np.testing.assert_array_equal(a, b.cpu().numpy(), err_msg=name)
    vis_cpu = dffx.landmark_visibility(screen, face_model.landmarks160, cpu.depth)
    vis_gpu = dffx.landmark_visibility(torch.from_numpy(screen).cuda(), face_model.landmarks160, gpu.depth)
    np.testing.assert_array_equal(vis_cpu, vis_gpu.cpu().numpy())


@requires_gpu
def test_cuda_bad_input_raises_value_error():
    import torch

    v = torch.zeros(1, 3, 3, device="cuda")
    with pytest.raises(ValueError, match="outside"):
        dffx.rasterize(v, [[0, 1, 5]], 8)
    with pytest.raises(ValueError, match="NaN"):
        dffx.rasterize(torch.full((1, 3, 3), float("nan"), device="cuda"), [[0, 1, 2]], 8)
    with pytest.raises(ValueError, match="shape"):
        dffx.rasterize(torch.zeros(3, 2, device="cuda"), [[0, 1, 2]], 8)
