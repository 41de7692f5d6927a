"""Face model (eq. 3) on the real ICT-FaceKit data: both published and repacked layouts,
our .npz, landmark sets, NumPy/torch evaluation, and clear errors for a missing model."""

import json
import shutil

import numpy as np
import pytest

import dffx
from dffx.errors import ModelNotFoundError
from dffx.model.face_model import FACE_VERTEX_COUNT, NARROW_FACE_VERTEX_COUNT


def test_sizes_and_landmarks(face_model, ict_dir):
    m = face_model
    assert m.n_vertices == FACE_VERTEX_COUNT == 9409
    assert m.triangles.shape == (18460, 3) and m.triangles.dtype == np.int32
    assert m.triangles.min() == 0 and m.triangles.max() < m.n_vertices
    assert (m.n_identity, m.n_expression, m.n_params) == (80, 55, 135)
    assert "PupilDilate_L" not in m.expression_names and "jawOpen" in m.expression_names
    published = json.loads((ict_dir / "vertex_indices.json").read_text())["idx_to_landmark_verts"]
    np.testing.assert_array_equal(m.landmarks68, published)
    assert m.landmarks160.shape == (160,) and len(set(m.landmarks160.tolist())) == 160
    np.testing.assert_array_equal(m.landmarks160[:68], m.landmarks68)
    assert m.landmarks160[68:].max() < NARROW_FACE_VERTEX_COUNT


def test_dense_landmarks_cover_the_face_evenly(face_model):
    """Every narrow-face vertex is within 1.5 cm of a dense landmark (5.8 cm for the 68 alone)."""
    narrow = face_model.mean[:NARROW_FACE_VERTEX_COUNT]

    def worst_gap(idx):
        return np.linalg.norm(narrow[:, None] - face_model.mean[idx][None], axis=2).min(1).max()

    assert worst_gap(face_model.landmarks160) < 1.5 < 5.0 < worst_gap(face_model.landmarks68)
    added = face_model.mean[face_model.landmarks160[68:]]
    spacing = np.linalg.norm(added[:, None] - added[None], axis=2) + np.eye(len(added)) * 1e9
    assert spacing.min() > 1.0  # no clumps


def test_triangles_face_outwards(face_model):
    v = face_model.mean[face_model.triangles]
    normal_z = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2]
    front = v.mean(1)[:, 2] > 5  # the front of the face (cm)
    assert (normal_z[front] > 0).mean() > 0.85


def test_shape_reproduces_ict_modes_exactly(face_model, ict_dir):
    with np.load(ict_dir / "shapes.npz") as d:
        neutral, identity, expression = d["neutral"][:9409], d["identity"], d["expression"]
        names = list(d["expression_names"])
    np.testing.assert_array_equal(face_model.shape(), neutral)
    for k in (0, 7, 79):
        p = np.zeros(80)
        p[k] = 1
        np.testing.assert_allclose(face_model.shape(p_id=p), identity[k, :9409], atol=1e-5)
    for name in ("jawOpen", "mouthSmile_L", "eyeBlink_R"):
        j = face_model.expression_names.index(name)
        p = np.zeros(55)
        p[j] = 1
        np.testing.assert_allclose(face_model.shape(p_exp=p), expression[names.index(name), :9409], atol=1e-5)


def test_shape_is_linear_and_batched(face_model, rng):
    p_id, p_exp = rng.normal(size=(3, 80)), rng.uniform(0, 1, (3, 55))
    batch = face_model.shape(p_id, p_exp)
    assert batch.shape == (3, 9409, 3) and batch.dtype == np.float32
    for b in range(3):
        np.testing.assert_allclose(batch[b], face_model.shape(p_id[b], p_exp[b]), atol=1e-4)
    mixed = face_model.shape(p_id[0] + 2 * p_id[1])
    np.testing.assert_allclose(mixed - face_model.mean,
                               (face_model.shape(p_id[0]) - face_model.mean) + 2 * (face_model.shape(p_id[1]) - face_model.mean),
                               atol=1e-4)


def test_torch_twin_matches_numpy(face_model, rng):
    torch = pytest.importorskip("torch")
    p_id, p_exp = rng.normal(size=(2, 80)), rng.uniform(0, 1, (2, 55))
    got = face_model.shape_torch(torch.tensor(p_id, dtype=torch.float64), torch.tensor(p_exp, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), face_model.shape(p_id, p_exp), atol=1e-4)
    p = torch.zeros(1, 80, requires_grad=True)
    face_model.shape_torch(p).sum().backward()
    np.testing.assert_allclose(p.grad.numpy()[0], face_model.identity_basis.sum((0, 1)), rtol=1e-4, atol=1e-3)


def test_landmark_model(face_model):
    mean, basis, prior = face_model.landmark_model()
    assert mean.shape == (68, 3) and basis.shape == (68, 3, 135) and prior.shape == (135,)
    np.testing.assert_array_equal(mean, face_model.mean[face_model.landmarks68])
    np.testing.assert_array_equal(prior, 1.0)
    with pytest.raises(ValueError, match="landmark indices"):
        face_model.landmark_model([0, 10 ** 6])


def test_npz_round_trip(face_model, tmp_path):
    path = face_model.save(tmp_path / "model.npz")
    loaded = dffx.load_face_model(path)
    for name in ("mean", "triangles", "identity_basis", "expression_basis", "landmarks68", "landmarks160",
                 "identity_variance", "expression_variance"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(face_model, name), err_msg=name)
    assert loaded.expression_names == face_model.expression_names


def write_obj(path, vertices):
    path.write_text("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices))


def small_published_model(ict_dir, folder):
    """A published-layout FaceXModel folder with 3 identities and 3 expressions of the real model."""
    folder.mkdir(parents=True)
    shutil.copy(ict_dir / "generic_neutral_mesh.obj", folder)
    shutil.copy(ict_dir / "vertex_indices.json", folder)
    with np.load(ict_dir / "shapes.npz") as d:
        for k in range(3):
            write_obj(folder / f"identity{k:03d}.obj", d["identity"][k])
        names = list(d["expression_names"])
        for name in ("jawOpen", "browDown_L", "PupilDilate_L"):
            write_obj(folder / f"{name}.obj", d["expression"][names.index(name)])
    return folder


def test_published_facexmodel_layout(face_model, ict_dir, tmp_path, monkeypatch):
    """ICT-FaceKit as published: FaceXModel/ with one .obj per identity and expression."""
    monkeypatch.setenv("DFFX_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "ICT-FaceKit" / "FaceXModel"
    small_published_model(ict_dir, folder)
    model = dffx.load_face_model(folder.parent, n_identity=3)  # the repository root works too
    assert model.n_identity == 3
    assert model.expression_names == ("browDown_L", "jawOpen")  # PupilDilate_L moves no face vertex
    np.testing.assert_allclose(model.identity_basis, face_model.identity_basis[:, :, :3], atol=2e-6)
    for j, name in enumerate(model.expression_names):
        np.testing.assert_allclose(model.expression_basis[:, :, j],
                                   face_model.expression_basis[:, :, face_model.expression_names.index(name)], atol=2e-6)
    np.testing.assert_array_equal(model.triangles, face_model.triangles)


def test_published_layout_is_parsed_once_then_read_from_the_cache(ict_dir, tmp_path, monkeypatch):
    import dffx.model.face_model as fm

    cache = tmp_path / "cache"
    monkeypatch.setenv("DFFX_CACHE_DIR", str(cache))
    folder = small_published_model(ict_dir, tmp_path / "FaceXModel")
    first = dffx.load_face_model(folder, n_identity=2)
    assert len(list(cache.glob("ict-facexmodel-*.npz"))) == 1 and not list(cache.glob("*.tmp.npz"))

    def no_parsing(path):
        raise AssertionError(f"parsed {path} although it is cached")

    with monkeypatch.context() as m:
        m.setattr(fm, "read_obj_vertices", no_parsing)
        again = dffx.load_face_model(folder, n_identity=2)
    for name in ("mean", "identity_basis", "expression_basis", "triangles", "landmarks160"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name), err_msg=name)
    assert again.identity_names == first.identity_names and again.expression_names == first.expression_names

    # An edited .obj is parsed again (a new cache entry); a damaged cache file is parsed over.
    with np.load(ict_dir / "shapes.npz") as d:
        write_obj(folder / "identity001.obj", d["identity"][5])
    edited = dffx.load_face_model(folder, n_identity=2)
    assert not np.array_equal(edited.identity_basis, first.identity_basis)
    assert len(list(cache.glob("ict-facexmodel-*.npz"))) == 2
    for f in cache.glob("ict-facexmodel-*.npz"):
        f.write_bytes(f.read_bytes()[:1000])  # truncated
    np.testing.assert_array_equal(dffx.load_face_model(folder, n_identity=2).identity_basis, edited.identity_basis)


@pytest.mark.parametrize("setting", ["off", "unwritable"])
def test_published_layout_loads_without_a_cache(ict_dir, tmp_path, monkeypatch, setting):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DFFX_CACHE_DIR", "" if setting == "off" else str(blocker / "cache"))
    folder = small_published_model(ict_dir, tmp_path / "FaceXModel")
    assert dffx.load_face_model(folder, n_identity=2).n_identity == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FaceXModel", "a-file"]


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from dffx.config import cache_dir

    monkeypatch.delenv("DFFX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "dffx"
    monkeypatch.setenv("DFFX_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("DFFX_CACHE_DIR", "")
    assert cache_dir() is None


def test_model_path_from_environment(monkeypatch, ict_dir):
    monkeypatch.setenv("DFFX_FACE_MODEL", str(ict_dir))
    assert dffx.load_face_model(n_identity=5).n_identity == 5


def test_missing_model_errors_name_the_path_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("DFFX_FACE_MODEL", raising=False)
    with pytest.raises(ModelNotFoundError, match="DFFX_FACE_MODEL is not set.*ICT-FaceKit"):
        dffx.load_face_model()
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelNotFoundError, match=f"{missing}.*git clone"):
        dffx.load_face_model(missing)
    with pytest.raises(ModelNotFoundError, match="holds no ICT-FaceKit model"):
        dffx.load_face_model(tmp_path)
    assert issubclass(ModelNotFoundError, FileNotFoundError)


def test_damaged_model_files_are_named(ict_dir, tmp_path):
    """Issue 28 (8): a truncated or foreign shapes.npz, a random .npz model and a broken
    vertex_indices.json give one ValueError naming the file, not a zipfile/pickle/JSON traceback."""
    import re
    import shutil

    folder = tmp_path / "ict"
    folder.mkdir()
    for name in ("generic_neutral_mesh.obj", "vertex_indices.json"):
        (folder / name).symlink_to(ict_dir / name)
    shapes = folder / "shapes.npz"
    shapes.write_bytes((ict_dir / "shapes.npz").read_bytes()[:100_000])  # truncated
    with pytest.raises(ValueError, match=re.escape(str(shapes))):
        dffx.load_face_model(folder)
    shapes.write_bytes(np.random.default_rng(0).bytes(5000))  # not a zip, not an array
    with pytest.raises(ValueError, match=re.escape(str(shapes))):
        dffx.load_face_model(folder)
    shutil.copy(ict_dir / "shapes.npz", shapes)
    (folder / "vertex_indices.json").unlink()
    (folder / "vertex_indices.json").write_text('{"idx_to_landmark_verts": [1, 2')
    with pytest.raises(ValueError, match="cannot read .*vertex_indices.json"):
        dffx.load_face_model(folder)
    random_model = tmp_path / "random.npz"
    random_model.write_bytes(np.random.default_rng(1).bytes(3000))
    with pytest.raises(ValueError, match=re.escape(str(random_model))):
        dffx.load_face_model(random_model)


def test_bad_model_arguments(face_model, ict_dir, tmp_path):
    with pytest.raises(ValueError, match="n_identity"):
        dffx.load_face_model(ict_dir, n_identity=0)
    with pytest.raises(ValueError, match="identity modes"):
        dffx.load_face_model(ict_dir, n_identity=101)
    with pytest.raises(ValueError, match="expression_variance"):
        dffx.load_face_model(ict_dir, expression_variance=0)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a dffx face model"):
        dffx.load_face_model(other)
    with pytest.raises(ValueError, match="last dimension 80"):
        face_model.shape(np.zeros(79))
    with pytest.raises(ValueError, match="NaN"):
        face_model.shape(p_exp=np.full(55, np.nan))


def test_write_obj_round_trips_the_mesh_and_names_bad_input(face_model, tmp_path):
    from dffx.model.obj import read_obj_faces, read_obj_vertices, write_obj

    vertices = face_model.mean.reshape(-1, 3)
    path = write_obj(tmp_path / "mean.obj", vertices, face_model.triangles, comment="mean face\nsecond line")
    np.testing.assert_allclose(read_obj_vertices(path), vertices, atol=5e-5)
    assert np.array_equal(np.asarray(read_obj_faces(path)), face_model.triangles)
    assert path.read_text().startswith("# mean face\n# second line\nv ")
    with pytest.raises(ValueError, match="vertices must be"):
        write_obj(tmp_path / "x.obj", vertices[:, :2], face_model.triangles)
    with pytest.raises(ValueError, match="vertices must be"):
        write_obj(tmp_path / "x.obj", np.full((3, 3), np.nan), [[0, 1, 2]])
    with pytest.raises(ValueError, match="triangles must be"):
        write_obj(tmp_path / "x.obj", vertices[:2], [[0, 1, 2]])
    with pytest.raises(ValueError, match="triangles must be"):
        write_obj(tmp_path / "x.obj", vertices, np.zeros((4, 3)))
