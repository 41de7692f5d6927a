"""dffx's CUDA kernels run without a GPU: ``csrc/cuda`` compiled as C++ against a CPU emulator of
the CUDA execution model (``tests/cuda_emulator``: one fiber per thread, shared memory per block,
``__syncthreads``, warp shuffles, atomics, launch limits) and checked against the C++ CPU kernels
and the reference twins, as ``tests/ops/test_cuda.py`` checks them on a real GPU.

What this covers: the host code (size checks, buffers, grid sizes, the SM-count-dependent
splitting of the loss's backward pass), every kernel's indexing, tiling, barriers and reductions,
and the thread-order independence of their results. What it cannot: GPU-only behaviour (memory
model and real concurrency between blocks, the device's expf/logf rounding, register and
shared-memory limits at run time) and the PyTorch glue for CUDA tensors. Those need
``tests/ops/test_cuda.py`` on a GPU (``tools/device/check.sh``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import dffx
from conftest import REPO
from cuda_emulator import build
from cuda_emulator.emulated import EmulatedKernels
from dffx.ops.sampling import sample_landmark_features, sample_landmark_features_backward
from dffx.render import frame_camera
from test_loss import NATIVE_CASES, assert_matches_reference, random_problem
from test_raster import random_soup
from test_sampling import mixed_points, unit_maps

ORDERS = ("ascending", "descending", "shuffled")


# Set (with libasan preloaded) by test_kernels_under_address_sanitizer for its child pytest.
UNDER_ASAN = os.environ.get("DFFX_CUDA_EMULATOR_SANITIZE") == "1"


@pytest.fixture(scope="session")
def emulator_library():
    if build.find_compiler() is None:
        pytest.skip("no C++ compiler to build the CUDA emulator")
    return build.build(REPO / "build" / "cuda-emulator", sanitize=UNDER_ASAN)


@pytest.fixture
def emu(emulator_library):
    kernels = EmulatedKernels(emulator_library)
    kernels.configure("ascending", seed=0, sm_count=132)
    kernels.reset_stats()
    return kernels


# ------------------------------------------------------------------------------ the emulator itself
def test_launch_rewrite_handles_templates_and_refuses_what_it_cannot_parse():
    text = "k<<<g, 128, 0, stream>>>(a, b);\nfwd<DT><<<dim3(n, K), TP, 0, s>>>(f, s);"
    out, count = build.rewrite_launches(text)
    assert count == 2
    assert "::dffx_emu::Launch(g, 128, 0, stream).run(k, a, b);" in out
    assert "::dffx_emu::Launch(dim3(n, K), TP, 0, s).run(fwd<DT>, f, s);" in out
    with pytest.raises(RuntimeError, match="does not understand"):
        build.rewrite_launches("(kernels[i])<<<1, 32>>>(x);")


def test_warp_shuffles_and_counting_barrier_give_the_cuda_results(emu):
    sums = emu.selftest(0)
    np.testing.assert_array_equal(sums[:4], np.full(4, 32 * 33 / 2))  # 2 blocks x 2 warps
    assert np.isnan(sums[4:]).all()
    counts = emu.selftest(1)
    np.testing.assert_array_equal(counts[:200], np.full(200, 34.0))  # 0, 3, ..., 99 in a block of 100
    assert emu.stats().shuffles == 4 * 5 and emu.stats().barriers == 2


def test_thread_order_exposes_a_missing_barrier(emu):
    values = np.arange(512, dtype=np.float32)
    want = np.concatenate([values[255::-1], values[:255:-1]])
    racy = []
    for order in ORDERS:
        emu.configure(order, seed=5)
        np.testing.assert_array_equal(emu.selftest(2, values), want)  # with the barrier
        racy.append(emu.selftest(3, values))
    assert not all(np.array_equal(r, want) for r in racy)
    assert not np.array_equal(racy[0], racy[1])  # the result depends on the order: a race


def test_shared_memory_starts_undefined_in_every_block(emu):
    """A shared total each block initialises counts its 64 threads; one it does not is NaN in
    every block, the first too (a static array would start at zero there, and later blocks
    would continue from the previous block's total)."""
    np.testing.assert_array_equal(emu.selftest(7)[:3], [64.0, 64.0, 64.0])
    assert np.isnan(emu.selftest(8)[:3]).all()


def test_shared_array_rewrite_covers_every_declaration_or_refuses():
    text = ("__shared__ __align__(16) float hs[kClassTile * DT];\n"
            "  __shared__ double part[kReduceThreads];")
    out, count = build.poison_shared_arrays(text)
    assert count == 2
    assert "float hs[kClassTile * DT]; ::dffx_emu::poison_shared(hs, sizeof(hs));" in out
    assert "double part[kReduceThreads]; ::dffx_emu::poison_shared(part, sizeof(part));" in out
    with pytest.raises(RuntimeError, match="does not understand"):
        build.poison_shared_arrays("extern __shared__ float dynamic[];")


@pytest.mark.parametrize("which, message", [
    (4, "divergent barrier"),
    (5, "mask does not name the warp's lanes"),
    (6, "invalid configuration"),  # a block of 2048 threads: the launch fails, nothing runs
])
def test_what_hangs_or_fails_on_a_gpu_is_an_error(emu, which, message):
    with pytest.raises(RuntimeError, match=message):
        emu.selftest(which)


# ------------------------------------------------------------------------------ rasterizer
@pytest.mark.parametrize("seed, order", [(0, "ascending"), (1, "shuffled"), (2, "descending")])
def test_rasterizer_matches_cpu_bitwise(emu, seed, order):
    rng = np.random.default_rng(seed)
    v, tris = random_soup(rng, 4, 80, 400, 45, 61)
    if seed == 2:  # many exact depth ties: the smaller triangle index must win
        v = np.round(v)
        v[..., 2] = 3.0
    emu.configure(order, seed=seed)
    got = emu.rasterize(v, tris, (45, 61))
    for name, want, have in zip(("depth", "triangle_id", "barycentric"), dffx.rasterize(v, tris, (45, 61)), got):
        np.testing.assert_array_equal(have, want, err_msg=name)
    assert emu.stats().launches == 3


def test_face_mesh_raster_and_visibility_match_cpu_bitwise(emu, face_model):
    rng = np.random.default_rng(5)
    shapes = face_model.shape(rng.normal(size=(4, 80)), rng.uniform(0, 0.5, (4, 55)))
    screen = np.stack([dffx.project(s, frame_camera(s, 0.2, yaw, 0.1, 224))
                       for s, yaw in zip(shapes, np.linspace(-1.5, 1.5, 4))]).astype(np.float32)
    cpu = dffx.rasterize(screen, face_model.triangles, 224)
    depth, tri_id, bary = emu.rasterize(screen, face_model.triangles, (224, 224))
    np.testing.assert_array_equal(depth, cpu.depth)
    np.testing.assert_array_equal(tri_id, cpu.triangle_id)
    np.testing.assert_array_equal(bary, cpu.barycentric)
    for tolerance in (0.0, 2.0):
        want = dffx.landmark_visibility(screen, face_model.landmarks160, cpu.depth, tolerance)
        got = emu.landmark_visibility(screen, face_model.landmarks160, depth, tolerance)
        np.testing.assert_array_equal(got, want)
        assert 0 < got.sum() < got.size  # turned faces: some landmarks hidden, some not


def test_rasterizer_host_checks(emu):
    v, tris = random_soup(np.random.default_rng(0), 1, 5, 3, 4, 4)
    with pytest.raises(ValueError, match="positive"):
        emu.rasterize(v, tris, (0, 4))
    with pytest.raises(ValueError, match="tolerance"):
        emu.landmark_visibility(v, [0], np.zeros((1, 4, 4)), -1.0)


# ------------------------------------------------------------------------------ landmark sampling
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", [(2, 32, 24, 31, 160), (3, 70, 9, 11, 40), (1, 5, 6, 6, 7)])
def test_sampling_matches_cpu(emu, shape, order):
    B, C, H, W, L = shape
    emu.configure(order, seed=B)
    rng = np.random.default_rng(C)
    maps = unit_maps(rng, B, C, H, W)
    points = mixed_points(rng, B, L, H, W)
    visible = rng.random((B, L)) < 0.8
    want = sample_landmark_features(maps, points, visible)
    got = emu.sample(maps, points, visible)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)  # norms summed in another order
    np.testing.assert_array_equal(got == 0, want == 0)  # hidden landmarks exactly zero
    assert emu.stats().shuffles > 0
    grad = rng.normal(size=want.shape).astype(np.float32)
    want_grad = sample_landmark_features_backward(maps, points, visible, grad)
    got_grad = emu.sample_backward(maps, points, visible, grad)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-6 * np.abs(want_grad).max())


def test_sampling_real_dff_maps(emu):
    """The shipped network's DFF maps of the example photo, sampled on a 160-point grid over the face."""
    import cv2

    image = cv2.resize(cv2.imread(str(REPO / "examples" / "face_generated.png")), (224, 224))
    maps = dffx.DFFExtractor().extract(image).numpy()
    xs, ys = np.meshgrid(np.linspace(40.3, 183.7, 16), np.linspace(30.1, 200.9, 10))
    points = np.stack([xs, ys], -1).reshape(1, 160, 2).astype(np.float32)
    visible = np.ones((1, 160), bool)
    visible[0, ::7] = False
    want = sample_landmark_features(maps, points, visible)
    got = emu.sample(maps, points, visible)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)
    norms = np.linalg.norm(got.reshape(160, 32), axis=1)
    np.testing.assert_allclose(norms[visible[0]], 1.0, atol=1e-6)


def test_sampling_refuses_empty_maps(emu):
    with pytest.raises(ValueError, match="positive"):
        emu.sample(np.zeros((1, 0, 4, 4)), np.zeros((1, 2, 2)), np.ones((1, 2)))


# ------------------------------------------------------------------------------ angular-softmax loss
def emulated_loss_and_grads(emu, f, labels, h, scale, weights):
    loss, correct, lse = emu.angular_softmax_forward(f.numpy(), labels.numpy(), h.numpy(), scale)
    grad_f, grad_h = emu.angular_softmax_backward(f.numpy(), labels.numpy(), h.numpy(), lse,
                                                  weights.numpy().astype(np.float32), scale)
    return loss, correct, lse, grad_f, grad_h


def check_loss_against_reference(emu, f, labels, h, scale, weights):
    """The emulated CUDA loss, hits, lse and both gradients against the float64 PyTorch reference."""
    loss, correct, lse, grad_f, grad_h = emulated_loss_and_grads(emu, f, labels, h, scale, weights)
    assert_matches_reference(f, labels, h, scale, weights, loss, correct, grad_f, grad_h)
    z = scale * torch.einsum("pd,kcd->kpc", f.double(), h.double())
    np.testing.assert_allclose(lse, torch.logsumexp(z, dim=2).numpy(), rtol=1e-5, atol=2e-6 * max(1.0, scale))


@pytest.mark.parametrize("N, K, Cn, D, scale", [case for case in NATIVE_CASES if case[3] <= 64])
@pytest.mark.parametrize("sm_count", [1, 132])  # one pixel / segmentation group, or many (atomics)
def test_loss_matches_reference(emu, N, K, Cn, D, scale, sm_count):
    emu.configure("ascending", sm_count=sm_count)
    f, labels, h = random_problem(N, K, Cn, D, seed=N + Cn)
    check_loss_against_reference(emu, f, labels, h, scale, torch.linspace(0.5, 2.0, K))


def test_loss_at_the_papers_size_with_many_correct_pixels(emu):
    # K = 100 segmentations of C = 500 patches, D = 32; half the labels are the arg max.
    f, labels, h = random_problem(300, 100, 500, 32, seed=7)
    best = torch.einsum("pd,kcd->kpc", f.double(), h.double()).argmax(dim=2).t().to(torch.int32)
    labels[::2] = best[::2]
    check_loss_against_reference(emu, f, labels, h, 10.0, torch.ones(100))
    stats = emu.stats()
    assert stats.launches == 2 + 2 and stats.barriers > 0  # forward + reduction, two gradient kernels


def test_loss_ties_pick_the_first_class(emu):
    # Every class vector of a segmentation equal: all logits tie (across class tiles too), the
    # loss is log C and the first class is the arg max, as in the C++ kernel and the reference.
    f, labels, h = random_problem(300, 2, 40, 16, seed=4)
    h[:] = h[:, :1]
    loss, correct, _ = emu.angular_softmax_forward(f.numpy(), labels.numpy(), h.numpy(), 3.0)
    np.testing.assert_allclose(loss, np.log(40), rtol=1e-6)
    np.testing.assert_array_equal(correct, (labels == 0).sum(0).numpy())
    assert correct.min() > 0


def test_loss_is_independent_of_thread_and_block_order(emu):
    f, labels, h = random_problem(150, 3, 70, 32, seed=2)
    weights = torch.tensor([1.0, 0.5, 2.0])
    for sm_count in (1, 132):
        runs = []
        for order in ORDERS:
            emu.configure(order, seed=11, sm_count=sm_count)
            runs.append(emulated_loss_and_grads(emu, f, labels, h, 2.0, weights))
        for other in runs[1:]:
            for name, a, b in zip(("loss", "correct", "lse", "grad_f", "grad_h"), runs[0], other):
                if sm_count == 1 or name in ("loss", "correct", "lse"):
                    np.testing.assert_array_equal(a, b, err_msg=name)  # no atomics: bit for bit
                else:
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)


def test_loss_host_checks(emu):
    f, labels, h = random_problem(4, 1, 3, 70)
    with pytest.raises(ValueError, match="D <= 64"):
        emu.angular_softmax_forward(f.numpy(), labels.numpy(), h.numpy(), 1.0)
    f, labels, h = random_problem(4, 1, 3, 8)
    with pytest.raises(ValueError, match="scale"):
        emu.angular_softmax_forward(f.numpy(), labels.numpy(), h.numpy(), 0.0)


# ------------------------------------------------------------------------------ memory checking
@pytest.mark.skipif(UNDER_ASAN, reason="this is the AddressSanitizer run itself")
@pytest.mark.data  # runs this whole file again, the tests on the face model included
def test_kernels_under_address_sanitizer(emulator_library):
    """Every test above again, in a child process, with the kernels built with AddressSanitizer
    (the CPU counterpart of compute-sanitizer's memcheck): any read or write outside a buffer
    the host code or the caller allocated fails the run."""
    preload = build.asan_runtime()
    if preload is None:
        pytest.skip("the C++ compiler has no AddressSanitizer runtime")
    env = dict(os.environ, DFFX_CUDA_EMULATOR_SANITIZE="1", LD_PRELOAD=preload,
               ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86")
    done = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
                           "-k", "not address_sanitizer"], env=env, cwd=REPO, capture_output=True, text=True)
    report = done.stdout[-3000:] + done.stderr[-6000:]
    assert "ERROR: AddressSanitizer" not in done.stderr, report
    assert done.returncode == 0, report
    assert " passed" in done.stdout and "skipped" not in done.stdout.split("\n")[-2], report
