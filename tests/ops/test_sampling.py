"""Landmark feature sampling F^(k) (paper Sec. III-C2): C++ kernel vs NumPy twin, analytic maps
with known answers, the hidden/outside/border rules, torch dispatch and autograd, bad inputs."""

import numpy as np
import pytest

import dffx
import dffx._C as C
from dffx.ops import _reference as ref
from dffx.ops import sample_landmark_features
from dffx.ops.sampling import MIN_NORM, sample_landmark_features_backward
from dffx.render import frame_camera

TIGHT = dict(rtol=0, atol=1e-6)  # outputs are unit vectors: absolute float32 rounding level


def unit_maps(rng, batch, channels, height, width):
    """Random DFF-like maps: a unit C-vector per pixel."""
    m = rng.normal(size=(batch, channels, height, width)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def mixed_points(rng, batch, landmarks, height, width):
    """Points of every kind: fractional inside, exact pixel centres, on the border pixel centres,
    in the half-pixel border band (clamped), just outside and far outside the image."""
    x = rng.uniform(0, width - 1, (batch, landmarks))
    y = rng.uniform(0, height - 1, (batch, landmarks))
    kind = rng.integers(0, 6, (batch, landmarks))
    centres = kind == 1
    x[centres], y[centres] = np.round(x[centres]), np.round(y[centres])
    border = kind == 2
    x[border] = rng.choice([0.0, width - 1.0], border.sum())
    band = kind == 3
    x[band] = rng.choice([-0.5, -0.25, width - 0.75, width - 0.51], band.sum())
    y[band] = rng.choice([-0.5, -0.1, height - 0.6], band.sum())
    outside = kind == 4
    x[outside] = rng.choice([-0.51, -3.0, width - 0.5, width + 7.0], outside.sum())
    return np.stack([x, y], axis=-1).astype(np.float32)


def torch_reference(maps, points, visible):
    """The contract written with differentiable torch ops (float64 in the tests): (B, L * C)."""
    import torch

    B, Cn, H, W = maps.shape
    L = points.shape[1]
    x, y = points[..., 0], points[..., 1]
    active = visible & (x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < H - 0.5)
    xc, yc = x.clamp(0, W - 1), y.clamp(0, H - 1)
    x0, y0 = xc.floor().long(), yc.floor().long()
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    ax, ay = (xc - x0).unsqueeze(-1).to(maps.dtype), (yc - y0).unsqueeze(-1).to(maps.dtype)
    flat = maps.reshape(B, Cn, H * W)

    def tap(yy, xx):
        return torch.gather(flat, 2, (yy * W + xx)[:, None, :].expand(B, Cn, L)).transpose(1, 2)

    v = (1 - ay) * ((1 - ax) * tap(y0, x0) + ax * tap(y0, x1)) + ay * ((1 - ax) * tap(y1, x0) + ax * tap(y1, x1))
    n = v.norm(dim=-1, keepdim=True)
    keep = active.unsqueeze(-1) & (n >= MIN_NORM)
    return torch.where(keep, v / n.clamp_min(MIN_NORM), torch.zeros_like(v)).reshape(B, L * Cn)


# ---------------------------------------------------------------------------- native vs twin
@pytest.mark.parametrize("seed, shape", [
    (0, (2, 32, 224, 224, 160)),  # the paper's sizes: F in R^5120 per face
    (1, (3, 32, 37, 53, 160)),
    (2, (1, 5, 9, 4, 33)),        # odd channel count, tiny image
    (3, (4, 64, 16, 16, 7)),
    (4, (2, 3, 1, 1, 10)),        # single-pixel image: every inside point samples that pixel
])
def test_native_matches_twin(seed, shape):
    B, Cn, H, W, L = shape
    rng = np.random.default_rng(seed)
    maps = unit_maps(rng, B, Cn, H, W)
    if seed == 3:
        maps = rng.normal(size=maps.shape).astype(np.float32) * 5  # not unit: the output still is
    points = mixed_points(rng, B, L, H, W)
    visible = rng.random((B, L)) > 0.2
    got = sample_landmark_features(maps, points, visible)
    want = ref.sample_landmark_features_reference(maps, points, visible)
    assert got.shape == (B, L * Cn) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, **TIGHT)
    assert np.count_nonzero(np.abs(want).sum(-1)) == B  # the test input is not all hidden


def test_native_backward_matches_twin(rng):
    B, Cn, H, W, L = 3, 32, 23, 19, 160  # many landmarks share pixels: accumulation is exercised
    maps = unit_maps(rng, B, Cn, H, W)
    points = mixed_points(rng, B, L, H, W)
    visible = rng.random((B, L)) > 0.2
    grad_out = rng.normal(size=(B, L * Cn)).astype(np.float32)
    got = sample_landmark_features_backward(maps, points, visible, grad_out)
    want = ref.sample_landmark_features_backward_reference(maps, points, visible, grad_out)
    assert got.shape == maps.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    assert np.abs(want).max() > 0


def test_threads_do_not_change_the_result(rng):
    B = 16  # 2560 landmarks: enough work for several threads (the kernel gives each >= 512)
    maps = unit_maps(rng, B, 32, 30, 30)
    points = mixed_points(rng, B, 160, 30, 30)
    visible = rng.random((B, 160)) > 0.3
    g = rng.normal(size=(B, 160 * 32)).astype(np.float32)
    one = sample_landmark_features(maps, points, visible, threads=1)
    grad_one = sample_landmark_features_backward(maps, points, visible, g, threads=1)
    for threads in (2, 3, 7, 0):
        np.testing.assert_array_equal(one, sample_landmark_features(maps, points, visible, threads=threads))
        np.testing.assert_array_equal(grad_one, sample_landmark_features_backward(maps, points, visible, g,
                                                                                  threads=threads))


# ---------------------------------------------------------------------------- analytic cases
def linear_maps(rng, channels, height, width):
    """m[c, y, x] = a_c x + b_c y + d_c, with d_c large enough that no sample is near zero."""
    a, b = rng.normal(size=(2, channels)).astype(np.float32)
    d = (rng.normal(size=channels) + 40.0 * np.sign(rng.normal(size=channels))).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    m = a[:, None, None] * xs + b[:, None, None] * ys + d[:, None, None]
    return m.astype(np.float32), (a, b, d)


def test_linear_map_gives_the_exact_linear_value(rng):
    # Bilinear interpolation reproduces a linear function exactly, so the sample at a fractional
    # point is (a x + b y + d) before normalisation: check the direction.
    H, W, Cn, L = 31, 45, 32, 160
    maps, (a, b, d) = linear_maps(rng, Cn, H, W)
    points = np.stack([rng.uniform(0, W - 1, L), rng.uniform(0, H - 1, L)], -1).astype(np.float32)
    got = sample_landmark_features(maps, points, np.ones(L, bool))
    assert got.shape == (L * Cn,)
    x, y = points[:, :1].astype(np.float64), points[:, 1:].astype(np.float64)
    v = a * x + b * y + d                                          # (L, C) exact values
    np.testing.assert_allclose(got.reshape(L, Cn), v / np.linalg.norm(v, axis=1, keepdims=True), rtol=0,
                               atol=2e-6)


def test_border_band_is_clamped_and_outside_is_hidden(rng):
    H, W, Cn = 12, 20, 32
    maps, (a, b, d) = linear_maps(rng, Cn, H, W)
    cases = [  # (x, y) -> the clamped point that must be sampled, or None for hidden
        ((-0.5, 3.25), (0.0, 3.25)),          # first inside coordinate: clamped to x = 0
        ((-0.2, -0.4), (0.0, 0.0)),
        ((W - 0.51, H - 0.6), (W - 1.0, H - 1.0)),
        ((W - 1.0, 5.5), (W - 1.0, 5.5)),     # exactly on the last pixel centre column
        ((0.0, H - 1.0), (0.0, H - 1.0)),
        ((-0.5001, 2.0), None),               # just outside the pixel area
        ((W - 0.5, 2.0), None),               # the upper bound is exclusive
        ((3.0, H - 0.5), None),
        ((1e6, -1e6), None),
    ]
    points = np.array([c[0] for c in cases], np.float32)
    got = sample_landmark_features(maps, points, np.ones(len(cases), bool)).reshape(len(cases), Cn)
    for (point, clamped), row in zip(cases, got):
        if clamped is None:
            np.testing.assert_array_equal(row, 0.0, err_msg=str(point))
            continue
        v = a * np.float64(clamped[0]) + b * np.float64(clamped[1]) + d
        np.testing.assert_allclose(row, v / np.linalg.norm(v), rtol=0, atol=2e-6, err_msg=str(point))


def test_pixel_centres_sample_the_pixel_exactly(rng):
    maps = unit_maps(rng, 2, 32, 10, 14)
    ys, xs = rng.integers(0, 10, (2, 160)), rng.integers(0, 14, (2, 160))
    points = np.stack([xs, ys], -1).astype(np.float32)
    got = sample_landmark_features(maps, points, np.ones((2, 160), bool)).reshape(2, 160, 32)
    want = np.moveaxis(maps, 1, -1)[np.arange(2)[:, None], ys, xs]  # already unit vectors
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_unit_rows_for_visible_and_zeros_for_hidden(rng):
    B, Cn, H, W, L = 4, 32, 40, 40, 160
    maps = unit_maps(rng, B, Cn, H, W)
    points = mixed_points(rng, B, L, H, W)
    visible = rng.random((B, L)) > 0.3
    F = sample_landmark_features(maps, points, visible).reshape(B, L, Cn)
    x, y = points[..., 0], points[..., 1]
    inside = (x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < H - 0.5)
    active = visible & inside
    assert 0 < active.sum() < active.size and (visible & ~inside).any()
    np.testing.assert_allclose(np.linalg.norm(F[active], axis=-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(F[~active], 0.0)


def test_zero_norm_gives_zeros():
    maps = np.zeros((1, 32, 8, 8), np.float32)
    maps[0, :, 5:, :] = 1.0  # rows 0-4 are zero
    points = np.array([[[2.0, 2.0], [3.5, 6.0], [1.0, 4.0]]], np.float32)
    F = sample_landmark_features(maps, points, np.ones((1, 3), bool)).reshape(3, 32)
    np.testing.assert_array_equal(F[0], 0.0)                      # all-zero taps
    np.testing.assert_allclose(F[1], 1 / np.sqrt(32), atol=1e-7)  # inside the constant region
    np.testing.assert_array_equal(F[2], 0.0)                      # row 4: exactly zero
    tiny = np.full((1, 4, 3, 3), 1e-14, np.float32)               # norm 2e-14 < 1e-12
    np.testing.assert_array_equal(sample_landmark_features(tiny, [[[1.0, 1.0]]], [[True]]), 0.0)


def test_layout_is_landmark_major(rng):
    maps = unit_maps(rng, 2, 32, 9, 9)
    points = mixed_points(rng, 2, 160, 9, 9)
    visible = np.ones((2, 160), bool)
    F = sample_landmark_features(maps, points, visible)
    for b, l in ((0, 0), (1, 37), (1, 159)):
        one = sample_landmark_features(maps[b], points[b, l:l + 1], visible[b, l:l + 1])
        np.testing.assert_array_equal(F[b, l * 32:(l + 1) * 32], one)


def test_default_visibility_and_integer_inputs(rng):
    maps = unit_maps(rng, 1, 32, 6, 6)
    points = np.array([[[1, 2], [4, 4], [9, 1]]])  # integer pixel centres; the last is outside
    F = sample_landmark_features(maps, points, None).reshape(3, 32)
    np.testing.assert_allclose(F[0], maps[0, :, 2, 1], atol=1e-6)
    np.testing.assert_array_equal(F[2], 0.0)
    np.testing.assert_array_equal(sample_landmark_features(maps, points, np.array([[1, 0, 1]])).reshape(3, 32)[1], 0)
    empty = sample_landmark_features(maps, np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), bool))
    assert empty.shape == (1, 0)


def test_f_of_the_face_model_is_5120_dimensional_with_hidden_landmarks_zeroed(face_model, rng):
    # Sec. III-C2 on a real render: 160 landmarks of a turned face, visibility from the depth
    # buffer, a smooth synthetic DFF map (unit vectors).
    cam = frame_camera(face_model.mean, 0.1, 1.2, 0.0, 224)  # strong yaw: part of the face hidden
    screen = dffx.project(face_model.mean, cam)
    depth = dffx.rasterize(screen, face_model.triangles, 224).depth
    visible = dffx.landmark_visibility(screen, face_model.landmarks160, depth)
    points = screen[face_model.landmarks160, :2]
    assert 0 < visible.sum() < 160
    ys, xs = np.mgrid[0:224, 0:224].astype(np.float32)
    freq = rng.uniform(0.01, 0.05, (32, 2)).astype(np.float32)
    maps = np.cos(freq[:, :1, None] * xs + freq[:, 1:, None] * ys + rng.uniform(0, 6, (32, 1, 1))).astype(np.float32)
    maps /= np.linalg.norm(maps, axis=0, keepdims=True)
    F = sample_landmark_features(maps, points, visible)
    assert F.shape == (5120,)
    per = F.reshape(160, 32)
    np.testing.assert_array_equal(per[~visible], 0.0)
    np.testing.assert_allclose(np.linalg.norm(per[visible], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(F, ref.sample_landmark_features_reference(maps[None], points[None],
                                                                         visible[None])[0], **TIGHT)


# ---------------------------------------------------------------------------- torch
def test_torch_cpu_input_returns_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    maps = unit_maps(rng, 2, 32, 20, 24)
    points = mixed_points(rng, 2, 160, 20, 24)
    visible = rng.random((2, 160)) > 0.2
    want = sample_landmark_features(maps, points, visible)
    for p, v in ((points, visible), (torch.from_numpy(points), torch.from_numpy(visible)),
                 (torch.from_numpy(points).double(), torch.from_numpy(visible).to(torch.uint8))):
        got = sample_landmark_features(torch.from_numpy(maps), p, v)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device.type == "cpu"
        np.testing.assert_array_equal(got.numpy(), want)
    single = sample_landmark_features(torch.from_numpy(maps[1]), torch.from_numpy(points[1]), visible[1])
    assert single.shape == (160 * 32,)
    np.testing.assert_array_equal(single.numpy(), want[1])
    wide = sample_landmark_features(torch.from_numpy(maps).double(), points, visible)  # cast to float32
    assert wide.dtype == torch.float32
    np.testing.assert_array_equal(wide.numpy(), want)


def test_channels_last_maps_are_read_in_place_with_the_same_result():
    """The network's channels-last output goes to the kernel as (B, H, W, C) without a copy and
    gives bit-identical F; a padded-and-cropped (non-dense) view still works through a copy."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    maps = unit_maps(rng, 3, 32, 37, 53)
    points = mixed_points(rng, 3, 160, 37, 53)
    visible = rng.random((3, 160)) > 0.2
    want = ref.sample_landmark_features_reference(maps, points, visible)
    nchw = sample_landmark_features(torch.from_numpy(maps), points, visible)
    nhwc = torch.from_numpy(maps).contiguous(memory_format=torch.channels_last)
    assert not nhwc.is_contiguous()
    got = sample_landmark_features(nhwc, points, visible)
    np.testing.assert_allclose(got.numpy(), want, **TIGHT)
    np.testing.assert_array_equal(got.numpy(), nchw.numpy())
    wide = torch.from_numpy(rng.normal(size=(3, 32, 40, 60)).astype(np.float32)).contiguous(
        memory_format=torch.channels_last)
    view = wide[:, :, :37, :53]
    np.testing.assert_array_equal(sample_landmark_features(view, points, visible).numpy(),
                                  sample_landmark_features(view.contiguous(), points, visible).numpy())
    # the native entry point itself, (B, H, W, C) in
    direct = C.sample_landmark_features(np.ascontiguousarray(maps.transpose(0, 2, 3, 1)), points,
                                        visible.astype(np.uint8), 0, channels_last=True)
    np.testing.assert_array_equal(direct, nchw.numpy())


def test_channels_last_gradient_still_flows():
    """With grad, the autograd path (which needs (B, C, H, W)) takes channels-last maps too."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    maps = torch.from_numpy(unit_maps(rng, 2, 8, 9, 11)).contiguous(memory_format=torch.channels_last)
    maps.requires_grad_(True)
    points, visible = mixed_points(rng, 2, 20, 9, 11), rng.random((2, 20)) > 0.2
    sample_landmark_features(maps, points, visible).sum().backward()
    plain = maps.detach().contiguous().requires_grad_(True)
    sample_landmark_features(plain, points, visible).sum().backward()
    torch.testing.assert_close(maps.grad, plain.grad, atol=1e-6, rtol=0)


def test_torch_matches_differentiable_reference_and_its_gradient():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    B, Cn, H, W, L = 2, 32, 17, 21, 160
    maps = unit_maps(rng, B, Cn, H, W) * rng.uniform(0.5, 2.0, (B, 1, H, W)).astype(np.float32)
    points = mixed_points(rng, B, L, H, W)
    visible = torch.from_numpy(rng.random((B, L)) > 0.2)
    weights = torch.from_numpy(rng.normal(size=(B, L * Cn)))

    m64 = torch.from_numpy(maps).double().requires_grad_()
    want = torch_reference(m64, torch.from_numpy(points).double(), visible)
    (want * weights).sum().backward()

    m32 = torch.from_numpy(maps).requires_grad_()
    got = sample_landmark_features(m32, points, visible)
    assert got.requires_grad
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=0, atol=1e-6)
    (got * weights.float()).sum().backward()
    scale = m64.grad.abs().max().item()
    assert scale > 0
    np.testing.assert_allclose(m32.grad.numpy(), m64.grad.numpy(), rtol=0, atol=2e-5 * scale)
    # The NumPy entry point of the backward pass gives the same gradient.
    np.testing.assert_allclose(sample_landmark_features_backward(maps, points, visible.numpy(),
                                                                 weights.float().numpy()),
                               m32.grad.numpy(), rtol=0, atol=1e-6 * scale)


def test_torch_gradient_accumulates_and_skips_hidden_landmarks():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    maps = torch.from_numpy(unit_maps(rng, 1, 32, 10, 10)).requires_grad_()
    points = torch.tensor([[[2.3, 4.7], [8.5, 1.25], [5.0, 5.0]]])
    hidden = torch.zeros(1, 3, dtype=torch.bool)
    sample_landmark_features(maps, points, hidden).sum().backward()
    assert torch.count_nonzero(maps.grad) == 0
    maps.grad = None
    visible = torch.ones(1, 3, dtype=torch.bool)
    g = torch.from_numpy(rng.normal(size=(1, 96)).astype(np.float32))
    (sample_landmark_features(maps, points, visible) * g).sum().backward()
    once = maps.grad.clone()
    # Only the 2x2 neighbourhoods of the landmarks receive gradient.
    touched = (once.abs().sum(1)[0] > 0).nonzero().tolist()
    assert set(map(tuple, touched)) <= {(4, 2), (4, 3), (5, 2), (5, 3), (1, 8), (1, 9), (2, 8), (2, 9), (5, 5),
                                        (5, 6), (6, 5), (6, 6)}
    (sample_landmark_features(maps, points, visible) * g).sum().backward()  # autograd adds up
    np.testing.assert_allclose(maps.grad.numpy(), 2 * once.numpy(), rtol=1e-6)
    with torch.no_grad():
        assert not sample_landmark_features(maps, points, visible).requires_grad


def test_torch_gradcheck_on_a_small_problem():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    maps = torch.from_numpy(unit_maps(rng, 1, 4, 5, 6)).double().requires_grad_()  # cast inside: float32
    points = torch.tensor([[[1.3, 2.6], [4.9, 0.2], [-0.3, 3.5], [5.2, 4.4]]])
    visible = torch.tensor([[True, True, True, True]])

    def fn(m):
        return sample_landmark_features(m, points, visible)

    # float32 forward: a coarse step and tolerance (the float64 reference test above is the strict one).
    assert torch.autograd.gradcheck(fn, (maps,), eps=1e-2, atol=5e-3, rtol=5e-2, nondet_tol=0.0)


# ---------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("maps_shape, points, visible, match", [
    ((32, 8), np.zeros((3, 2)), np.ones(3, bool), "maps must have shape"),
    ((1, 1, 32, 8, 8), np.zeros((1, 3, 2)), np.ones((1, 3), bool), "maps must have shape"),
    ((0, 32, 8, 8), np.zeros((0, 3, 2)), np.ones((0, 3), bool), "empty"),
    ((1, 0, 8, 8), np.zeros((1, 3, 2)), np.ones((1, 3), bool), "empty"),
    ((1, 32, 8, 0), np.zeros((1, 3, 2)), np.ones((1, 3), bool), "empty"),
    ((2, 32, 8, 8), np.zeros((3, 3, 2)), np.ones((2, 3), bool), "batch mismatch"),
    ((2, 32, 8, 8), np.zeros((2, 3, 2)), np.ones((1, 3), bool), "batch mismatch"),
    ((2, 32, 8, 8), np.zeros((2, 3, 2)), np.ones((2, 4), bool), "entries per face"),
    ((2, 32, 8, 8), np.zeros((2, 3, 3)), np.ones((2, 3), bool), "points must have shape"),
    ((2, 32, 8, 8), np.zeros((3, 2)), np.ones((2, 3), bool), "points must have shape"),
    ((32, 8, 8), np.zeros((1, 3, 2)), np.ones((1, 3), bool), "points must have shape"),
    ((32, 8, 8), np.zeros((3, 2)), np.ones((1, 3), bool), "visible must have shape"),
    ((2, 32, 8, 8), np.array([[[1.0, np.nan]] * 3] * 2), np.ones((2, 3), bool), "NaN"),
    ((2, 32, 8, 8), np.full((2, 3, 2), np.inf), np.zeros((2, 3), bool), "NaN or inf"),
    ((2, 32, 8, 8), np.zeros((2, 3, 2), complex), np.ones((2, 3), bool), "real numbers"),
    ((2, 32, 8, 8), np.zeros((2, 3, 2)), np.full((2, 3), 2), "only 0 and 1"),
    ((2, 32, 8, 8), np.zeros((2, 3, 2)), np.full((2, 3), 0.5), "bool"),
])
def test_bad_inputs_raise_value_error(maps_shape, points, visible, match):
    maps = np.ones(maps_shape, np.float32)
    with pytest.raises(ValueError, match=match):
        sample_landmark_features(maps, points, visible)


def test_bad_dtypes_and_torch_bad_inputs():
    with pytest.raises(ValueError, match="floating point"):
        sample_landmark_features(np.ones((1, 4, 3, 3), np.int32), np.zeros((1, 2, 2)), None)
    with pytest.raises(ValueError, match="floating point"):
        sample_landmark_features(np.ones((1, 4, 3, 3), bool), np.zeros((1, 2, 2)), None)
    with pytest.raises(ValueError, match="grad_features must have shape"):
        sample_landmark_features_backward(np.ones((1, 4, 3, 3), np.float32), np.zeros((1, 2, 2)), None,
                                          np.zeros((1, 7), np.float32))
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="floating point"):
        sample_landmark_features(torch.ones(1, 4, 3, 3, dtype=torch.int64), np.zeros((1, 2, 2)), None)
    with pytest.raises(ValueError, match="NaN"):
        sample_landmark_features(torch.ones(1, 4, 3, 3), torch.full((1, 2, 2), float("nan")), None)
    with pytest.raises(ValueError, match="batch mismatch"):
        sample_landmark_features(torch.ones(2, 4, 3, 3), torch.zeros(1, 2, 2), None)
    with pytest.raises(ValueError, match="empty"):
        sample_landmark_features(torch.ones(1, 4, 0, 3), torch.zeros(1, 2, 2), None)
    with pytest.raises(ValueError, match="bool"):
        sample_landmark_features(torch.ones(1, 4, 3, 3), torch.zeros(1, 2, 2), torch.zeros(1, 2))


def test_native_entry_points_check_shapes_and_points():
    maps = np.ones((2, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="points must have shape"):
        C.sample_landmark_features(maps, np.zeros((1, 2, 2), np.float32), np.ones((2, 2), np.uint8))
    with pytest.raises(ValueError, match="visible must have shape"):
        C.sample_landmark_features(maps, np.zeros((2, 2, 2), np.float32), np.ones((2, 3), np.uint8))
    with pytest.raises(ValueError, match="non-finite"):
        C.sample_landmark_features(maps, np.full((2, 2, 2), np.nan, np.float32), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="positive"):
        C.sample_landmark_features(np.ones((2, 0, 3, 3), np.float32), np.zeros((2, 2, 2), np.float32),
                                   np.ones((2, 2), np.uint8))


@pytest.mark.skipif(C.cuda_compiled(), reason="this build has CUDA kernels")
def test_cuda_tensor_without_cuda_kernels_raises():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    with pytest.raises(RuntimeError, match="without CUDA"):
        sample_landmark_features(torch.ones(1, 4, 3, 3, device="cuda"), np.zeros((1, 2, 2)), None)
