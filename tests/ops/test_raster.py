"""Depth-buffer rasterizer and landmark visibility: C++ kernel vs NumPy twin, hand-built
scenes with known answers, a closed convex mesh from several sides, the real face mesh."""

import numpy as np
import pytest

import dffx
import dffx._C as C
from dffx.ops import _reference as ref
from dffx.render import frame_camera


def random_soup(rng, batch, n_vertices, n_triangles, h, w):
    """Overlapping triangles of all sizes and both windings, partly outside the image."""
    v = np.empty((batch, n_vertices, 3), np.float32)
    v[..., 0] = rng.uniform(-0.2 * w, 1.2 * w, (batch, n_vertices))
    v[..., 1] = rng.uniform(-0.2 * h, 1.2 * h, (batch, n_vertices))
    v[..., 2] = rng.uniform(-50, 50, (batch, n_vertices))
    tris = rng.integers(0, n_vertices, (n_triangles, 3)).astype(np.int32)
    return v, tris


def assert_same_raster(a, b):
    for name, x, y in zip(("depth", "triangle_id", "barycentric"), a, b):
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("seed", range(4))
def test_native_matches_twin_bitwise_on_random_soups(seed):
    rng = np.random.default_rng(seed)
    h, w = (37, 53) if seed % 2 else (64, 64)
    v, tris = random_soup(rng, 3, 60, 150, h, w)
    assert_same_raster(dffx.rasterize(v, tris, (h, w)), ref.rasterize_reference(v, tris, h, w))


def test_native_matches_twin_with_exact_depth_ties(rng):
    # Integer coordinates and equal depths make many exact ties: the smaller index must win.
    v, tris = random_soup(rng, 2, 30, 120, 32, 32)
    v = np.round(v)
    v[..., 2] = 7.0
    got = dffx.rasterize(v, tris, 32)
    assert_same_raster(got, ref.rasterize_reference(v, tris, 32, 32))


def test_threads_do_not_change_the_result(rng):
    v, tris = random_soup(rng, 3, 80, 300, 48, 40)
    one = dffx.rasterize(v, tris, (48, 40), threads=1)
    for threads in (2, 3, 7):
        assert_same_raster(one, dffx.rasterize(v, tris, (48, 40), threads=threads))


def test_single_triangle_coverage_depth_and_barycentrics():
    v = np.array([[1, 1, 5], [8, 1, 5], [1, 8, 5]], np.float32)
    for tris in ([[0, 1, 2]], [[0, 2, 1]]):  # both windings are drawn
        depth, tri_id, bary = dffx.rasterize(v, np.array(tris), 10)
        ys, xs = np.mgrid[0:10, 0:10]
        expected = (xs >= 1) & (ys >= 1) & (xs + ys <= 9)  # edges included
        np.testing.assert_array_equal(tri_id >= 0, expected)
        np.testing.assert_allclose(depth[expected], 5.0, rtol=1e-6)  # interpolation rounds
        assert np.all(np.isneginf(depth[~expected]))
        np.testing.assert_array_equal(bary[~expected], 0.0)
        np.testing.assert_allclose(bary[expected].sum(-1), 1.0, atol=1e-6)
        corners = v[np.array(tris[0])][:, :2]
        np.testing.assert_allclose(bary[expected] @ corners, np.c_[xs[expected], ys[expected]], atol=1e-5)


def test_depth_is_interpolated_linearly():
    v = np.array([[0, 0, 0], [20, 0, 20], [0, 20, 40]], np.float32)
    depth, tri_id, _ = dffx.rasterize(v, np.array([[0, 1, 2]]), 21)
    ys, xs = np.nonzero(tri_id == 0)
    np.testing.assert_allclose(depth[ys, xs], xs + 2 * ys, atol=1e-4)


def test_overlapping_triangles_nearer_wins_and_ties_go_to_smaller_index():
    square = np.array([[2, 2], [12, 2], [2, 12]], np.float32)
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    for z_first, z_second, winner in ((1, 3, 1), (3, 1, 0), (2, 2, 0)):
        v = np.r_[np.c_[square, np.full(3, z_first)], np.c_[square, np.full(3, z_second)]].astype(np.float32)
        depth, tri_id, _ = dffx.rasterize(v, tris, 16)
        covered = tri_id >= 0
        assert covered.sum() > 30
        assert np.all(tri_id[covered] == winner)
        np.testing.assert_allclose(depth[covered], max(z_first, z_second), rtol=1e-6)
    # A tie stays with the smaller index whatever the order the triangles are listed in.
    _, tri_id, _ = dffx.rasterize(v, tris[::-1], 16)
    assert np.all(tri_id[tri_id >= 0] == 0)


def test_degenerate_and_offscreen_triangles():
    v = np.array([[0, 0, 1], [5, 5, 1], [10, 10, 1],       # collinear: zero area
                  [-1e6, -1e6, 0], [1e6, -1e6, 0], [0, 1e6, 0],  # huge, covers the whole image
                  [100, 100, 0], [120, 100, 0], [100, 120, 0],  # fully outside
                  [-1e30, -1e30, 0], [1e30, -1e30, 0], [0, 1e30, 0]], np.float32)  # edge functions overflow
    depth, tri_id, _ = dffx.rasterize(v, np.array([[0, 1, 2], [6, 7, 8]]), 12)
    assert np.all(tri_id == -1)
    _, tri_id, _ = dffx.rasterize(v, np.array([[3, 4, 5]]), 12)
    assert np.all(tri_id == 0)
    # float32 overflow must not crash, hang or differ between backends (it covers nothing)
    tris = np.array([[9, 10, 11]])
    assert_same_raster(dffx.rasterize(v[None], tris, 12), ref.rasterize_reference(v[None], tris, 12, 12))


def icosphere(subdivisions=3):
    t = (1 + 5 ** 0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(v, float) / np.linalg.norm(v) for v in verts]
    for _ in range(subdivisions):
        cache, new_faces = {}, []

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]

        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    return np.array(verts, np.float32), np.array(faces, np.int32)


@pytest.mark.parametrize("angles", [(0, 0, 0), (0.4, 1.2, -0.3), (-1.0, 3.0, 0.5), (1.5, -0.7, 2.0)])
def test_closed_convex_mesh_seen_from_several_sides(angles):
    verts, faces = icosphere(3)
    radius, size = 10.0, 64
    s = 2.5  # pixels per unit: projected radius 25 px
    cam = np.array([s, *angles, (size - 1) / 2, (size - 1) / 2])
    screen = dffx.project(verts * radius, cam)
    depth, tri_id, bary = dffx.rasterize(screen, faces, size)
    assert_same_raster((depth, tri_id, bary), [a[0] for a in ref.rasterize_reference(screen[None], faces, size, size)])
    # silhouette is a disc of radius s * r (the polyhedron is slightly inside the sphere)
    area = (tri_id >= 0).sum()
    assert 0.95 * np.pi * (s * radius) ** 2 < area < 1.02 * np.pi * (s * radius) ** 2
    # the front-most point of the sphere is at depth s * r, at the image centre
    c = size // 2
    assert s * radius * 0.97 < depth[c, c] <= s * radius + 1e-3
    # only front-facing triangles can be seen: their screen normal points to the viewer
    e1 = screen[faces[:, 1]] - screen[faces[:, 0]]
    e2 = screen[faces[:, 2]] - screen[faces[:, 0]]
    centroid_z = screen[faces][:, :, 2].mean(1)
    seen = np.unique(tri_id[tri_id >= 0])
    assert np.all(centroid_z[seen] > -0.2 * s * radius)
    assert np.all(np.cross(e1, e2)[seen, 2] != 0)
    # visibility: front vertices visible; back ones hidden unless within ~1 px of the
    # silhouette, where the 2x2 neighbourhood reaches the background (documented rule)
    vis = dffx.landmark_visibility(screen, np.arange(len(verts)), depth)
    z = screen[:, 2] / (s * radius)
    assert vis[z > 0.05].all()
    assert not vis[z < -0.45].any()  # >= 2 px inside the silhouette


def test_visibility_matches_twin_and_outside_points_are_hidden(rng):
    v, tris = random_soup(rng, 2, 60, 200, 40, 30)
    depth = dffx.rasterize(v, tris, (40, 30)).depth
    idx = np.arange(60)
    for tol in (0.0, 1.0, 5.0):
        np.testing.assert_array_equal(dffx.landmark_visibility(v, idx, depth, tol),
                                      ref.landmark_visibility_reference(v, idx, depth, tol))
    outside = (v[..., 0] < -0.5) | (v[..., 0] >= 29.5) | (v[..., 1] < -0.5) | (v[..., 1] >= 39.5)
    assert not dffx.landmark_visibility(v, idx, depth)[outside].any()


def test_visibility_of_mean_face(face_model):
    """All 68 landmarks visible at a frontal view; the far side hidden at a profile view."""
    for size in (120, 224, 450):
        cam = frame_camera(face_model.mean, 0, 0, 0, size)
        screen = dffx.project(face_model.mean, cam)
        depth = dffx.rasterize(screen, face_model.triangles, size).depth
        assert dffx.landmark_visibility(screen, face_model.landmarks68, depth).all(), size
    x = face_model.mean[face_model.landmarks68, 0]
    for yaw, near_side in ((90, x > 2), (-90, x < -2)):
        cam = frame_camera(face_model.mean, 0, np.radians(yaw), 0, 224)
        screen = dffx.project(face_model.mean, cam)
        depth = dffx.rasterize(screen, face_model.triangles, 224).depth
        vis = dffx.landmark_visibility(screen, face_model.landmarks68, depth)
        far_side = (-x > 2) if yaw > 0 else (x > 2)
        assert vis[near_side].mean() > 0.85 and vis[far_side].mean() < 0.15, (yaw, vis)


def test_face_mesh_native_matches_twin(face_model, rng):
    p_id = rng.normal(size=(2, face_model.n_identity))
    p_exp = rng.uniform(0, 0.5, (2, face_model.n_expression))
    shapes = face_model.shape(p_id, p_exp)
    cams = np.stack([frame_camera(shapes[0], 0.2, 0.9, -0.1, 224), frame_camera(shapes[1], -0.3, -1.5, 0.2, 224)])
    screen = np.stack([dffx.project(s, c) for s, c in zip(shapes, cams)])
    got = dffx.rasterize(screen, face_model.triangles, 224)
    assert_same_raster(got, ref.rasterize_reference(screen, face_model.triangles, 224, 224))
    assert (got.triangle_id >= 0).sum() > 10000


@pytest.mark.parametrize("seed", range(3))
def test_mesh_visibility_matches_the_full_depth_buffer_and_its_twin(seed):
    """mesh_landmark_visibility = rasterize + landmark_visibility, bit for bit, on soups with
    landmarks inside, on the border and outside, at every thread count and batch size."""
    rng = np.random.default_rng(seed)
    v, tris = random_soup(rng, 3, 80, 300, 37, 29)
    idx = rng.integers(0, 80, 50)
    for tol in (0.0, 1.0, 7.5):
        want = ref.mesh_landmark_visibility_reference(v, tris, idx, 37, 29, tol)
        np.testing.assert_array_equal(want, dffx.landmark_visibility(v, idx, dffx.rasterize(v, tris, (37, 29)).depth,
                                                                      tol))
        for threads in (1, 2, 5):
            got = dffx.ops.mesh_landmark_visibility(v, tris, idx, (37, 29), tol, threads=threads)
            np.testing.assert_array_equal(got, want, err_msg=f"tol {tol}, threads {threads}")
        np.testing.assert_array_equal(dffx.ops.mesh_landmark_visibility(v[1], tris, idx, (37, 29), tol), want[1])
    assert 0 < want.sum() < want.size


@pytest.mark.parametrize("seed", range(2))
def test_mesh_visibility_at_huge_image_sizes_reads_only_the_landmarks_pixels(seed):
    """Issue 28, case 1: memory follows the landmarks, not H x W. A soup in a 40 x 30 corner
    gives the same visibility in a 40 x 30 image, in a 10^5 x 10^5 image (where full buffers
    took 2 x 40 GB) and at the largest side accepted; a copy of it moved 10^6 px away (so the
    landmarks span most of a 2^24-px image: no grid fits their box) gives its own answer too.
    Sides over 2^24 are refused with a named error (2^32 overflowed H * W and crashed)."""
    rng = np.random.default_rng(seed)
    v, tris = random_soup(rng, 1, 60, 200, 30, 40)
    v[..., :2] = np.clip(v[..., :2], 1.0, [37.0, 27.0])  # inside: no 2x2 read is clamped at a border
    idx = rng.integers(0, 60, 40).astype(np.int32)
    want = ref.mesh_landmark_visibility_reference(v, tris, idx, 30, 40, 1.0)
    assert 0 < want.sum() < want.size
    for size in ((30, 40), (100_000, 100_000), (2**24, 2**24)):
        np.testing.assert_array_equal(dffx.ops.mesh_landmark_visibility(v, tris, idx, size, 1.0), want)
    far = v.copy()
    far[..., :2] += 1_000_000.0
    both = np.concatenate([v, far], axis=1)
    twice = np.concatenate([tris, tris + 60])
    got = dffx.ops.mesh_landmark_visibility(both, twice, np.r_[idx, idx + 60].astype(np.int32), 2**24, 1.0)
    np.testing.assert_array_equal(got[0], np.r_[want[0], want[0]])
    for side in (2**24 + 1, 2**32):
        with pytest.raises(ValueError, match="at most 16777216 per side"):
            dffx.ops.mesh_landmark_visibility(v, tris, idx, side)
        with pytest.raises(ValueError, match="at most 16777216 per side"):
            C.mesh_landmark_visibility(v, tris, idx, side, side, 1.0, 0)


def test_thread_creation_failure_falls_back_to_the_calling_thread(tmp_path):
    """Issue 28, case 3: under an address-space limit that leaves room for few threads, asking
    for thousands gives the single-thread result instead of std::terminate (an abort)."""
    import subprocess
    import sys

    script = tmp_path / "threads.py"
    script.write_text("""
import resource
import numpy as np
import dffx
rng = np.random.default_rng(0)
v = rng.uniform(0, 64, (1, 50, 3)).astype(np.float32)
t = rng.integers(0, 50, (100, 3)).astype(np.int32)
one = dffx.rasterize(v, t, 64, threads=1).depth
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize")) * 1024
limit = size + (1 << 30)  # 1 GB more address space: room for ~100 thread stacks of 8 MB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
many = dffx.rasterize(v, t, 64, threads=5000).depth
vis = dffx.ops.mesh_landmark_visibility(v, t, np.arange(50, dtype=np.int32), 64, threads=5000)
assert np.array_equal(one, many), "threads changed the result"
print("ok", int(vis.sum()))
""")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stderr[-2000:]


def test_mesh_visibility_of_turned_faces(face_model, rng):
    """On the face mesh at yaws up to 90 deg (many landmarks hidden by the nose and cheek) the
    sparse depth agrees with the full rasterizer's visibility for all 160 landmarks."""
    shapes = face_model.shape(rng.normal(size=(6, face_model.n_identity)),
                              rng.uniform(0, 0.5, (6, face_model.n_expression)))
    screen = np.stack([dffx.project(s, frame_camera(s, rng.uniform(-0.4, 0.4), np.radians(yaw), rng.uniform(-0.3, 0.3),
                                                    224))
                       for s, yaw in zip(shapes, (0, 20, -45, 60, -75, 90))])
    full = dffx.rasterize(screen, face_model.triangles, 224).depth
    want = dffx.landmark_visibility(screen, face_model.landmarks160, full)
    got = dffx.ops.mesh_landmark_visibility(screen, face_model.triangles, face_model.landmarks160, 224)
    np.testing.assert_array_equal(got, want)
    assert want[0].mean() > 0.9 and want[-1].mean() < 0.7  # frontal: nearly all seen; profile: many hidden


def test_torch_cpu_tensors_round_trip(rng):
    torch = pytest.importorskip("torch")
    v, tris = random_soup(rng, 2, 30, 60, 20, 20)
    out = dffx.rasterize(torch.from_numpy(v), torch.from_numpy(tris), 20)
    assert isinstance(out.depth, torch.Tensor)
    assert_same_raster([o.numpy() for o in out], dffx.rasterize(v, tris, 20))
    vis = dffx.landmark_visibility(torch.from_numpy(v), torch.arange(30), out.depth)
    assert vis.dtype == torch.bool and vis.shape == (2, 30)


@pytest.mark.parametrize("call, match", [
    (lambda: dffx.rasterize(np.zeros((3, 2)), [[0, 1, 2]], 8), "last dimension 3"),
    (lambda: dffx.rasterize(np.zeros((1, 2, 3, 3)), [[0, 1, 2]], 8), "shape"),
    (lambda: dffx.rasterize(np.zeros((0, 3)), [[0, 1, 2]], 8), "empty"),
    (lambda: dffx.rasterize(np.zeros((3, 3)), np.zeros((0, 3), int), 8), "empty"),
    (lambda: dffx.rasterize(np.zeros((3, 3)), [[0, 1, 3]], 8), "outside"),
    (lambda: dffx.rasterize(np.zeros((3, 3)), [[0, -1, 2]], 8), "outside"),
    (lambda: dffx.rasterize(np.zeros((3, 3)), [[0.0, 1.0, 2.0]], 8), "integers"),
    (lambda: dffx.rasterize(np.zeros((3, 3)), [[0, 1]], 8), "shape"),
    (lambda: dffx.rasterize(np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]]), [[0, 1, 2]], 8), "NaN"),
    (lambda: dffx.rasterize(np.zeros((3, 3)), [[0, 1, 2]], 0), "positive"),
    (lambda: dffx.rasterize(np.zeros((3, 3)), [[0, 1, 2]], (8, -1)), "positive"),
    (lambda: dffx.rasterize(np.zeros((3, 3)), [[0, 1, 2]], "big"), "image size"),
    (lambda: dffx.landmark_visibility(np.zeros((3, 3)), [5], np.zeros((4, 4))), "outside"),
    (lambda: dffx.landmark_visibility(np.zeros((3, 3)), [0], np.zeros((2, 4, 4))), "depth must have shape"),
    (lambda: dffx.landmark_visibility(np.zeros((3, 3)), [0], np.zeros((4, 4)), -1.0), "tolerance"),
    (lambda: dffx.landmark_visibility(np.array([[np.nan, 0, 0], [1, 1, 1]]), [0], np.zeros((4, 4))), "non-finite"),
    (lambda: dffx.landmark_visibility(np.zeros((2, 3, 3, 3)), [0], np.zeros((4, 4))), "shape"),
    (lambda: dffx.landmark_visibility(np.zeros((3, 3)), [0], np.zeros((4, 4)), np.nan), "tolerance"),
    (lambda: dffx.ops.mesh_landmark_visibility(np.zeros((3, 3)), [[0, 1, 2]], [5], 8), "outside"),
    (lambda: dffx.ops.mesh_landmark_visibility(np.zeros((3, 3)), [[0, 1, 3]], [0], 8), "outside"),
    (lambda: dffx.ops.mesh_landmark_visibility(np.zeros((3, 3)), [[0, 1, 2]], [0], 8, -1.0), "tolerance"),
    (lambda: dffx.ops.mesh_landmark_visibility(np.full((3, 3), np.inf), [[0, 1, 2]], [0], 8), "NaN or inf"),
    (lambda: dffx.ops.mesh_landmark_visibility(np.zeros((3, 3)), [[0, 1, 2]], [0], 0), "positive"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_native_module_rejects_bad_shapes_and_indices_directly():
    """The extension itself validates, so a C++-level misuse can never crash the process."""
    v = np.zeros((1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        C.rasterize(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]], np.int32), 8, 8)
    with pytest.raises(ValueError, match="outside"):
        C.rasterize(v, np.array([[0, 1, 9]], np.int32), 8, 8)
    with pytest.raises(ValueError, match="non-finite"):
        C.rasterize(np.full((1, 3, 3), np.inf, np.float32), np.array([[0, 1, 2]], np.int32), 8, 8)
    with pytest.raises(ValueError, match="positive"):
        C.rasterize(v, np.array([[0, 1, 2]], np.int32), 0, 8)
    with pytest.raises(ValueError, match="outside"):
        C.landmark_visibility(v, np.array([3], np.int32), np.zeros((1, 4, 4), np.float32), 1.0)
    tri = np.array([[0, 1, 2]], np.int32)
    with pytest.raises(ValueError, match="outside"):
        C.mesh_landmark_visibility(v, tri, np.array([3], np.int32), 8, 8, 1.0)
    with pytest.raises(ValueError, match="^mesh_landmark_visibility: vertices contains a non-finite"):
        C.mesh_landmark_visibility(np.full((1, 3, 3), np.nan, np.float32), tri, np.array([0], np.int32), 8, 8, 1.0)
    with pytest.raises(ValueError, match="tolerance"):
        C.mesh_landmark_visibility(v, tri, np.array([0], np.int32), 8, 8, -1.0)
    with pytest.raises(RuntimeError if not C.cuda_compiled() else ValueError):
        C.rasterize_cuda(0, 0, 0, 3, 1, 8, 8, 0, 0, 0, 0)  # sizes checked before any pointer is touched
