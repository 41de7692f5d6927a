"""dffx.tiny.path and dffx.align.tiny_route: the tiny-face path at inference."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dffx.preprocess import CROP_SCALE  # noqa: E402
from dffx.tiny.net import TinyFaceNet  # noqa: E402
from dffx.tiny.path import TINY_MAX_FACE_SIZE, TinyPath, fit_landmarks, load_tiny_net, tiny_faces  # noqa: E402
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


def test_a_fit_to_projected_model_landmarks_finds_their_pose(face_model):
    from dffx.geometry.camera import project
    from dffx.synth.fit import ContourLines

    contour = ContourLines(face_model)  # the fit's landmark convention: its jaw follows the outline
    rng = np.random.default_rng(0)
    cameras = [np.array([0.9, np.radians(-10), np.radians(30), np.radians(5), 60.0, 70.0]),
               np.array([0.5, 0.0, np.radians(-55), 0.0, 40.0, 35.0])]
    points, boxes = [], []
    for cam in cameras:
        index = contour.select(face_model.mean, cam)
        p = project(face_model.mean[index].astype(np.float64), cam)[:, :2]
        points.append(p + rng.normal(0, 0.05, p.shape))
        boxes.append(np.r_[p.min(0), p.max(0)])
    fit = fit_landmarks(face_model, np.stack(points), np.stack(boxes), contour)
    assert fit["camera"].shape == (2, 6) and fit["params"].shape == (2, face_model.n_params)
    for got, cam in zip(fit["camera"], cameras):
        np.testing.assert_allclose(np.degrees(got[1:4]), np.degrees(cam[1:4]), atol=2.0)
    # the jaw on the side the head turns away from is hidden, the near one shows
    visible = fit["visible"]
    assert visible[0, 11:17].all() and not visible[0, 0:3].any()    # yaw +30: the subject's right turns away
    assert visible[1, 0:6].all() and not visible[1, 12:17].any()    # yaw -55: the left
    with pytest.raises(ValueError, match="landmarks must be finite"):
        fit_landmarks(face_model, np.full((1, 68, 2), np.nan), np.array([[0, 0, 10, 10.0]]))
