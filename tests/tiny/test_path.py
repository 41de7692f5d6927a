"""dffx.tiny.path and dffx.align.tiny_route: the tiny-face path at inference."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dffx.preprocess import CROP_SCALE  # noqa: E402
from dffx.tiny.net import TinyFaceNet  # noqa: E402
from dffx.tiny.path import (TINY_MAX_FACE_SIZE, TINY_NETWORK_MAX_FACE_SIZE, TinyPath,  # noqa: E402
                             load_tiny_net, network_faces, tiny_faces)
from dffx.tiny.train import TinyTrainConfig, save_weights  # noqa: E402


def _weights(tmp_path, **arch):
    torch.manual_seed(0)
    net = TinyFaceNet(**{"width": 8, "blocks": 1, **arch})
    return save_weights(net, TinyTrainConfig(out=""), tmp_path / "tiny.pt"), net


def test_weights_and_checkpoints_load_into_the_same_network(tmp_path):
    path, net = _weights(tmp_path)
    loaded, config = load_tiny_net(path)
    assert config == {"width": 8, "blocks": 1, "sr": True, "landmark_head": "heatmap"} and not loaded.training
    lr = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(lr)["landmarks"], net.eval()(lr)["landmarks"])
    checkpoint = tmp_path / "step.pt"
    torch.save({"format": "dffx.tiny-checkpoint", "net": net.state_dict(), "optimizer": {}, "step": 3,
                "config": {"width": 8, "blocks": 1, "sr": True, "landmark_head": "heatmap", "lr": 1e-3}}, checkpoint)
    torch.testing.assert_close(load_tiny_net(checkpoint)[0](lr)["sr"], net(lr)["sr"])


def test_missing_foreign_and_damaged_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="tiny-face weights file not found"):
        load_tiny_net(tmp_path / "none.pt")
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable tiny-face weights file"):
        load_tiny_net(tmp_path / "text.pt")
    torch.save({"format": "dffx.dff-weights"}, tmp_path / "dff.pt")
    with pytest.raises(ValueError, match="not a dffx tiny-face weights file"):
        load_tiny_net(tmp_path / "dff.pt")
    path, net = _weights(tmp_path)
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["stem.weight"][0, 0, 0, 0] = float("nan")
    torch.save(blob, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="non-finite weights .* stem.weight"):
        load_tiny_net(tmp_path / "nan.pt")
    blob = torch.load(path, weights_only=True)
    blob["config"]["width"] = 10 ** 9  # a header that would allocate gigabytes
    torch.save(blob, tmp_path / "huge.pt")
    with pytest.raises(ValueError, match="width and blocks must be integers"):
        load_tiny_net(tmp_path / "huge.pt")
    blob = torch.load(path, weights_only=True)
    blob["config"]["width"] = 16
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not match the stored config"):
        load_tiny_net(tmp_path / "mismatch.pt")


def test_the_modes_pick_faces_by_box_size():
    t = TINY_MAX_FACE_SIZE
    boxes = np.array([[0, 0, 0.5 * t, 0.9 * t], [5, 5, 5 + t, 10], [0, 0, 200, 180]], float)
    assert tiny_faces(boxes, "auto").tolist() == [True, False, False]
    assert tiny_faces(boxes, "always").all() and not tiny_faces(boxes, "never").any()
    with pytest.raises(ValueError, match="tiny must be one of"):
        tiny_faces(boxes, "sometimes")


def test_the_methods_pick_the_landmark_network_for_the_smallest_boxes():
    t = TINY_NETWORK_MAX_FACE_SIZE
    boxes = np.array([[0, 0, 0.5 * t, 0.9 * t], [5, 5, 5 + t, 10], [0, 0, t + 1, 1]], float)
    assert network_faces(boxes, "auto").tolist() == [True, False, False]
    assert network_faces(boxes, "network").all() and not network_faces(boxes, "sr-cascade").any()
    with pytest.raises(ValueError, match="tiny_method must be one of"):
        network_faces(boxes, "heatmap")


class _Centre(torch.nn.Module):
    """A network whose landmarks are all at the 128-crop's centre and whose SR face is grey."""

    def forward(self, lr, sr=True):
        n = len(lr)
        return {"landmarks": torch.full((n, 68, 2), 63.5), "sr": torch.full((n, 3, 128, 128), 0.5)}


def test_crop_landmarks_come_back_at_the_face_box(tmp_path):
    path, _ = _weights(tmp_path)
    tiny = TinyPath(path)
    tiny.net = _Centre()
    image = np.zeros((300, 400, 3), np.uint8)
    boxes = np.array([[100.0, 50.0, 116.0, 70.0], [10.0, 200.0, 40.0, 226.0]])
    result = tiny.run(image, boxes)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    np.testing.assert_allclose(result.landmarks, np.repeat(centres[:, None], 68, axis=1), atol=1e-9)
    assert result.sr.shape == (2, 128, 128, 3) and result.sr.dtype == np.uint8 and (result.sr == 128).all()
    # the SR crop's transform: the box centre at the crop centre, the longer side 128 / CROP_SCALE px
    M = result.transforms[0]
    np.testing.assert_allclose(M[:, :2] @ centres[0] + M[:, 2], [63.5, 63.5])
    assert M[0, 0] == pytest.approx(128 / CROP_SCALE / 20.0)


def test_the_cascade_fit_to_projected_model_landmarks_finds_their_pose(face_model):
    """fit_tiny_landmarks (the tiny path's 3D outputs) on the cascade's own landmark vertices of the
    mean face projected under known cameras, in image pixels around small boxes: the angles come
    back within 2 degrees, the far side's jaw is hidden and the near side's shows."""
    import dffx
    from dffx.align.tiny_route import fit_tiny_landmarks
    from dffx.geometry.camera import project

    cascade = dffx.FaceAligner(model=face_model).cascade
    model = cascade.bind(face_model)
    rng = np.random.default_rng(0)
    cameras = [np.array([0.09, np.radians(-10), np.radians(30), np.radians(5), 60.0, 70.0]),
               np.array([0.06, 0.0, np.radians(-55), 0.0, 40.0, 35.0])]  # faces of about 12-16 px
    points, boxes = [], []
    for cam in cameras:
        p = project(model.mean[model.landmarks68].astype(np.float64), cam)[:, :2]
        points.append(p + rng.normal(0, 0.005, p.shape))
        boxes.append(np.r_[p.min(0), p.max(0)])
    fit = fit_tiny_landmarks(face_model, cascade, np.stack(points), np.stack(boxes))
    assert fit["camera"].shape == (2, 6) and fit["params"].shape == (2, face_model.n_params)
    for got, cam in zip(fit["camera"], cameras):
        np.testing.assert_allclose(np.degrees(got[1:4]), np.degrees(cam[1:4]), atol=2.0)
        assert got[0] == pytest.approx(cam[0], rel=0.05) and np.abs(got[4:6] - cam[4:6]).max() < 0.5
    visible = fit["visible"]
    assert visible[0, 11:17].all() and not visible[0, 0:3].any()    # yaw +30: the subject's right turns away
    assert visible[1, 0:6].all() and not visible[1, 12:17].any()    # yaw -55: the left
    with pytest.raises(ValueError, match="landmarks must be finite"):
        fit_tiny_landmarks(face_model, cascade, np.full((1, 68, 2), np.nan), np.array([[0, 0, 10, 10.0]]))


def test_onnx_export_runs_as_the_torch_network(tmp_path):
    """dffx.tiny.onnx_export and onnx_runtime: a network exported to ONNX gives TinyPath the same landmarks and SR face on
    ONNX Runtime as on PyTorch; a file that is not one is named."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from dffx.nn.integrity import file_sha256
    from dffx.tiny.onnx_export import export_tiny_onnx

    path, _ = _weights(tmp_path)
    onnx_path = export_tiny_onnx(tmp_path / "tiny.onnx", path)
    on_torch, on_ort = TinyPath(path), TinyPath(onnx_path)
    assert (on_torch.backend, on_ort.backend) == ("torch", "onnxruntime")
    assert on_ort.net.metadata["source_sha256"] == file_sha256(path)
    image = np.random.default_rng(1).integers(0, 255, (60, 70, 3), np.uint8)
    boxes = np.array([[10, 12, 26, 30], [30, 5, 62, 40.0]])
    a, b = on_torch.run(image, boxes), on_ort.run(image, boxes)
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
    assert np.abs(a.sr.astype(int) - b.sr.astype(int)).max() <= 1  # rounding to uint8 of equal floats
    assert on_ort.run(image, boxes, super_resolve=False).sr is None
    (tmp_path / "other.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        TinyPath(tmp_path / "other.onnx")


def test_the_shipped_landmark_network_runs_its_onnx_twin_on_the_cpu():
    """The shipped tiny_landmarks.onnx is the export of the shipped tiny_landmarks.pt (its metadata
    holds the .pt's SHA-256), and the tiny path runs it on ONNX Runtime, agreeing with PyTorch."""
    pytest.importorskip("onnxruntime")
    from dffx.nn.integrity import file_sha256
    from dffx.tiny.path import default_landmark_weights

    path = TinyPath(shipped=default_landmark_weights())
    assert path.backend == "onnxruntime" and path.weights.name == "tiny_landmarks.onnx"
    assert path.net.metadata["source_sha256"] == file_sha256(default_landmark_weights())
    image = np.random.default_rng(2).integers(0, 255, (40, 40, 3), np.uint8)
    box = np.array([[8, 9, 22, 24.0]])
    np.testing.assert_allclose(path.run(image, box).landmarks,
                               TinyPath(default_landmark_weights()).run(image, box).landmarks, atol=1e-3)
