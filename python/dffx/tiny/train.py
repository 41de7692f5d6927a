"""Training the tiny-face network (:class:`dffx.tiny.net.TinyFaceNet`) on the 2-core CPU, in
resumable slices (issue 26, items 1-2).

Pairs come from two kinds of large faces, half each, made tiny on the fly
(:func:`dffx.tiny.degrade.make_pair`, a face size drawn from ``face_sizes`` and a random
camera kernel): the 300-W training photos (their annotated 68 points) and the renders of a
``dffx synth`` set (their 68 landmarks in the annotators' convention). Photos whose index is a
multiple of ``HOLDOUT_EVERY`` and the renders of the synth set's held-out identities are never
trained on: they make the validation pairs (fixed, seeded).

Loss per pair (the paper's joint objective with L1 terms):
``|landmarks - truth|_1 / 128 + sr_weight * |sr - hr|_1`` (the SR term only with the SR head;
images in [0, 1], landmarks in 128-crop pixels).

Validation reports the landmark NME in % of the face box (the box is 128 / CROP_SCALE crop
pixels), and with the SR head the PSNR of the super-resolved crop and of bicubic upsampling
against the original crop.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..preprocess import CROP_SCALE
from .degrade import HR_SIZE, make_pair

HOLDOUT_EVERY = 20  # every 20th 300-W photo is held out (5 %)
PHOTO_BOX = 128     # a photo's face is kept at most this large (the 128-px crop's box is 85 px)
CHECKPOINT_FORMAT = "dffx.tiny-checkpoint"


@dataclass
class TinyTrainConfig:
    """Settings of ``dffx train tiny`` (see the module docstring)."""

    out: str
    photos: str = ""            # 300-W training photos (dffx.data.ibug.load_300w), "" for none
    renders: str = ""           # a dffx synth folder, "" for none
    steps: int = 20000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    sr: bool = True             # the joint network; False: the landmark-only ablation
    sr_weight: float = 1.0
    landmark_head: str = "heatmap"
    width: int = 32
    blocks: int = 4
    face_sizes: tuple = (12.0, 40.0)  # uniform range of the face box's longer side, pixels
    val_pairs: int = 256
    val_every: int = 500
    checkpoint_every: int = 500
    threads: int = 0
    seed: int = 0


class PairSource:
    """Large faces to make tiny: ``len()`` of each kind and ``face(kind, i)`` -> (BGR image,
    box (4,), landmarks (68, 2)); kind "photo" or "render"; split "train" or "val"."""

    def __init__(self, photos: str, renders: str, split: str):
        from ..data.ibug import landmark_box, load_300w

        self._box = landmark_box
        self.photos = []
        if photos:
            samples, _ = load_300w(photos)
            keep = (lambda i: i % HOLDOUT_EVERY == 0) if split == "val" else (lambda i: i % HOLDOUT_EVERY != 0)
            self.photos = [s for i, s in enumerate(samples) if keep(i)]
        self._regions = {}
        self.renders = None
        if renders:
            from ..synth.dataset import SynthDataset

            self.renders = SynthDataset(renders, split)
        if not self.photos and self.renders is None:
            raise ValueError("no faces: give photos, renders or both")

    def kinds(self) -> list[str]:
        """The kinds this source holds: "photo", "render" or both."""
        return (["photo"] if self.photos else []) + (["render"] if self.renders is not None else [])

    def count(self, kind: str) -> int:
        """Faces of ``kind`` in this split."""
        return len(self.photos) if kind == "photo" else len(self.renders)

    def face(self, kind: str, i: int):
        """Face i of ``kind``: (uint8 (H, W, 3) BGR image, its landmarks' box float64 (4,),
        landmarks float64 (68, 2) image pixels). A photo comes as the region around its face,
        shrunk so that the box is at most ``PHOTO_BOX`` pixels, decoded once and kept."""
        if kind == "photo":
            if i not in self._regions:
                self._regions[i] = self._photo_region(self.photos[i])
            return self._regions[i]
        item = self.renders.raw(i)
        landmarks = np.asarray(item["landmarks68"], np.float64)
        return item["image"], self._box(landmarks), landmarks

    def _photo_region(self, sample):
        import cv2

        landmarks = np.asarray(sample.landmarks, np.float64)
        box = self._box(landmarks)
        image = sample.load_image()
        side = max(box[2] - box[0], box[3] - box[1])
        cx, cy, half = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, CROP_SCALE * side
        x0, y0 = max(int(cx - half), 0), max(int(cy - half), 0)
        full = image[y0:int(np.ceil(cy + half)), x0:int(np.ceil(cx + half))]
        k = min(1.0, PHOTO_BOX / side)
        region = cv2.resize(full, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1.0 else full
        scale = np.array([region.shape[1] / full.shape[1], region.shape[0] / full.shape[0]])
        points = (landmarks - [x0 - 0.5, y0 - 0.5]) * scale - 0.5  # pixel centres at integers
        return np.ascontiguousarray(region), self._box(points), points

    def pairs(self, count: int, rng: np.random.Generator, face_sizes) -> dict:
        """``count`` random pairs as arrays: lr uint8 (n, 32, 32, 3), hr (n, 128, 128, 3),
        landmarks float32 (n, 68, 2) in 128-crop pixels."""
        lr, hr, landmarks = [], [], []
        kinds = self.kinds()
        for _ in range(count):
            kind = kinds[rng.integers(len(kinds))]
            image, box, points = self.face(kind, int(rng.integers(self.count(kind))))
            side = max(box[2] - box[0], box[3] - box[1])
            size = min(float(rng.uniform(*face_sizes)), side)
            pair = make_pair(image, box, points, size, rng)
            lr.append(pair.lr)
            hr.append(pair.hr)
            landmarks.append(pair.landmarks_hr)
        return {"lr": np.stack(lr), "hr": np.stack(hr), "landmarks": np.stack(landmarks)}


def to_tensor(images: np.ndarray):
    """uint8 (n, H, W, 3) BGR -> float32 (n, 3, H, W) RGB in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images[..., ::-1].transpose(0, 3, 1, 2))).float().div_(255.0)


def psnr(a, b) -> float:
    """Mean PSNR in dB of float images in [0, 1] (n, 3, H, W), each clamped to [0, 1]."""
    mse = ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * mse.log10()).mean())


def evaluate(net, val: dict) -> dict:
    """Landmark NME (% of the face box), and with the SR head PSNR (dB) of the SR crop and of
    bicubic upsampling, on the validation pairs."""
    import torch
    import torch.nn.functional as F

    net.eval()
    with torch.inference_mode():
        lr, hr = to_tensor(val["lr"]), to_tensor(val["hr"])
        out = net(lr)
        truth = torch.from_numpy(val["landmarks"])
        nme = (out["landmarks"] - truth).norm(dim=-1).mean() / (HR_SIZE / CROP_SCALE) * 100
        result = {"nme": float(nme)}
        if "sr" in out:
            bicubic = F.interpolate(lr, size=(HR_SIZE, HR_SIZE), mode="bicubic", align_corners=False)
            result.update(psnr_sr=psnr(out["sr"], hr), psnr_bicubic=psnr(bicubic, hr))
    net.train()
    return result


def train_tiny(config: TinyTrainConfig, resume: bool = False, time_limit_min: float | None = None,
               progress: bool = True) -> Path:
    """Train (or, with ``resume``, continue) a :class:`TinyFaceNet`; checkpoints (net, optimizer,
    step, config) go to ``OUT``'s ``_checkpoints`` folder, the log to ``train_log.jsonl`` there,
    the final weights to ``OUT``. Stops after ``time_limit_min`` minutes with a checkpoint.

    Returns:
        the checkpoint or weights file written last.

    Raises:
        ValueError: no faces, an unknown landmark head; FileNotFoundError: missing data.
    """
    import torch
    from tqdm import tqdm

    from .net import TinyFaceNet

    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    ckpt_dir = out.with_suffix("").parent / (out.with_suffix("").name + "_checkpoints")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    log = ckpt_dir / "train_log.jsonl"
    torch.manual_seed(config.seed)
    net = TinyFaceNet(config.width, config.blocks, sr=config.sr, landmark_head=config.landmark_head)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    if resume:
        newest = sorted(ckpt_dir.glob("step_*.pt"))
        if newest:
            state = torch.load(newest[-1], map_location="cpu", weights_only=False)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"{newest[-1]}: not a tiny-face training checkpoint")
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["optimizer"])
            step = int(state["step"])
    train_src = PairSource(config.photos, config.renders, "train")
    val = PairSource(config.photos, config.renders, "val").pairs(config.val_pairs, np.random.default_rng(12345),
                                                                 config.face_sizes)
    rng = np.random.default_rng([config.seed, step])  # a resumed run draws new pairs
    start, last = time.time(), None

    def save(kind: str) -> Path:
        path = ckpt_dir / f"step_{step:08d}.pt"
        torch.save({"format": CHECKPOINT_FORMAT, "net": net.state_dict(), "optimizer": opt.state_dict(),
                    "step": step, "config": asdict(config)}, path)
        for old in sorted(ckpt_dir.glob("step_*.pt"))[:-2]:  # keep the newest two
            old.unlink()
        _log(log, {"kind": kind, "step": step, "path": str(path)})
        return path

    bar = tqdm(total=config.steps, initial=step, desc="train tiny", disable=not progress)
    while step < config.steps:
        for group in opt.param_groups:  # cosine decay from lr to 0
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        batch = train_src.pairs(config.batch_size, rng, config.face_sizes)
        out_ = net(to_tensor(batch["lr"]))
        loss_lmk = (out_["landmarks"] - torch.from_numpy(batch["landmarks"])).abs().mean() / HR_SIZE
        loss = loss_lmk
        loss_sr = None
        if "sr" in out_:
            loss_sr = (out_["sr"] - to_tensor(batch["hr"])).abs().mean()
            loss = loss + config.sr_weight * loss_sr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % 50 == 0:
            _log(log, {"kind": "train", "step": step, "loss": loss.item(), "landmarks": loss_lmk.item(),
                       "sr": None if loss_sr is None else loss_sr.item(), "lr": opt.param_groups[0]["lr"]})
        if step % config.val_every == 0 or step == config.steps:
            _log(log, {"kind": "val", "step": step, **evaluate(net, val)})
        if step % config.checkpoint_every == 0:
            last = save("checkpoint")
        if time_limit_min is not None and time.time() - start > 60 * time_limit_min:
            last = save("stopped")
            return last
    bar.close()
    save_weights(net, config, out)
    _log(log, {"kind": "done", "step": step, "out": str(out)})
    return out


def save_weights(net, config: TinyTrainConfig, path) -> Path:
    """The trained network as a weights file: its config and float32 state dict."""
    import torch

    torch.save({"format": "dffx.tiny-weights", "config": net.config, "state_dict": net.state_dict(),
                "trained": asdict(config)}, path)
    return Path(path)


def _log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
