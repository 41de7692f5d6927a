"""``dffx::Cascade`` (csrc/cpu/cascade.cpp), the alignment cascade in C++, against its Python twin
:meth:`dffx.align.Cascade.run` on the DFF maps of real faces; its file (``dffx export-cascade``)."""

from __future__ import annotations

import numpy as np
import pytest

from dffx import _C


@pytest.fixture(scope="module")
def aligner(face_model):
    from dffx.align import FaceAligner

    return FaceAligner(model=face_model, backend="torch", device="cpu", refine=0)


@pytest.fixture(scope="module")
def cascade_file(tmp_path_factory, face_model):
    from dffx.cli import main

    path = tmp_path_factory.mktemp("cpp") / "cascade.dffx"
    assert main(["export-cascade", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def crops(aflw2000_dir):
    from conftest import _aflw2000_faces

    from dffx.preprocess import crop_face

    names = ["image00050", "image00251", "image04331", "image00081", "image00430"]  # yaw 0-70 degrees
    return np.stack([crop_face(image, box)[0] for image, _, box in _aflw2000_faces(aflw2000_dir, names)])


def test_cpp_cascade_matches_the_python_cascade(aligner, cascade_file, crops, face_model):
    cascade = _C.Cascade.load(str(cascade_file))
    assert (cascade.stages, cascade.crop_size, cascade.channels, cascade.num_landmarks) == (3, 224, 32, 160)
    assert (cascade.num_params, cascade.num_vertices) == (face_model.n_params, face_model.n_vertices)
    want = aligner.cascade.run(face_model, aligner.features, crops, native=False)
    maps = aligner.features.extractor.extract(crops).numpy()  # (B, 32, 224, 224)
    for channels_last, array in ((False, maps), (True, np.ascontiguousarray(maps.transpose(0, 2, 3, 1)))):
        got = cascade.run(array, channels_last=channels_last)
        # float32 products in another order, and the projection in float32 (Python: float64)
        np.testing.assert_allclose(got["landmarks"], want.X, atol=1e-3)
        np.testing.assert_array_equal(got["visible"], want.V[:, :68])
        np.testing.assert_allclose(got["cameras"], want.camera, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got["params"], want.params, atol=1e-3)
        np.testing.assert_allclose(got["scores"], want.score, atol=1e-5)
        shape = face_model.shape(want.params[:, :face_model.n_identity], want.params[:, face_model.n_identity:])
        from dffx.geometry.camera import project

        np.testing.assert_allclose(got["vertices"], project(shape, want.camera), atol=2e-3)


def test_cpp_cascade_names_bad_files_and_maps(tmp_path, cascade_file, face_model):
    from dffx.align.cascade import Cascade
    from dffx.align.export import write_cascade_file
    from dffx.align.predictor import default_cascade_path

    with pytest.raises(RuntimeError, match="cannot be opened"):
        _C.Cascade.load(str(tmp_path / "missing.dffx"))
    (tmp_path / "other.dffx").write_bytes(b"PK\x03\x04 not a cascade")
    with pytest.raises(RuntimeError, match="not a dffx cascade file"):
        _C.Cascade.load(str(tmp_path / "other.dffx"))
    (tmp_path / "cut.dffx").write_bytes(cascade_file.read_bytes()[:100_000])
    with pytest.raises(RuntimeError, match="truncated"):
        _C.Cascade.load(str(tmp_path / "cut.dffx"))
    with pytest.raises(ValueError, match="only DFF cascades"):
        write_cascade_file(tmp_path / "sift.dffx", face_model, Cascade.load(default_cascade_path("sift")))
    cascade = _C.Cascade.load(str(cascade_file))
    with pytest.raises(ValueError, match=r"maps must have shape \(\*, 32, 224, 224\)"):
        cascade.run(np.zeros((1, 32, 112, 112), np.float32))
    with pytest.raises(ValueError, match="no faces"):
        cascade.run(np.zeros((0, 32, 224, 224), np.float32))
    # Maps with no feature anywhere (all zeros): every landmark samples zeros, nothing crashes.
    blank = cascade.run(np.zeros((1, 32, 224, 224), np.float32))
    assert np.isfinite(blank["landmarks"]).all() and blank["scores"][0] <= 0.0


def test_cascade_run_uses_the_cpp_twin_for_maps_in_cpu_memory(aligner, crops, face_model, cascade_file):
    """Cascade.run's default path (the C++ cascade, fed the extractor's channels-last output in
    place) against its Python loop; the in-memory file reads as the one on disk."""
    native = aligner.cascade.run(face_model, aligner.features, crops)
    loop = aligner.cascade.run(face_model, aligner.features, crops, native=False)
    np.testing.assert_allclose(native.X, loop.X, atol=1e-3)
    np.testing.assert_allclose(native.U, loop.U, atol=1e-3)
    np.testing.assert_array_equal(native.V, loop.V)
    np.testing.assert_allclose(native.camera, loop.camera, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(native.score, loop.score, atol=1e-5)
    assert native.params.dtype == np.float32 and native.params.shape == loop.params.shape
    maps = aligner.features.extractor.extract(crops[:1]).numpy()
    from_disk = _C.Cascade.load(str(cascade_file)).run(maps)
    in_memory = aligner.cascade._native(face_model).run(maps)
    for key in ("landmarks", "cameras", "scores"):
        np.testing.assert_array_equal(from_disk[key], in_memory[key])


def test_cpp_cascade_batches_split_between_threads_give_the_same_faces(aligner, crops, cascade_file):
    """A face's result does not depend on its batch or the thread count, to the bit: 19 faces (the
    5 crops repeated) fill the batch kernels' groups with remainders (mesh tiles of 8 faces on
    AVX-512, 4 on AVX2, 2 on the baseline; up to 16 faces per direction set), in several yaw
    sectors."""
    maps = aligner.features.extractor.extract(crops).numpy()
    many = np.concatenate([maps] * 4)[:19]
    cascade = _C.Cascade.load(str(cascade_file))
    one, two = cascade.run(many, threads=1), cascade.run(many, threads=2)
    alone = [cascade.run(maps[i:i + 1]) for i in range(len(maps))]
    for key in ("landmarks", "visible", "cameras", "params", "scores", "dense_visible", "vertices"):
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
        for j in range(len(many)):
            np.testing.assert_array_equal(one[key][j], alone[j % len(maps)][key][0], err_msg=key)


def test_cpp_fit_landmarks_matches_the_python_fit(aligner, crops, face_model, cascade_file):
    """dffx::Cascade::fit_landmarks (the cascade's eq. 6-8 fit and camera refit to given
    landmarks) against its twin Cascade.fit_landmarks(native=False): fitted to the cascade's own
    landmarks from its own final camera, it lands where the cascade did."""
    cascade = _C.Cascade.load(str(cascade_file))
    ran = cascade.run(aligner.features.extractor.extract(crops).numpy())
    model = aligner.cascade.bind(face_model)
    twin = aligner.cascade.fit_landmarks(model, ran["landmarks"], ran["cameras"], native=False)
    got = cascade.fit_landmarks(ran["landmarks"], ran["cameras"])
    np.testing.assert_allclose(got["landmarks"], twin.X, atol=1e-3)
    np.testing.assert_allclose(got["cameras"], twin.camera, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got["params"], twin.params, atol=1e-3)
    np.testing.assert_array_equal(got["dense_visible"], twin.V)
    assert got["scores"] is None
    # the cascade's landmarks are its fitted mesh's: fitted again, they move little (the shape prior
    # and the refit's angle prior pull them): under 1 px on average, 0.7 % of a 150-px face
    assert np.linalg.norm(got["landmarks"] - ran["landmarks"], axis=-1).mean() < 1.0
    one = cascade.fit_landmarks(ran["landmarks"][2:3], ran["cameras"][2:3], threads=1)
    np.testing.assert_array_equal(one["landmarks"], cascade.fit_landmarks(ran["landmarks"], ran["cameras"],
                                                                          threads=2)["landmarks"][2:3])
    single = aligner.cascade.fit_landmarks(model, ran["landmarks"][2:3], ran["cameras"][2:3], threads=1)
    np.testing.assert_array_equal(single.X, one["landmarks"])  # the Python entry passes threads on
    bad = ran["cameras"].copy()
    bad[0, 0] = 0.0
    with pytest.raises(ValueError, match="scale not > 0"):
        cascade.fit_landmarks(ran["landmarks"], bad)
    nan = ran["landmarks"].copy()
    nan[1, 5, 0] = np.nan
    with pytest.raises(ValueError, match="landmarks must be finite"):
        cascade.fit_landmarks(nan, ran["cameras"])
    with pytest.raises(ValueError, match="landmarks"):
        cascade.fit_landmarks(ran["landmarks"][:, :60], ran["cameras"])
    with pytest.raises(ValueError, match="finite"):
        aligner.cascade.fit_landmarks(model, nan, ran["cameras"])


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_cpp_cascade_vector_builds_agree(aligner, crops, cascade_file, tmp_path, isa):
    """Each vector build of the cascade's loops (DFFX_CPU_KERNELS, read once per process, so each
    runs in its own) gives the faces of the build this process picked, to float rounding: the
    FMA builds sum in another rounding, the products in another order than Eigen's before."""
    import subprocess
    import sys

    maps = aligner.features.extractor.extract(crops).numpy()
    np.save(tmp_path / "maps.npy", maps)
    # In its build, each face of a 19-face batch (the grouped mesh and product kernels) is the face
    # alone to the bit.
    script = ("import sys, numpy as np; from dffx import _C; c = _C.Cascade.load(sys.argv[1]); "
              "m = np.load(sys.argv[2]); r = c.run(m); print(_C.Cascade.kernel_isa()); "
              "b = c.run(np.concatenate([m] * 4)[:19]); a = [c.run(m[i:i + 1]) for i in range(len(m))]; "
              "print(all(np.array_equal(b[k][j], a[j % len(m)][k][0]) for k in r if r[k] is not None "
              "for j in range(19))); "
              "np.savez(sys.argv[3], **{k: v for k, v in r.items() if v is not None})")
    env = {**__import__("os").environ, "DFFX_CPU_KERNELS": isa}
    ran = subprocess.run([sys.executable, "-c", script, str(cascade_file), str(tmp_path / "maps.npy"),
                          str(tmp_path / "out.npz")], env=env, capture_output=True, text=True, check=True)
    used, batch_is_alone = ran.stdout.split()
    assert batch_is_alone == "True"
    assert used in ("baseline", "avx2+fma", "avx512f")
    if isa == "baseline":
        assert used == "baseline"  # the baseline is always there; wider builds only on CPUs that run them
    got, want = np.load(tmp_path / "out.npz"), _C.Cascade.load(str(cascade_file)).run(maps)
    np.testing.assert_allclose(got["landmarks"], want["landmarks"], atol=1e-3)
    np.testing.assert_allclose(got["vertices"], want["vertices"], atol=2e-3)
    np.testing.assert_array_equal(got["dense_visible"], want["dense_visible"])
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)


def test_cpp_camera_refit_follows_the_file(aligner, crops, face_model, tmp_path):
    """The camera refit's settings travel in the file: 0 rounds in C++ is the Python loop without
    the refit, and differs from the default; settings out of range are a named error."""
    import copy

    from dffx.align.export import write_cascade_file

    plain = copy.copy(aligner.cascade)
    plain.refit_rounds = 0
    plain._native_cascade = None
    want = plain.run(face_model, aligner.features, crops, native=False)
    maps = aligner.features.extractor.extract(crops).numpy()
    got = _C.Cascade.load(str(write_cascade_file(tmp_path / "plain.dffx", face_model, plain))).run(maps)
    np.testing.assert_allclose(got["landmarks"], want.X, atol=1e-3)
    np.testing.assert_allclose(got["cameras"], want.camera, rtol=1e-5, atol=1e-4)
    # a run told to skip the refit is the file without it; Cascade.run passes the flag through
    skipped = aligner.cascade._native(face_model).run(maps, camera_refit=False)
    np.testing.assert_array_equal(skipped["landmarks"], got["landmarks"])
    unrefit = aligner.cascade.run(face_model, aligner.features, crops, camera_refit=False)
    np.testing.assert_allclose(unrefit.X, want.X, atol=1e-3)
    refit = aligner.cascade.run(face_model, aligner.features, crops)
    assert np.abs(refit.camera[:, 1:4] - want.camera[:, 1:4]).max() > 1e-3  # the refit moved the angles
    plain.refit_rounds = 1000
    with pytest.raises(RuntimeError, match="camera_refit"):
        _C.Cascade.load(str(write_cascade_file(tmp_path / "bad.dffx", face_model, plain)))


def _header(name: bytes, dtype: int, dims) -> bytes:
    """One array header of the cascade file format (dffx.align.export)."""
    import struct

    return struct.pack("<I", len(name)) + name + struct.pack("<BI", dtype, len(dims)) + struct.pack(
        f"<{len(dims)}q", *dims)


def test_cpp_cascade_reader_checks_every_size_before_allocating(tmp_path, cascade_file):
    """Issue 28, cases 2, 4 and 11: sizes read from a file are checked against overflow and
    against the bytes that are there before anything is allocated; a crop size or channel count
    out of range is refused at load (a 2^32 crop crashed run()); a damaged array name is shown
    escaped instead of making the message undecodable."""
    import struct

    from dffx.align.export import MAGIC

    def load(data: bytes, name: str):
        path = tmp_path / name
        path.write_bytes(data)
        _C.Cascade.load(str(path))

    # 30 bytes declaring 2^28 float64 (2.1 GB was allocated before the read failed)
    with pytest.raises(RuntimeError, match="shorter than its header says"):
        load(MAGIC + struct.pack("<I", 1) + _header(b"mean", 1, [2**28]), "huge.dffx")
    # dims [2^32, 2^32, 1] wrapped around to 0 elements
    with pytest.raises(RuntimeError, match="array 'mean': too large"):
        load(MAGIC + struct.pack("<I", 1) + _header(b"mean", 0, [2**32, 2**32, 1]), "wrap.dffx")
    with pytest.raises(RuntimeError, match=r"array 'm\\xffan': unknown dtype"):
        load(MAGIC + struct.pack("<I", 1) + _header(b"m\xffan", 7, [1]), "name.dffx")

    data = bytearray(cascade_file.read_bytes())
    at = data.index(struct.pack("<I", 7) + b"scalars") + 4 + 7 + 1 + 4 + 8  # w_reg, tolerance, crop, C, m1
    for index, value in ((2, 2.0**32), (2, np.nan), (3, 2.0**57), (3, 0.0), (4, -1.0)):
        bad = bytearray(data)
        bad[at + 8 * index: at + 8 * index + 8] = struct.pack("<d", value)
        with pytest.raises(RuntimeError, match="scalars out of range"):
            load(bytes(bad), "scalars.dffx")
    _C.Cascade.from_bytes(bytes(data))  # the untouched file still loads


def _generic_twin(cascade):
    """The shipped cascade as three generic stages, whatever its layout (a pose-fused file's
    sector stages contribute their frontal sector's directions)."""
    import copy

    plain = copy.copy(cascade)
    R_X, R_w = list(cascade.R_X), list(cascade.R_w)
    if cascade.has_sectors:
        middle = len(cascade.sector_yaw) // 2
        R_X += list(cascade.R_X_sectors[:, middle])
        R_w += list(cascade.R_w_sectors[:, middle])
    plain.R_X, plain.R_w = np.stack(R_X), np.stack(R_w)
    plain.sector_yaw = plain.R_X_sectors = plain.R_w_sectors = plain.R_w_pose = None
    plain._native_cascade = None
    return plain


def _sector_twin(cascade):
    """A pose-fused cascade built from the shipped one: stage 1 generic, stages 2-3 per yaw sector
    (centres -30, 0, 30: the test faces' yaws, 0-70 degrees, fall in and beyond the blend)."""
    import copy

    plain = _generic_twin(cascade)
    fused = copy.copy(plain)
    gains = np.array([0.9, 1.0, 1.1], np.float32)[None, :, None, None]
    fused.R_X, fused.R_w = plain.R_X[:1], plain.R_w[:1]
    fused.sector_yaw = np.array([-30.0, 0.0, 30.0])
    fused.R_X_sectors = np.ascontiguousarray(plain.R_X[1:, None] * gains)
    fused.R_w_sectors = np.ascontiguousarray(plain.R_w[1:, None] * gains)
    fused._native_cascade = None
    return fused


def test_cpp_cascade_blends_yaw_sectors_as_the_python_cascade(aligner, crops, face_model, tmp_path):
    """Issue 27's pose fusion in C++ (the file's sector arrays) against the Python loop."""
    from dffx.align.export import write_cascade_file

    fused = _sector_twin(aligner.cascade)
    want = fused.run(face_model, aligner.features, crops, native=False)
    plain = _generic_twin(aligner.cascade).run(face_model, aligner.features, crops, native=False)
    assert np.abs(want.X - plain.X).max() > 0.1  # the sector directions do change the result
    got = fused.run(face_model, aligner.features, crops)  # the C++ twin (maps in CPU memory)
    np.testing.assert_allclose(got.X, want.X, atol=1e-3)
    np.testing.assert_allclose(got.camera, want.camera, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got.score, want.score, atol=1e-5)
    path = write_cascade_file(tmp_path / "fused.dffx", face_model, fused)
    assert _C.Cascade.load(str(path)).stages == 3
    # a damaged sector array is refused by name
    bad = _sector_twin(aligner.cascade)
    bad.sector_yaw = np.array([0.0, 0.0, 30.0])
    path = write_cascade_file(tmp_path / "bad.dffx", face_model, bad)
    with pytest.raises(RuntimeError, match="strictly increasing"):
        _C.Cascade.load(str(path))


def test_cpp_cascade_runs_a_pose_start_as_the_python_cascade(aligner, crops, face_model, tmp_path):
    """Issue 27's pose start in C++ (the file's R_w_pose: camera-only stages first) against the
    Python loop, alone and with yaw sectors after it."""
    import copy

    for base in (_generic_twin(aligner.cascade), _sector_twin(aligner.cascade)):
        posed = copy.copy(base)
        posed.R_w_pose = np.ascontiguousarray(aligner.cascade.R_w[:1])
        posed._native_cascade = None
        want = posed.run(face_model, aligner.features, crops, native=False)
        got = posed.run(face_model, aligner.features, crops)
        assert posed.stages == base.stages + 1
        assert np.abs(want.X - base.run(face_model, aligner.features, crops, native=False).X).max() > 0.1
        np.testing.assert_allclose(got.X, want.X, atol=1e-3)
        np.testing.assert_allclose(got.camera, want.camera, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got.score, want.score, atol=1e-5)
