"""The DFF trainer (paper Sec. III-B) on a small fake dataset of real face renders.

The fake dataset has SynthDataset's item layout. Its triangle-id maps are real renders of the
ICT-FaceKit mean face (``dffx.rasterize``) under random poses at 64x64; the face pixels are
coloured by the model-space position of their triangle (a smooth "coordinate texture" with a
random brightness), the background by random colour blobs. So the image determines the patch
labels, and a tiny U-Net (base 8, depth 2) learns them in a few dozen steps. The segmentation
set is a real CVT set with 4 x 24 patches (``dffx.segment``).
"""

import argparse
import json

import numpy as np
import pytest
import torch

import dffx
import dffx.nn.train as train_mod
from dffx.nn import DFFExtractor, DFFNetConfig, TrainConfig, load_weights, train_dff
from dffx.nn.cli import add_train_dff_parser, config_from_args
from dffx.nn.train import StepSampler, list_checkpoints, load_checkpoint
from dffx.render import frame_camera
from dffx.segment import random_segmentations, save_segmentations

torch.set_num_threads(1)

SIZE = 64
N_TRAIN, N_VAL = 24, 8
TINY = DFFNetConfig(base_channels=8, depth=2)


def _render_items(model, count: int, rng: np.random.Generator):
    mean, tris = model.mean, model.triangles
    centroid = np.asarray(mean, np.float64)[tris].mean(axis=1)                    # (F, 3) cm
    lo, hi = centroid.min(0), centroid.max(0)
    tri_colour = 0.15 + 0.8 * (centroid - lo) / (hi - lo)                         # (F, 3) in [0.15, 0.95]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = np.empty((count, 3, SIZE, SIZE), np.float32)
    tri_ids = np.empty((count, SIZE, SIZE), np.int64)
    cameras = np.empty((count, 6), np.float32)
    for i in range(count):
        pitch, yaw, roll = np.radians([rng.uniform(-20, 20), rng.uniform(-60, 60), rng.uniform(-15, 15)])
        camera = frame_camera(mean, pitch, yaw, roll, SIZE, margin=rng.uniform(0.05, 0.2))
        tid = dffx.rasterize(dffx.project(mean, camera), tris, SIZE).triangle_id.astype(np.int64)
        img = np.zeros((SIZE, SIZE, 3))
        for _ in range(3):  # background: random colour blobs
            cx, cy, r = rng.uniform(0, SIZE, 2).tolist() + [rng.uniform(6, 20)]
            img += rng.uniform(0, 0.6, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        face = tid >= 0
        img[face] = tri_colour[tid[face]] * rng.uniform(0.7, 1.0)
        images[i] = np.clip(img, 0, 1).transpose(2, 0, 1)
        tri_ids[i] = tid
        cameras[i] = camera
    return images, tri_ids, cameras


class FakeSynthDataset(torch.utils.data.Dataset):
    """Stand-in for ``dffx.synth.dataset.SynthDataset(root, split)`` with the same item dict."""

    def __init__(self, root, split="train"):
        data = np.load(f"{root}/fake.npz")
        key = {"train": "train", "val": "val"}[split]
        self.images, self.tri, self.cameras = data[f"{key}_images"], data[f"{key}_tri"], data[f"{key}_cameras"]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": torch.from_numpy(self.images[i]), "triangle_id": torch.from_numpy(self.tri[i]),
                "camera": torch.from_numpy(self.cameras[i]), "p_id": torch.zeros(80), "p_exp": torch.zeros(55),
                "landmarks68": torch.zeros(68, 2), "visible68": torch.ones(68, dtype=torch.bool),
                "landmarks160": torch.zeros(160, 2), "visible160": torch.ones(160, dtype=torch.bool)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, face_model):
    root = tmp_path_factory.mktemp("fake_synth")
    rng = np.random.default_rng(5)
    tr = _render_items(face_model, N_TRAIN, rng)
    va = _render_items(face_model, N_VAL, rng)
    np.savez(root / "fake.npz", train_images=tr[0], train_tri=tr[1], train_cameras=tr[2],
             val_images=va[0], val_tri=va[1], val_cameras=va[2])
    lut = random_segmentations(face_model.mean, face_model.triangles, count=4, n_patches=24, seed=0, iterations=3,
                               progress=False)
    save_segmentations(root / "segmentations.npz", lut, n_patches=24, triangles=face_model.triangles)
    return root


def tiny_config(data_dir, out, **kw) -> TrainConfig:
    settings = dict(net=TINY, steps=40, batch_size=4, lr=1e-2, warmup_steps=2, scale=16.0, pixels_per_image=1024,
                    segments=4, val_every=20, val_batches=None, checkpoint_every=10, log_every=1, workers=0,
                    device="cpu", progress=False, seed=3)
    settings.update(kw)
    return TrainConfig(data=data_dir, out=out, **settings)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """One 40-step run shared by several tests."""
    out = tmp_path_factory.mktemp("run") / "dff.pt"
    result = train_dff(tiny_config(data_dir, out, keep_checkpoints=2), dataset_factory=FakeSynthDataset)
    return out, result


# ----------------------------------------------------------------------------- the run
def test_fake_dataset_has_faces(data_dir):
    ds = FakeSynthDataset(data_dir, "train")
    item = ds[0]
    assert item["image"].shape == (3, SIZE, SIZE) and item["triangle_id"].shape == (SIZE, SIZE)
    assert 0.15 < (item["triangle_id"] >= 0).float().mean() < 0.8


def test_training_lowers_the_loss(trained):
    out, result = trained
    losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    accs = [h["accuracy"] for h in result.history if h["kind"] == "train"]
    assert len(losses) == 40 and result.step == 40 and result.completed
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert np.mean(accs[-5:]) > 2 * np.mean(accs[:5]), accs
    vals = [h for h in result.history if h["kind"] == "val"]
    assert [v["step"] for v in vals] == [20, 40] and vals[-1]["images"] == N_VAL
    assert vals[-1]["loss"] < vals[0]["loss"]
    assert vals[-1]["accuracy"] > 3 / 24  # chance is 1/24
    assert result.val == {k: v for k, v in vals[-1].items() if k != "kind"}


def test_checkpoints_and_log(trained):
    out, result = trained
    ckpt_dir = out.with_name("dff_checkpoints")
    found = list_checkpoints(ckpt_dir)
    assert [p.name for p in found] == ["step_00000030.pt", "step_00000040.pt"]  # keep_checkpoints=2
    blob = load_checkpoint(found[-1])
    assert blob["step"] == 40 and blob["net_config"] == TINY.__dict__
    assert set(blob) >= {"model", "loss_head", "optimizer", "scaler", "rng", "config", "metadata"}
    assert blob["loss_head"]["h"].shape == (4, 24, 32)
    log = [json.loads(line) for line in (ckpt_dir / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["kind"] == "done" and sum(e["kind"] == "train" for e in log) == 40


def test_output_loads_in_the_extractor(trained, data_dir):
    out, result = trained
    assert out.stat().st_size < 16e6
    ext = DFFExtractor(out, device="cpu")
    meta = ext.metadata
    assert meta["steps"] == 40 and meta["completed"] and meta["train_images"] == N_TRAIN
    assert meta["val_images"] == N_VAL and meta["held_out"]["accuracy"] == pytest.approx(result.val["accuracy"])
    assert meta["hardware"]["device"] == "cpu" and meta["segmentations"]["count"] == 4
    assert "loss_head" not in torch.load(out, weights_only=True)
    images = torch.from_numpy(FakeSynthDataset(data_dir, "val").images[:2])
    feats = ext.extract(images)
    assert feats.shape == (2, 32, SIZE, SIZE)
    # the float16 file gives the features of the float32 net in the last checkpoint
    net, _ = load_weights(list_checkpoints(out.with_name("dff_checkpoints"))[-1])
    with torch.no_grad():
        torch.testing.assert_close(feats, net(images), atol=3e-2, rtol=0)


@pytest.mark.parametrize("augment", [(), ("colour", "occlusion", "jpeg")])
def test_resume_is_exact(data_dir, tmp_path, augment):
    """A run stopped and resumed equals the uninterrupted run, augmentation draws included."""
    n = 6
    full = tiny_config(data_dir, tmp_path / "a.pt", steps=2 * n, checkpoint_every=n, val_every=n, augment=augment)
    train_dff(full, dataset_factory=FakeSynthDataset)
    first = tiny_config(data_dir, tmp_path / "b.pt", steps=2 * n, checkpoint_every=n, val_every=n, stop_at=n,
                        augment=augment)
    r1 = train_dff(first, dataset_factory=FakeSynthDataset)
    assert r1.step == n and not r1.completed
    assert load_checkpoint(list_checkpoints(first.checkpoint_path)[-1])["step"] == n
    second = tiny_config(data_dir, tmp_path / "b.pt", steps=2 * n, checkpoint_every=n, val_every=n, resume=True,
                         augment=augment)
    r2 = train_dff(second, dataset_factory=FakeSynthDataset)
    assert r2.step == 2 * n and r2.completed
    a = load_checkpoint(list_checkpoints(full.checkpoint_path)[-1])
    b = load_checkpoint(list_checkpoints(second.checkpoint_path)[-1])
    assert a["step"] == b["step"] == 2 * n
    for part in ("model", "loss_head"):
        for key in a[part]:
            torch.testing.assert_close(b[part][key], a[part][key], atol=1e-6, rtol=0, msg=f"{part}.{key}")
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        torch.testing.assert_close(sb["exp_avg"], sa["exp_avg"], atol=1e-6, rtol=0)
    # and the resumed run's losses continue the uninterrupted run's
    la = [h["loss"] for h in a["history"] if h["kind"] == "train"]
    lb = [h["loss"] for h in b["history"] if h["kind"] == "train"]
    np.testing.assert_allclose(lb[-n:], la[-n:], rtol=1e-5)


def test_resume_without_checkpoint_starts_fresh_and_rejects_other_nets(data_dir, tmp_path, capsys):
    cfg = tiny_config(data_dir, tmp_path / "c.pt", steps=3, val_every=0, resume=True)
    assert train_dff(cfg, dataset_factory=FakeSynthDataset).step == 3
    assert "starting from scratch" in capsys.readouterr().out
    other = tiny_config(data_dir, tmp_path / "c.pt", steps=6, resume=True, net=DFFNetConfig(base_channels=8, depth=3))
    with pytest.raises(ValueError, match="checkpoint"):
        train_dff(other, dataset_factory=FakeSynthDataset)
    # resuming a finished run with a larger --steps continues it
    more = tiny_config(data_dir, tmp_path / "c.pt", steps=5, val_every=0, resume=True)
    assert train_dff(more, dataset_factory=FakeSynthDataset).step == 5


def test_init_from_fine_tunes_a_finished_run(trained, data_dir, tmp_path, capsys, face_model):
    """--init starts net and patch vectors from a checkpoint, with a fresh step count and schedule."""
    out, result = trained
    ckpt = list_checkpoints(out.with_name("dff_checkpoints"))[-1]
    cfg = tiny_config(data_dir, tmp_path / "ft.pt", steps=4, val_every=0, init_from=ckpt, lr=1e-9, warmup_steps=0)
    tuned = train_dff(cfg, dataset_factory=FakeSynthDataset)
    assert tuned.step == 4 and "initialised from" in capsys.readouterr().out
    assert load_weights(tuned.out)[1]["init_from"] == str(ckpt)  # provenance in the weights file
    # at a vanishing learning rate the held-out accuracy is the source run's, not chance (1/24)
    assert tuned.val["accuracy"] == pytest.approx(result.val["accuracy"], abs=0.02)
    assert tuned.val["accuracy"] > 3 / 24
    src, dst = load_checkpoint(ckpt), load_checkpoint(list_checkpoints(cfg.checkpoint_path)[-1])
    torch.testing.assert_close(dst["loss_head"]["h"], src["loss_head"]["h"], atol=1e-5, rtol=0)
    # other segmentations: the patch vectors would be meaningless, so refuse
    lut = random_segmentations(face_model.mean, face_model.triangles, count=4, n_patches=24, seed=7, iterations=1,
                               progress=False)
    save_segmentations(tmp_path / "other.npz", lut, n_patches=24, triangles=face_model.triangles)
    other = tiny_config(data_dir, tmp_path / "o.pt", steps=2, init_from=ckpt, segmentations=tmp_path / "other.npz")
    with pytest.raises(ValueError, match="other segmentations"):
        train_dff(other, dataset_factory=FakeSynthDataset)
    with pytest.raises(ValueError, match="network"):
        train_dff(tiny_config(data_dir, tmp_path / "n.pt", steps=2, init_from=ckpt,
                              net=DFFNetConfig(base_channels=8, depth=3)), dataset_factory=FakeSynthDataset)


def test_init_from_a_weights_file_estimates_the_patch_vectors(trained, data_dir, tmp_path, capsys, monkeypatch):
    """--init with a weights file (no loss head): each patch vector starts as the normalised mean
    descriptor of the patch's pixels, which classifies the held-out pixels about as well as the
    vectors the source run learned, where random vectors stay near chance (1/24)."""
    out, result = trained
    monkeypatch.setattr(train_mod, "INIT_CLASS_IMAGES", N_TRAIN)
    cfg = tiny_config(data_dir, tmp_path / "w.pt", steps=1, val_every=0, init_from=out, lr=1e-9, warmup_steps=0)
    tuned = train_dff(cfg, dataset_factory=FakeSynthDataset)
    assert "initialised from weights" in capsys.readouterr().out
    assert tuned.val["accuracy"] > 0.8 * result.val["accuracy"] and tuned.val["accuracy"] > 4 / 24
    fresh = train_dff(tiny_config(data_dir, tmp_path / "f.pt", steps=1, val_every=0, lr=1e-9, warmup_steps=0),
                      dataset_factory=FakeSynthDataset)
    assert fresh.val["accuracy"] < 2 / 24
    # the vectors are the per-patch mean descriptors, computed here in NumPy over all training images
    net, _ = load_weights(out)
    data = FakeSynthDataset(data_dir, "train")
    with torch.no_grad():
        maps = net(torch.from_numpy(data.images)).numpy().transpose(0, 2, 3, 1)   # (N, H, W, D)
    face = data.tri >= 0
    pixels, tri = maps[face], data.tri[face]
    lut = np.load(data_dir / "segmentations.npz")["lut"]
    h = load_checkpoint(list_checkpoints(cfg.checkpoint_path)[-1])["loss_head"]["h"].numpy()
    for k in range(lut.shape[0]):
        for j in np.unique(lut[k, tri])[:5]:
            mean = pixels[lut[k, tri] == j].mean(0)
            np.testing.assert_allclose(h[k, j], mean / np.linalg.norm(mean), atol=2e-3)
    with pytest.raises(ValueError, match="network"):
        train_dff(tiny_config(data_dir, tmp_path / "n.pt", steps=1, init_from=out,
                              net=DFFNetConfig(base_channels=8, depth=3)), dataset_factory=FakeSynthDataset)


def test_empty_held_out_split(data_dir, tmp_path):
    def factory(root, split):
        if split == "val":
            raise ValueError("the 'val' split is empty")  # what SynthDataset raises
        return FakeSynthDataset(root, split)

    with pytest.warns(UserWarning, match="held-out"):
        result = train_dff(tiny_config(data_dir, tmp_path / "e.pt", steps=2, val_every=1), dataset_factory=factory)
    assert result.step == 2 and result.val is None
    meta = load_weights(tmp_path / "e.pt")[1]
    assert meta["held_out"] is None and meta["val_images"] == 0


# ----------------------------------------------------------------------------- pieces
def test_mixed_precision_only_on_cuda():
    cfg = TrainConfig(data=".", out="x.pt", amp="bf16")
    assert train_mod._amp_dtype(cfg, torch.device("cpu")) is None
    assert train_mod._amp_dtype(TrainConfig(data=".", out="x.pt", amp="off"), torch.device("cuda")) is None
    assert train_mod._amp_dtype(TrainConfig(data=".", out="x.pt", amp="fp16"), torch.device("cuda")) == torch.float16


def test_autocast_step_feeds_the_loss_float32(data_dir):
    """The mixed-precision forward of the training module (the code CUDA runs with bfloat16
    autocast; here CPU autocast, since the trainer enables it only on CUDA): the network runs in
    bfloat16, the loss head gets float32 features and gives a float32 loss and float32
    gradients close to those of the float32 pass."""
    from dffx.nn import AngularSoftmaxLoss, DFFNet
    from dffx.segment import load_segmentations

    torch.manual_seed(0)
    segs = load_segmentations(data_dir / "segmentations.npz")
    head = AngularSoftmaxLoss(torch.as_tensor(segs.lut), n_patches=segs.n_patches, dim=TINY.out_dim, scale=16.0)
    train_mod._unit_class_vectors(head)
    module = train_mod._TrainModule(DFFNet(TINY), head)
    images, tri = train_mod._collate([FakeSynthDataset(data_dir)[i] for i in range(2)])
    seen = []
    module.head.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    runs = {}
    for amp in (None, torch.bfloat16):
        module.zero_grad()
        out = module(images, tri, amp, 2048, None, torch.Generator().manual_seed(1))
        out.total.backward()
        runs[amp] = (out.total.item(), module.net.head.weight.grad.clone(), module.head.h.grad.clone())
        assert out.total.dtype == torch.float32 and module.net.head.weight.grad.dtype == torch.float32
    assert seen == [torch.float32, torch.float32]
    (loss32, grad32, h32), (loss16, grad16, h16) = runs[None], runs[torch.bfloat16]
    assert loss16 != loss32  # the network did run in bfloat16
    assert abs(loss16 - loss32) < 0.02 * abs(loss32)
    for a, b in ((grad16, grad32), (h16, h32)):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.95


def test_step_sampler_is_a_function_of_the_step():
    whole = list(StepSampler(10, 3, seed=1, start_step=0, end_step=8))
    tail = list(StepSampler(10, 3, seed=1, start_step=5, end_step=8))
    assert tail == whole[15:]
    assert sorted(whole[:10]) == list(range(10)) and sorted(whole[10:20]) == list(range(10))  # epochs
    assert whole[:10] != whole[10:20]
    ranks = [list(StepSampler(10, 3, seed=1, start_step=0, end_step=4, rank=r, world_size=2)) for r in range(2)]
    assert sorted(ranks[0][:3] + ranks[1][:3] + ranks[0][3:6] + ranks[1][3:4]) == list(range(10))
    assert ranks[0][:3] == whole[:3] and ranks[1][:3] == whole[3:6]


def test_config_validation(data_dir, tmp_path):
    for bad in (dict(steps=0), dict(batch_size=0), dict(lr=-1.0), dict(scale=0.0), dict(pixels_per_image=0),
                dict(lr_schedule="step"), dict(amp="fp8"), dict(workers=-1), dict(net={"base_channels": 8})):
        with pytest.raises(ValueError):
            train_dff(tiny_config(data_dir, tmp_path / "x.pt", **bad), dataset_factory=FakeSynthDataset)
    with pytest.raises(FileNotFoundError, match="segmentation"):
        train_dff(tiny_config(data_dir, tmp_path / "x.pt", segmentations=tmp_path / "none.npz"),
                  dataset_factory=FakeSynthDataset)
    with pytest.raises(FileNotFoundError, match="data"):
        train_dff(tiny_config(tmp_path / "nodata", tmp_path / "x.pt"), dataset_factory=FakeSynthDataset)


def test_class_vectors_start_on_the_unit_sphere():
    from dffx.nn import AngularSoftmaxLoss

    head = AngularSoftmaxLoss(np.zeros((3, 10), np.int32), n_patches=5, dim=32)
    train_mod._unit_class_vectors(head)
    torch.testing.assert_close(head.h.norm(dim=-1), torch.ones(3, 5))


def test_lr_schedule():
    cfg = TrainConfig(data=".", out="x.pt", steps=100, lr=1.0, warmup_steps=10)
    lrs = [train_mod._lr_at(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.01, abs=1e-3)
    cfg.lr_schedule = "constant"
    assert train_mod._lr_at(cfg, 99) == 1.0


# ----------------------------------------------------------------------------- command line
def _parser():
    parser = argparse.ArgumentParser(prog="dffx")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    add_train_dff_parser(train.add_subparsers(dest="what", required=True))
    return parser


def test_cli_arguments_map_to_the_config():
    args = _parser().parse_args(["train", "dff", "--data", "D", "--out", "o.pt", "--steps", "7", "--batch-size", "2",
                                 "--lr", "0.01", "--scale", "8", "--pixels-per-image", "0", "--segments", "5",
                                 "--val-every", "3", "--checkpoint-dir", "ck", "--resume", "--workers", "1",
                                 "--device", "cpu", "--seed", "9", "--no-progress", "--net", "large", "--depth", "3",
                                 "--time-limit", "1.5", "--init", "prev.pt", "--augment", "jpeg,occlusion"])
    cfg = config_from_args(args)
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.scale, cfg.pixels_per_image, cfg.segments) == (7, 2, 0.01, 8.0,
                                                                                                 None, 5)
    assert (cfg.val_every, str(cfg.checkpoint_dir), cfg.resume, cfg.workers, cfg.device, cfg.seed) == (
        3, "ck", True, 1, "cpu", 9)
    assert not cfg.progress and cfg.net == DFFNetConfig(base_channels=32, depth=3) and cfg.time_limit_s == 90.0
    assert cfg.segmentations_path.as_posix() == "D/segmentations.npz" and cfg.init_from == "prev.pt"
    assert cfg.augment == ("jpeg", "occlusion")
    defaults = config_from_args(_parser().parse_args(["train", "dff", "--data", "D", "--out", "o.pt"]))
    assert defaults.pixels_per_image == 2048 and defaults.segments == 16 and defaults.net == DFFNetConfig()
    assert defaults.augment == ()


def test_cli_runs_a_training(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_mod, "default_dataset_factory", FakeSynthDataset)
    out = tmp_path / "cli.pt"
    args = _parser().parse_args(["train", "dff", "--data", str(data_dir), "--out", str(out), "--steps", "4",
                                 "--batch-size", "2", "--pixels-per-image", "128", "--segments", "2",
                                 "--base-channels", "8", "--depth", "2", "--val-every", "0", "--device", "cpu",
                                 "--no-progress"])
    assert args.run(args) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "held-out" in text and "step 4/4" in text
    assert DFFExtractor(out, device="cpu").metadata["steps"] == 4


# ----------------------------------------------------------------------------- torchrun (DDP on CPU, gloo)
DDP_DRIVER = """
import os, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_train import FakeSynthDataset, tiny_config
from dffx.nn import train_dff
r = train_dff(tiny_config({data!r}, {out!r}, steps=6, batch_size=2, checkpoint_every=3, val_every=3),
              dataset_factory=FakeSynthDataset)
# one file per rank: the two processes share stdout, where their lines can interleave
with open(os.path.join({results!r}, "rank" + os.environ["RANK"]), "w") as f:
    f.write(f"step {{r.step}} completed {{r.completed}}")
"""


def test_torchrun_two_processes(data_dir, tmp_path):
    """The multi-GPU path (WORLD_SIZE > 1: process group, DDP, sharded sampler, rank-0 I/O) on CPU with gloo."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "ddp.pt"
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER.format(tests=str(Path(__file__).parent), data=str(data_dir), out=str(out),
                                        results=str(tmp_path)))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(driver)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}").read_text() == "step 6 completed True"
    meta = DFFExtractor(out, device="cpu").metadata
    assert meta["hardware"]["world_size"] == 2 and meta["global_batch"] == 4 and meta["steps"] == 6
    assert [p.name for p in list_checkpoints(tmp_path / "ddp_checkpoints")] == ["step_00000003.pt",
                                                                                 "step_00000006.pt"]


def test_extra_data_joins_the_training_split_only(data_dir, tmp_path):
    """--extra-data: the extra set's training samples join the draw; validation stays on --data's."""
    extra = tmp_path / "extra"
    extra.mkdir()
    with np.load(data_dir / "fake.npz") as z:
        flipped = {k: (v[..., ::-1].copy() if k.endswith(("_images", "_tri")) else v) for k, v in z.items()}
    np.savez(extra / "fake.npz", **flipped)
    cfg = tiny_config(data_dir, tmp_path / "x.pt", extra_data=(extra,))
    train_set, val_set = train_mod._datasets(cfg, FakeSynthDataset, is_main=True)
    assert len(train_set) == 2 * N_TRAIN and len(val_set) == N_VAL
    # The second half of the index space is the extra set's (mirrored) renders.
    np.testing.assert_array_equal(train_set[N_TRAIN]["triangle_id"].numpy(), flipped["train_tri"][0])
    assert json.loads(json.dumps(cfg.to_dict()))["extra_data"] == [str(extra)]

    parser = argparse.ArgumentParser()
    add_train_dff_parser(parser.add_subparsers())
    args = parser.parse_args(["dff", "--data", str(data_dir), "--extra-data", str(extra), "--out", "o.pt"])
    assert config_from_args(args).extra_data == (str(extra),)
