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


# ---------------------------------------------------------------------------- DFF loss (angular softmax)
def _loss_and_grads(fn, f, labels, h, scale, weights):
    f = f.clone().requires_grad_()
    h = h.clone().requires_grad_()
    loss, correct = fn(f, labels, h, scale)
    (loss * weights.to(loss)).sum().backward()
    return loss.detach(), correct, f.grad, h.grad


@requires_gpu
@pytest.mark.parametrize("N, K, Cn, D, scale", [
    (1, 1, 3, 5, 1.0),
    (1000, 3, 500, 32, 1.0),    # N not a multiple of the 128-pixel tile, C not of the 32-class tile
    (777, 5, 67, 32, 30.0),     # large scale
    (300, 2, 40, 16, 10.0),     # D <= 16 instance
    (129, 3, 33, 64, 10.0),     # D = 64 instance (64-pixel tiles)
    (70, 20, 9, 3, 2.0),        # many segmentations, few pixels: grad_f uses segmentation groups
    (5000, 2, 100, 32, 5.0),    # several pixel groups in grad_class_vectors
])
def test_cuda_angular_softmax_matches_reference(N, K, Cn, D, scale):
    import torch

    from dffx.ops.angular_softmax import angular_softmax_nll, angular_softmax_nll_reference
    from test_loss import ambiguous_pixels, random_problem

    f, labels, h = random_problem(N, K, Cn, D, seed=N + K)
    weights = torch.linspace(0.5, 2.0, K)
    ref = _loss_and_grads(angular_softmax_nll_reference, f.double(), labels, h.double(), scale, weights.double())
    gpu = _loss_and_grads(angular_softmax_nll, f.cuda(), labels.cuda(), h.cuda(), scale, weights.cuda())
    cpu = _loss_and_grads(angular_softmax_nll, f, labels, h, scale, weights)
    assert gpu[0].is_cuda and gpu[0].dtype == torch.float32 and gpu[1].dtype == torch.int64
    np.testing.assert_allclose(gpu[0].cpu().double(), ref[0], rtol=1e-5, atol=2e-6 * max(1.0, scale))
    amb = ambiguous_pixels(f, labels, h, scale)
    assert ((gpu[1].cpu() - ref[1]).abs() <= amb).all(), (gpu[1], ref[1])
    assert ((gpu[1].cpu() - cpu[1]).abs() <= amb).all(), (gpu[1], cpu[1])
    for i, name in ((2, "features"), (3, "class_vectors")):
        want = ref[i]
        err = (gpu[i].cpu().double() - want).abs().max().item()
        assert err <= 1e-5 * want.abs().max().item() + 1e-8, f"grad {name}: max error {err}"
        np.testing.assert_allclose(gpu[i].cpu(), cpu[i], rtol=1e-4, atol=1e-5 * want.abs().max().item())


@requires_gpu
def test_cuda_angular_softmax_analytic_and_deterministic_loss():
    import torch

    from dffx.ops.angular_softmax import angular_softmax_nll
    from test_loss import random_problem

    f, labels, _ = random_problem(300, 2, 17, 32, seed=3)
    h = torch.nn.functional.normalize(torch.randn(32), dim=0).expand(2, 17, 32).contiguous()
    loss, correct = angular_softmax_nll(f.cuda(), labels.cuda(), h.cuda(), 30.0)
    np.testing.assert_allclose(loss.cpu(), np.full(2, np.log(17)), rtol=1e-6)      # all classes equal: log C
    assert torch.equal(correct.cpu(), (labels == 0).sum(0).long())                  # ties -> first class
    f, labels, h = random_problem(4000, 3, 500, 32, seed=4)
    a = angular_softmax_nll(f.cuda(), labels.cuda(), h.cuda(), 10.0)
    b = angular_softmax_nll(f.cuda(), labels.cuda(), h.cuda(), 10.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # fixed-order loss reduction


@requires_gpu
def test_cuda_angular_softmax_bad_input():
    import torch

    from dffx.ops.angular_softmax import angular_softmax_nll
    from test_loss import random_problem

    f, labels, h = random_problem(10, 2, 5, 4)
    with pytest.raises(ValueError, match="outside"):
        angular_softmax_nll(f.cuda(), torch.full_like(labels, 5).cuda(), h.cuda())
    with pytest.raises(ValueError, match="one device"):
        angular_softmax_nll(f.cuda(), labels, h.cuda())
    f, labels, h = random_problem(10, 2, 5, 65)
    with pytest.raises(ValueError, match="D <= 64"):
        angular_softmax_nll(f.cuda(), labels.cuda(), h.cuda())


@requires_gpu
def test_cuda_angular_softmax_does_not_materialise_logits():
    import torch

    from dffx.ops.angular_softmax import angular_softmax_nll

    N, K, Cn, D = 50_000, 10, 500, 32
    dev = torch.device("cuda")
    f = torch.nn.functional.normalize(torch.randn(N, D, device=dev), dim=1).requires_grad_()
    h = torch.nn.functional.normalize(torch.randn(K, Cn, D, device=dev), dim=2).requires_grad_()
    labels = torch.randint(0, Cn, (N, K), device=dev, dtype=torch.int32)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss, _ = angular_softmax_nll(f, labels, h, 10.0)
    loss.sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    logits_bytes = N * K * Cn * 4  # 1 GB
    assert peak < logits_bytes / 50, f"peak {peak / 2**20:.1f} MiB"
    assert torch.isfinite(f.grad).all() and torch.isfinite(h.grad).all()


@requires_gpu
def test_cuda_loss_layer_matches_cpu(face_model):
    import torch

    from dffx.nn.loss import AngularSoftmaxLoss
    from dffx.segment import random_segmentations

    lut = random_segmentations(face_model.mean, face_model.triangles, count=2, n_patches=20, iterations=2,
                               progress=False)
    cam = frame_camera(face_model.mean, 0.0, 0.3, 0.0, 32)
    tid = dffx.rasterize(dffx.project(face_model.mean, cam), face_model.triangles, 32).triangle_id[None]
    feats = torch.nn.functional.normalize(torch.randn(1, 32, 32, 32), dim=1)
    layer = AngularSoftmaxLoss(lut, scale=5.0)
    cpu = layer(feats, tid)
    gpu = layer.cuda()(feats.cuda(), tid)
    np.testing.assert_allclose(gpu.per_segment.detach().cpu(), cpu.per_segment.detach(), rtol=1e-5)
    gpu.total.backward()
    assert layer.h.grad.is_cuda and torch.isfinite(layer.h.grad).all()


@requires_gpu
def test_cuda_angular_softmax_passes_opcheck():
    import torch

    import dffx.ops.angular_softmax  # noqa: F401  (registers torch.ops.dffx.*)
    from test_loss import random_problem

    f, labels, h = random_problem(200, 3, 40, 32, seed=6)
    f, labels, h = f.cuda().requires_grad_(), labels.cuda(), h.cuda().requires_grad_()
    result = torch.library.opcheck(torch.ops.dffx.angular_softmax_nll.default, (f, labels, h, 3.0))
    assert all(v == "SUCCESS" for v in result.values()), result


# ---------------------------------------------------------------------------- landmark feature sampling (F^(k))
def _sampling_problem(B, Cn, H, W, L, seed):
    from test_sampling import mixed_points, unit_maps

    rng = np.random.default_rng(seed)
    return unit_maps(rng, B, Cn, H, W), mixed_points(rng, B, L, H, W), rng.random((B, L)) > 0.2


@requires_gpu
@pytest.mark.parametrize("B, Cn, H, W, L", [
    (2, 32, 224, 224, 160),   # the paper's sizes
    (64, 32, 56, 56, 160),    # many warps / blocks
    (3, 5, 9, 4, 33),         # C < 32: idle lanes in the warp reduction
    (2, 70, 16, 16, 7),       # C > 64: three channels per lane
    (1, 3, 1, 1, 10),         # single-pixel image
])
def test_cuda_landmark_sampling_matches_cpu(B, Cn, H, W, L):
    import torch

    maps, points, visible = _sampling_problem(B, Cn, H, W, L, seed=B * 1000 + Cn)
    cpu = dffx.ops.sample_landmark_features(maps, points, visible)
    gpu = dffx.ops.sample_landmark_features(torch.from_numpy(maps).cuda(), torch.from_numpy(points).cuda(),
                                            torch.from_numpy(visible).cuda())
    assert gpu.is_cuda and gpu.dtype == torch.float32 and tuple(gpu.shape) == (B, L * Cn)
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, rtol=0, atol=1e-6)
    hidden = np.abs(cpu.reshape(B, L, Cn)).sum(-1) == 0
    assert np.all(gpu.cpu().numpy().reshape(B, L, Cn)[hidden] == 0)
    # NumPy points and visibility with CUDA maps are moved to the device; unbatched input works.
    one = dffx.ops.sample_landmark_features(torch.from_numpy(maps[0]).cuda(), points[0], visible[0])
    np.testing.assert_allclose(one.cpu().numpy(), cpu[0], rtol=0, atol=1e-6)


@requires_gpu
def test_cuda_landmark_sampling_gradient_matches_cpu():
    import torch

    B, Cn, H, W, L = 4, 32, 23, 19, 160  # landmarks share pixels: the atomics accumulate
    maps, points, visible = _sampling_problem(B, Cn, H, W, L, seed=11)
    g = np.random.default_rng(12).normal(size=(B, L * Cn)).astype(np.float32)
    want = dffx.ops.sampling.sample_landmark_features_backward(maps, points, visible, g)
    m = torch.from_numpy(maps).cuda().requires_grad_()
    out = dffx.ops.sample_landmark_features(m, torch.from_numpy(points).cuda(), torch.from_numpy(visible).cuda())
    (out * torch.from_numpy(g).cuda()).sum().backward()
    assert m.grad.is_cuda
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(m.grad.cpu().numpy(), want, rtol=0, atol=1e-5 * scale)


@requires_gpu
def test_cuda_landmark_sampling_bad_input():
    import torch

    maps = torch.ones(2, 4, 3, 3, device="cuda")
    with pytest.raises(ValueError, match="NaN"):
        dffx.ops.sample_landmark_features(maps, torch.full((2, 2, 2), float("nan"), device="cuda"), None)
    with pytest.raises(ValueError, match="batch mismatch"):
        dffx.ops.sample_landmark_features(maps, torch.zeros(1, 2, 2, device="cuda"), None)
    with pytest.raises(ValueError, match="floating point"):
        dffx.ops.sample_landmark_features(maps.long(), torch.zeros(2, 2, 2, device="cuda"), None)


@requires_gpu
def test_cuda_mesh_visibility_and_channels_last_maps_match_cpu(face_model):
    """The paths added for the CPU speed-ups, given CUDA tensors: mesh_landmark_visibility runs
    the CUDA rasterizer + test and must equal the CPU sparse op; channels-last CUDA maps (the
    extractor's own output) sample like contiguous CPU ones."""
    import torch

    rng = np.random.default_rng(8)
    shapes = face_model.shape(rng.normal(size=(4, 80)), rng.uniform(0, 0.5, (4, 55)))
    screen = np.stack([dffx.project(s, frame_camera(s, 0.1, yaw, 0.0, 224))
                       for s, yaw in zip(shapes, (-1.4, -0.5, 0.3, 1.2))])
    cpu = dffx.ops.mesh_landmark_visibility(screen, face_model.triangles, face_model.landmarks160, 224)
    gpu = dffx.ops.mesh_landmark_visibility(torch.from_numpy(screen).cuda(), face_model.triangles,
                                            face_model.landmarks160, 224)
    assert gpu.is_cuda
    np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)
    maps, points, visible = _sampling_problem(2, 32, 40, 48, 160, seed=21)
    nhwc = torch.from_numpy(maps).cuda().contiguous(memory_format=torch.channels_last)
    got = dffx.ops.sample_landmark_features(nhwc, points, visible)
    np.testing.assert_allclose(got.cpu().numpy(), dffx.ops.sample_landmark_features(maps, points, visible),
                               rtol=0, atol=1e-6)


@requires_gpu
def test_cuda_bfloat16_extractor_is_close_to_float32_on_the_cpu():
    import cv2

    from conftest import REPO
    from dffx.nn import DFFExtractor

    face = cv2.resize(cv2.imread(str(REPO / "examples" / "face_generated.png")), (224, 224))
    exact = DFFExtractor(device="cpu").extract(face)
    for precision in ("float32", "bfloat16"):
        gpu = DFFExtractor(device="cuda", precision=precision).extract(face)
        assert gpu.is_cuda and gpu.dtype.is_floating_point
        cos = (gpu.cpu().float() * exact).sum(1)
        assert cos.mean() > 0.999 and cos.min() > 0.9, precision
