"""dffx.tiny.net and dffx.tiny.train: the joint super-resolution and alignment network."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dffx.tiny.net import TinyFaceNet, soft_argmax  # noqa: E402


def test_outputs_of_every_configuration():
    lr = torch.rand(2, 3, 32, 32)
    for head in ("heatmap", "regression"):
        joint = TinyFaceNet(width=8, blocks=2, landmark_head=head)(lr)
        assert joint["landmarks"].shape == (2, 68, 2) and joint["sr"].shape == (2, 3, 128, 128)
        alone = TinyFaceNet(width=8, blocks=2, sr=False, landmark_head=head)(lr)
        assert set(alone) == {"landmarks"}


def test_soft_argmax_finds_a_peak_and_the_heatmap_lands_in_crop_pixels():
    heat = torch.full((1, 68, 64, 64), -50.0)
    heat[0, :, 10, 40] = 50.0  # row 10, column 40 of the 64 x 64 grid
    np.testing.assert_allclose(soft_argmax(heat)[0, 0].numpy(), [40.0, 10.0], atol=1e-4)
    class Fixed(torch.nn.Module):  # the head's output, given
        def forward(self, fused):
            return heat

    net = TinyFaceNet(width=8, blocks=1)
    net.landmark_head = Fixed()  # grid cell (40, 10) covers crop pixels 80-81 and 20-21
    np.testing.assert_allclose(net(torch.rand(1, 3, 32, 32))["landmarks"][0, 5].numpy(), [80.5, 20.5], atol=1e-3)


def test_a_regression_head_with_zero_weights_points_at_the_crop_centre():
    net = TinyFaceNet(width=8, blocks=1, landmark_head="regression")
    torch.nn.init.zeros_(net.landmark_head[-1].weight)
    torch.nn.init.zeros_(net.landmark_head[-1].bias)
    assert torch.allclose(net(torch.rand(3, 3, 32, 32))["landmarks"], torch.tensor(63.5))


def test_the_sr_head_starts_from_bicubic_upsampling():
    """With the head's last layer zero the super-resolved face is the bicubic one."""
    net = TinyFaceNet(width=8, blocks=1)
    torch.nn.init.zeros_(net.sr_head[-1].weight)
    torch.nn.init.zeros_(net.sr_head[-1].bias)
    lr = torch.rand(1, 3, 32, 32)
    bicubic = torch.nn.functional.interpolate(lr, size=(128, 128), mode="bicubic", align_corners=False)
    assert torch.allclose(net(lr)["sr"], bicubic)


def test_bad_configurations_and_inputs_are_named():
    with pytest.raises(ValueError, match="landmark_head"):
        TinyFaceNet(landmark_head="argmax")
    with pytest.raises(ValueError, match="width and blocks"):
        TinyFaceNet(width=0)
    with pytest.raises(ValueError, match=r"input must be \(B, 3, 32, 32\)"):
        TinyFaceNet(width=8, blocks=1)(torch.rand(1, 3, 64, 64))


def test_the_network_learns_a_fixed_batch():
    """Both heads learn: on four smooth faces with one landmark layout the landmark error falls by
    more than half in 60 Adam steps, and the super-resolved faces beat bicubic upsampling."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    hr = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 128, 128, generator=g), 9, stride=1, padding=4)
    lr = torch.nn.functional.interpolate(hr, size=(32, 32), mode="area")
    truth = (torch.rand(1, 68, 2, generator=g) * 80 + 24).expand(4, 68, 2)
    net = TinyFaceNet(width=8, blocks=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    errors = []
    for _ in range(60):
        out = net(lr)
        lmk = (out["landmarks"] - truth).abs().mean()
        loss = lmk / 128 + (out["sr"] - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(lmk.item())
    bicubic = torch.nn.functional.interpolate(lr, size=(128, 128), mode="bicubic", align_corners=False)
    assert errors[-1] < 0.5 * errors[0]
    assert (net(lr)["sr"] - hr).abs().mean() < (bicubic - hr).abs().mean()


def test_training_resumes_where_it_stopped(tmp_path):
    """train_tiny on 300-W photos: a slice stops with a checkpoint, --resume continues its steps,
    the log holds validation NME and PSNR."""
    from conftest import SHARED
    from dffx.tiny.train import TinyTrainConfig, train_tiny

    config = TinyTrainConfig(out=str(tmp_path / "tiny.pt"), photos=str(SHARED / "data" / "300w-train"), steps=6,
                             batch_size=2, width=8, blocks=1, val_pairs=8, val_every=3, checkpoint_every=3, threads=1)
    config.steps = 3
    first = train_tiny(config, progress=False)
    assert first.name == "tiny.pt"
    config.steps = 6
    assert train_tiny(config, resume=True, progress=False).name == "tiny.pt"
    records = [json.loads(line) for line in (tmp_path / "tiny_checkpoints" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "checkpoint"] == [3, 6]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [3, 6] and all(r["psnr_sr"] > 10 and r["nme"] > 0 for r in val)
    weights = torch.load(tmp_path / "tiny.pt", weights_only=False)
    assert weights["format"] == "dffx.tiny-weights" and weights["config"]["width"] == 8


def test_a_photo_kept_as_its_shrunk_face_region_makes_the_same_pairs():
    """PairSource keeps only a photo's face region, shrunk: a pair made from it matches the pair
    made from the whole photo (same face size, clean camera) up to resampling."""
    from conftest import SHARED
    from dffx.data.ibug import landmark_box
    from dffx.tiny.degrade import Degradation, make_pair
    from dffx.tiny.train import PairSource

    source = PairSource(str(SHARED / "data" / "300w-train"), "", "val")
    sample = source.photos[0]
    region, box, points = source.face("photo", 0)
    assert max(box[2] - box[0], box[3] - box[1]) < 129  # PHOTO_BOX, up to the resize's rounding
    whole = make_pair(sample.load_image(), landmark_box(sample.landmarks), sample.landmarks, 20,
                      np.random.default_rng(0), degradation=Degradation())
    kept = make_pair(region, box, points, 20, np.random.default_rng(0), degradation=Degradation())
    np.testing.assert_allclose(kept.landmarks_hr, whole.landmarks_hr, atol=0.05)
    np.testing.assert_allclose(kept.landmarks_lr, whole.landmarks_lr, atol=0.05)
    assert np.abs(kept.lr.astype(int) - whole.lr.astype(int)).mean() < 3
