"""DFF training loss (paper Sec. III-B, l_k): the C++ op against the chunked PyTorch reference,
analytic cases, gradients, bad input, and the AngularSoftmaxLoss layer on real face renders."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dffx
import dffx._C as C
from dffx.nn.loss import AngularSoftmaxLoss, SegmentationLoss
from dffx.ops.angular_softmax import angular_softmax_nll, angular_softmax_nll_reference
from dffx.render import frame_camera
from dffx.segment import random_segmentations, save_segmentations


def unit(x, dim=-1):
    return F.normalize(x, dim=dim)


def random_problem(N, K, Cn, D, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    f = unit(torch.randn(N, D, generator=g, dtype=torch.float64)).to(dtype)
    h = unit(torch.randn(K, Cn, D, generator=g, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, Cn, (N, K), generator=g, dtype=torch.int32)
    return f, labels, h


def ambiguous_pixels(f, labels, h, scale, gap=1e-4):
    """Per segmentation: pixels whose top-2 logits (float64) are within `gap`, where float32 kernels
    may legitimately pick another arg max than the float64 reference."""
    z = scale * torch.einsum("pd,kcd->kpc", f.double(), h.double())
    if z.shape[2] < 2:
        return torch.zeros(z.shape[0], dtype=torch.int64)
    top = z.topk(2, dim=2).values
    return ((top[..., 0] - top[..., 1]) < gap * max(1.0, scale)).sum(dim=1)


def assert_matches_reference(f, labels, h, scale, grad_weights, loss, correct, grad_f, grad_h):
    """A float32 implementation's loss (K,), hits (K,) and gradients of sum(grad_weights * loss)
    (torch tensors or NumPy arrays) against the float64 reference."""
    f64, h64 = f.double().clone().requires_grad_(), h.double().clone().requires_grad_()
    ref_loss, ref_correct = angular_softmax_nll_reference(f64, labels, h64, scale)
    (ref_loss * grad_weights.double()).sum().backward()
    loss, correct, grad_f, grad_h = (torch.as_tensor(x).detach() for x in (loss, correct, grad_f, grad_h))
    tol = 2e-6 * max(1.0, scale)
    np.testing.assert_allclose(loss.double(), ref_loss.detach(), rtol=1e-5, atol=tol)
    assert ((correct - ref_correct).abs() <= ambiguous_pixels(f, labels, h, scale)).all(), (correct, ref_correct)
    for got, want, name in ((grad_f, f64.grad, "features"), (grad_h, h64.grad, "class_vectors")):
        err = (got.double() - want).abs().max().item()
        assert err <= 1e-5 * want.abs().max().item() + 1e-8, f"grad {name}: max error {err}"


def check_against_reference(f, labels, h, scale, grad_weights):
    """Native float32 loss, hits and gradients against the float64 reference."""
    f32, h32 = f.float().clone().requires_grad_(), h.float().clone().requires_grad_()
    loss, correct = angular_softmax_nll(f32, labels, h32, scale)
    (loss * grad_weights).sum().backward()
    assert loss.dtype == torch.float32 and loss.shape == (h.shape[0],)
    assert correct.dtype == torch.int64 and correct.shape == (h.shape[0],)
    assert_matches_reference(f, labels, h, scale, grad_weights, loss, correct, f32.grad, h32.grad)


# Problem sizes (N, K, C, D, scale) every native implementation is checked on.
NATIVE_CASES = [
    (1, 1, 3, 5, 1.0),
    (37, 3, 7, 3, 1.0),
    (257, 4, 500, 32, 1.0),     # the paper's C and D
    (301, 2, 65, 32, 30.0),     # large scale; C just above a class tile (32 on CUDA, 16 on the CPU)
    (130, 3, 129, 17, 30.0),    # odd D and C
    (67, 2, 20, 64, 5.0),       # the largest D the CUDA kernel takes
    (45, 2, 11, 70, 2.0),       # D > 64 (CPU only)
    (5, 2, 1, 4, 1.0),          # a single class: loss 0, every pixel correct
]


# ------------------------------------------------------------------------------------ native vs reference
@pytest.mark.parametrize("N, K, Cn, D, scale", NATIVE_CASES)
def test_native_matches_reference(N, K, Cn, D, scale):
    f, labels, h = random_problem(N, K, Cn, D, seed=N + Cn)
    weights = torch.linspace(0.5, 2.0, K)
    check_against_reference(f, labels, h, scale, weights)


def test_native_matches_reference_with_many_correct_pixels():
    # Half the labels are the arg max, so the hit counts are far from zero.
    f, labels, h = random_problem(403, 3, 40, 32, seed=7)
    z = torch.einsum("pd,kcd->kpc", f.double(), h.double())
    best = z.argmax(dim=2).t().to(torch.int32)
    labels[::2] = best[::2]
    loss, correct = angular_softmax_nll(f, labels, h, 10.0)
    assert (correct >= 200).all()
    check_against_reference(f, labels, h, 10.0, torch.ones(3))


def test_reference_chunking_does_not_change_the_result():
    f, labels, h = random_problem(50, 5, 9, 6, seed=3, dtype=torch.float64)
    full = angular_softmax_nll_reference(f, labels, h, 4.0)
    for chunk in (1, 9, 10, 100, 9 * 50 * 2):
        loss, correct = angular_softmax_nll_reference(f, labels, h, 4.0, chunk=chunk)
        np.testing.assert_allclose(loss, full[0], rtol=1e-12)
        assert torch.equal(correct, full[1])


def test_reference_gradcheck_float64():
    f, labels, h = random_problem(6, 2, 4, 3, seed=11, dtype=torch.float64)
    f.requires_grad_()
    h.requires_grad_()
    for chunk in (4, 1000):  # with and without per-pixel chunks (checkpointing)
        assert torch.autograd.gradcheck(
            lambda a, b: angular_softmax_nll_reference(a, labels, b, 2.5, chunk=chunk)[0], (f, h))


def test_cpu_op_passes_torch_library_opcheck():
    f, labels, h = random_problem(13, 2, 5, 4, seed=5)
    f.requires_grad_()
    h.requires_grad_()
    result = torch.library.opcheck(torch.ops.dffx.angular_softmax_nll.default, (f, labels, h, 3.0))
    assert all(v == "SUCCESS" for v in result.values()), result


def test_gradient_of_only_one_input():
    f, labels, h = random_problem(20, 2, 6, 8, seed=2)
    f.requires_grad_()
    loss, _ = angular_softmax_nll(f, labels, h, 2.0)
    loss.sum().backward()
    f64 = f.detach().double().requires_grad_()
    angular_softmax_nll_reference(f64, labels, h.double(), 2.0)[0].sum().backward()
    np.testing.assert_allclose(f.grad, f64.grad, rtol=1e-4, atol=1e-7)
    assert h.grad is None


def test_int64_labels_and_non_contiguous_inputs():
    f, labels, h = random_problem(31, 3, 8, 6, seed=4)
    ft = f.t().contiguous().t()                        # non-contiguous view with equal values
    want = angular_softmax_nll(f, labels, h, 3.0)
    got = angular_softmax_nll(ft, labels.long(), h.transpose(1, 2).contiguous().transpose(1, 2), 3.0)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


def test_native_is_deterministic_and_thread_count_independent():
    f, labels, h = random_problem(203, 3, 70, 32, seed=9)
    args = (f.numpy(), labels.numpy(), h.numpy())
    runs = []
    for threads in (1, 2, 3):
        loss, correct, lse = C.angular_softmax_forward(*args, 5.0, threads)
        gf, gh = C.angular_softmax_backward(*args, lse, np.array([1.0, -2.0, 0.5], np.float32), 5.0,
                                            threads=threads)
        runs.append((loss, correct, lse, gf, gh))
    for loss, correct, lse, gf, gh in runs[1:]:
        np.testing.assert_allclose(loss, runs[0][0], rtol=1e-6)
        np.testing.assert_array_equal(correct, runs[0][1])
        np.testing.assert_array_equal(lse, runs[0][2])
        np.testing.assert_array_equal(gf, runs[0][3])  # per-pixel sums: bitwise equal
        np.testing.assert_array_equal(gh, runs[0][4])  # per-(k, class) sums: bitwise equal


# ------------------------------------------------------------------------------------ analytic cases
@pytest.mark.parametrize("fn", [angular_softmax_nll, angular_softmax_nll_reference])
def test_equal_class_vectors_give_log_c_and_first_index_wins(fn):
    N, K, Cn, D = 41, 3, 17, 8
    f, labels, _ = random_problem(N, K, Cn, D, seed=1)
    v = unit(torch.randn(D, generator=torch.Generator().manual_seed(0)))
    h = v.expand(K, Cn, D).contiguous()
    for scale in (1.0, 30.0):
        loss, correct = fn(f, labels, h, scale)
        np.testing.assert_allclose(loss, np.full(K, math.log(Cn)), rtol=1e-6)
        # all logits tie exactly: the arg max is class 0
        assert torch.equal(correct, (labels == 0).sum(dim=0).long())


@pytest.mark.parametrize("fn", [angular_softmax_nll, angular_softmax_nll_reference])
def test_features_equal_to_their_class_vector(fn):
    N, K, Cn, D = 60, 2, 20, 32
    g = torch.Generator().manual_seed(3)
    h0 = unit(torch.randn(Cn, D, generator=g))
    h = h0.expand(K, Cn, D).contiguous()
    lab = torch.randint(0, Cn, (N,), generator=g, dtype=torch.int32)
    labels = lab[:, None].expand(N, K).contiguous()
    f = h0[lab.long()]
    losses = [fn(f, labels, h, s)[0] for s in (1.0, 10.0, 100.0)]
    assert (losses[0] > losses[1]).all() and (losses[1] > losses[2]).all()
    assert (losses[2] < 1e-6).all()
    assert (fn(f, labels, h, 1.0)[0] < math.log(Cn)).all()
    assert torch.equal(fn(f, labels, h, 100.0)[1], torch.full((K,), N))


@pytest.mark.parametrize("fn", [angular_softmax_nll, angular_softmax_nll_reference])
def test_two_classes_closed_form(fn):
    # f = e1, h = (e1, -e1): z = (s, -s); label 0 -> log(1 + e^{-2s}); label 1 -> 2s + log(1 + e^{-2s}).
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    h = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    labels = torch.tensor([[0], [1]], dtype=torch.int32)
    for s in (1.0, 3.0, 50.0):
        loss, correct = fn(f, labels, h, s)
        want = (math.log1p(math.exp(-2 * s)) + 2 * s + math.log1p(math.exp(-2 * s))) / 2
        np.testing.assert_allclose(loss.item(), want, rtol=1e-6)
        assert correct.item() == 1


def test_large_scale_is_stable():
    f, labels, h = random_problem(50, 2, 30, 16, seed=8)
    loss, _ = angular_softmax_nll(f, labels, h, 1e4)  # logits up to 1e4: exp would overflow unshifted
    ref, _ = angular_softmax_nll_reference(f.double(), labels, h.double(), 1e4)
    assert torch.isfinite(loss).all()
    np.testing.assert_allclose(loss.double(), ref, rtol=1e-4)


# ------------------------------------------------------------------------------------ bad input
def test_bad_input_raises_value_error():
    f, labels, h = random_problem(10, 2, 5, 4)
    for fn in (angular_softmax_nll, angular_softmax_nll_reference):
        with pytest.raises(ValueError, match="features must have shape"):
            fn(f[0], labels, h)
        with pytest.raises(ValueError, match="class_vectors must have shape"):
            fn(f, labels, h[..., :3])
        with pytest.raises(ValueError, match="labels must have shape"):
            fn(f, labels[:, :1], h)
        with pytest.raises(ValueError, match="N = 0"):
            fn(f[:0], labels[:0], h)
        with pytest.raises(ValueError, match="outside"):
            fn(f, torch.full_like(labels, 5), h)
        with pytest.raises(ValueError, match="outside"):
            fn(f, torch.full_like(labels, -1), h)
        with pytest.raises(ValueError, match="integers"):
            fn(f, labels.float(), h)
        with pytest.raises(ValueError, match="dtype"):
            fn(f, labels, h.half())
        for scale in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="scale"):
                fn(f, labels, h, scale)
        with pytest.raises(ValueError, match="torch.Tensor"):
            fn(f.numpy(), labels, h)
        with pytest.raises(ValueError, match="one device"):
            fn(f.to("meta"), labels, h)
    with pytest.raises(ValueError, match="float32"):
        angular_softmax_nll(f.double(), labels, h.double())
    with pytest.raises(ValueError, match="chunk"):
        angular_softmax_nll_reference(f, labels, h, chunk=0)


def test_native_module_validates_too():
    f, labels, h = random_problem(10, 2, 5, 4)
    bad = labels.numpy().copy()
    bad[3, 1] = 7
    with pytest.raises(ValueError, match="pixel 3 in segmentation 1"):
        C.angular_softmax_forward(f.numpy(), bad, h.numpy(), 1.0)
    with pytest.raises(ValueError, match="shape"):
        C.angular_softmax_forward(f.numpy(), labels.numpy()[:5], h.numpy(), 1.0)
    with pytest.raises(ValueError, match="scale"):
        C.angular_softmax_forward(f.numpy(), labels.numpy(), h.numpy(), 0.0)
    lse = np.zeros((2, 10), np.float32)
    with pytest.raises(ValueError, match="grad_loss"):
        C.angular_softmax_backward(f.numpy(), labels.numpy(), h.numpy(), lse, np.ones(3, np.float32), 1.0)


@pytest.mark.skipif(C.cuda_compiled(), reason="this build has CUDA kernels")
def test_cuda_tensors_without_cuda_kernels_raise():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    f, labels, h = random_problem(10, 2, 5, 4)
    with pytest.raises(RuntimeError, match="without CUDA"):
        angular_softmax_nll(f.cuda(), labels.cuda(), h.cuda())


# ------------------------------------------------------------------------------------ the loss layer
N_PATCHES = 20
SIZE = 24


@pytest.fixture(scope="module")
def lut(face_model):
    return random_segmentations(face_model.mean, face_model.triangles, count=3, n_patches=N_PATCHES,
                                iterations=2, progress=False)


@pytest.fixture(scope="module")
def triangle_ids(face_model):
    """(2, SIZE, SIZE) int32 triangle ids of two renders of the mean face (frontal, 40 deg yaw)."""
    out = []
    for yaw in (0.0, 0.7):
        cam = frame_camera(face_model.mean, 0.0, yaw, 0.0, SIZE)
        out.append(dffx.rasterize(dffx.project(face_model.mean, cam), face_model.triangles, SIZE).triangle_id)
    tid = np.stack(out)
    assert (tid >= 0).sum() > 300 and (tid < 0).sum() > 50
    return tid


def random_maps(B, D=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return unit(torch.randn(B, D, SIZE, SIZE, generator=g), dim=1)


def test_layer_matches_reference_on_face_pixels(lut, triangle_ids):
    layer = AngularSoftmaxLoss(lut, n_patches=N_PATCHES, scale=5.0, generator=torch.Generator().manual_seed(0))
    assert layer.h.shape == (3, N_PATCHES, 32) and layer.lut.dtype == torch.int32
    feats = random_maps(2)
    out = layer(feats, triangle_ids)
    assert isinstance(out, SegmentationLoss)
    tid = torch.from_numpy(triangle_ids)
    b, y, x = (tid >= 0).nonzero(as_tuple=True)
    f = feats.permute(0, 2, 3, 1)[b, y, x]
    labels = torch.from_numpy(lut)[:, tid[b, y, x].long()].t()
    want, correct = angular_softmax_nll_reference(f.double(), labels, layer.class_vectors().double().detach(), 5.0)
    np.testing.assert_allclose(out.per_segment.detach(), want, rtol=1e-5)
    np.testing.assert_allclose(out.total.item(), want.sum().item(), rtol=1e-5)
    assert out.pixels == int((tid >= 0).sum()) and torch.equal(out.segments, torch.arange(3))
    assert out.accuracy == pytest.approx(correct.sum().item() / (3 * out.pixels), abs=2 / (3 * out.pixels))
    ref_layer = AngularSoftmaxLoss(lut, n_patches=N_PATCHES, scale=5.0, use_reference=True)
    ref_layer.load_state_dict(layer.state_dict())
    np.testing.assert_allclose(ref_layer(feats, triangle_ids).per_segment.detach(), out.per_segment.detach(), rtol=1e-5)


def test_layer_ignores_background_pixels(lut, triangle_ids):
    layer = AngularSoftmaxLoss(lut, scale=3.0)
    feats = random_maps(2)
    other = feats.clone()
    background = torch.from_numpy(triangle_ids < 0)
    other.permute(0, 2, 3, 1)[background] = unit(torch.randn(int(background.sum()), 32))
    a, b = layer(feats, triangle_ids), layer(other, torch.from_numpy(triangle_ids))
    assert torch.equal(a.per_segment, b.per_segment)


def test_layer_pixel_and_segment_subsampling(lut, triangle_ids):
    layer = AngularSoftmaxLoss(lut, scale=3.0)
    feats = random_maps(2, seed=1)
    counts = (triangle_ids >= 0).reshape(2, -1).sum(1)
    gen = torch.Generator().manual_seed(5)
    out = layer(feats, triangle_ids, pixels_per_image=50, generator=gen)
    assert out.pixels == 100
    big = int(counts.max()) + 10  # more than one image has: all its face pixels
    out_all = layer(feats, triangle_ids, pixels_per_image=big, generator=gen)
    assert out_all.pixels == int(counts.sum())
    np.testing.assert_allclose(out_all.per_segment.detach(), layer(feats, triangle_ids).per_segment.detach(),
                               rtol=1e-5)
    # same generator state -> same subset
    a = layer(feats, triangle_ids, pixels_per_image=30, generator=torch.Generator().manual_seed(9))
    b = layer(feats, triangle_ids, pixels_per_image=30, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.per_segment, b.per_segment)

    full = layer(feats, triangle_ids)
    one = layer(feats, triangle_ids, segments=1, generator=gen)
    assert one.per_segment.shape == (1,) and one.segments.shape == (1,)
    k = int(one.segments[0])
    np.testing.assert_allclose(one.per_segment.item(), full.per_segment[k].item(), rtol=1e-6)
    np.testing.assert_allclose(one.total.item(), 3 * one.per_segment.item(), rtol=1e-6)  # rescaled to K = 3
    two = layer(feats, triangle_ids, segments=[2, 0])
    np.testing.assert_allclose(two.per_segment.detach(), full.per_segment.detach()[[2, 0]], rtol=1e-6)
    np.testing.assert_allclose(two.total.item(), 1.5 * two.per_segment.sum().item(), rtol=1e-6)


def test_layer_training_steps_lower_the_loss(lut, triangle_ids):
    torch.manual_seed(0)
    layer = AngularSoftmaxLoss(lut, scale=10.0)
    raw = torch.randn(2, 32, SIZE, SIZE, requires_grad=True)  # stand-in for the network's output
    opt = torch.optim.Adam([raw, *layer.parameters()], lr=0.05)
    history = []
    for step in range(8):
        opt.zero_grad()
        out = layer(unit(raw, dim=1), triangle_ids, pixels_per_image=150, segments=2,
                    generator=torch.Generator().manual_seed(step))
        out.total.backward()
        opt.step()
        history.append(layer(unit(raw, dim=1), triangle_ids).total.item())
    assert history[-1] < 0.8 * history[0], history
    assert layer.h.grad is not None and torch.isfinite(layer.h.grad).all()


def test_layer_bad_input(lut, triangle_ids):
    layer = AngularSoftmaxLoss(lut)
    feats = random_maps(2)
    with pytest.raises(ValueError, match="no face pixel"):
        layer(feats, np.full_like(triangle_ids, -1))
    with pytest.raises(ValueError, match="channels"):
        layer(feats[:, :16], triangle_ids)
    with pytest.raises(ValueError, match="shape"):
        layer(feats, triangle_ids[:1])
    with pytest.raises(ValueError, match="outside"):
        layer(feats, np.full_like(triangle_ids, lut.shape[1]))
    with pytest.raises(ValueError, match="pixels_per_image"):
        layer(feats, triangle_ids, pixels_per_image=0)
    with pytest.raises(ValueError, match="segments"):
        layer(feats, triangle_ids, segments=4)
    with pytest.raises(ValueError, match="segment indices"):
        layer(feats, triangle_ids, segments=[0, 3])
    with pytest.raises(ValueError, match="move the layer"):
        layer(feats.to("meta"), triangle_ids)
    with pytest.raises(ValueError, match="lut"):
        AngularSoftmaxLoss(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="n_patches"):
        AngularSoftmaxLoss(lut, n_patches=5)
    with pytest.raises(ValueError, match="scale"):
        AngularSoftmaxLoss(lut, scale=0)


def test_layer_from_segmentation_file(tmp_path, lut, face_model):
    path = save_segmentations(tmp_path / "segs.npz", lut, n_patches=N_PATCHES, triangles=face_model.triangles)
    layer = AngularSoftmaxLoss.from_file(path, expected_triangles=face_model.triangles, dim=16, scale=2.0)
    assert torch.equal(layer.lut, torch.from_numpy(lut))
    assert layer.h.shape == (3, N_PATCHES, 16) and layer.scale == 2.0
