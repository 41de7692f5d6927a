"""Training the DFF extractor (paper Sec. III-B): U-Net features + angular-softmax patch classifiers.

:func:`train_dff` trains a :class:`~dffx.nn.DFFNet` together with an
:class:`~dffx.nn.AngularSoftmaxLoss` head (one set of 500 unit patch vectors per random
segmentation of the mean face) on synthetic renders (:class:`dffx.synth.dataset.SynthDataset`:
"image" (3, H, W) RGB in [0, 1] and "triangle_id" (H, W), -1 = no face surface). The final file
holds the network only (config + state_dict + metadata) and loads in :class:`~dffx.nn.DFFExtractor`.

Command line: ``dffx train dff --data DIR --out FILE`` (:mod:`dffx.nn.cli`).

Design choices (see each :class:`TrainConfig` field):

* **Subsampling.** The paper sums the loss of all 100 segmentations over all face pixels. That
  is ~500 M multiply-adds per image and segmentation pass at 224x224, far too slow on a CPU, so
  each step draws ``pixels_per_image`` face pixels per image and ``segments`` of the
  segmentations (defaults 2048 and 16; None = all). The draws are unbiased, so the expected
  gradient direction is the paper's.
* **Scale.** The paper's loss (s = 1) bounds the logits to [-1, 1]: with 500 patches the best
  reachable probability of the true patch is ~1.5%, so gradients stay weak. The default s = 16
  (NormFace / CosFace practice) trains much faster; ``scale=1`` reproduces the paper.
* **Exact resume.** Nothing random is carried from step to step: the sample order of step t is a
  function of (seed, t) (:class:`StepSampler`, an epoch-wise permutation sharded across ranks, which
  replaces ``DistributedSampler`` so that resuming mid-epoch needs no replay), and the loss's
  pixel/segmentation draw uses a generator re-seeded from (seed, t, rank). A checkpoint holds
  the model, loss head, optimizer, grad scaler, step and RNG states, so on CPU a run of 2N
  steps and a run stopped at N and resumed give the same weights. (CUDA kernels are not
  bitwise deterministic; there a resumed run is statistically, not bitwise, equal.)
* **Class vectors** of the loss head start with unit length (see :func:`_unit_class_vectors`),
  so AdamW's step is an angular step of about ``lr`` for them as for the network.
* **Learning rate.** AdamW, linear warm-up over ``warmup_steps``, then cosine decay to 1% of
  ``lr`` at ``steps`` (or constant). The rate of step t depends only on t and the config, so
  ``--resume`` with a larger ``--steps`` continues on the stretched schedule.
* **Mixed precision** (``amp``): on CUDA, autocast with bfloat16 when supported, else float16 with
  a GradScaler. The L2 normalisation and the loss always run in float32. CPU runs in float32.
* **Multi-GPU**: ``torchrun --nproc_per_node=G -m dffx train dff ...``. With WORLD_SIZE > 1 the
  trainer joins the process group (NCCL on CUDA, gloo on CPU), wraps net + loss head in
  DistributedDataParallel, gives every rank its own ``batch_size`` images per step (global batch
  = G x batch_size) and lets rank 0 alone log, evaluate and write checkpoints. BatchNorm
  statistics are per GPU (not synchronised).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
import warnings
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from .augment import augment_batch
from .config import TrainConfig
from .unet import DFFNet, count_parameters, load_weights, plain_metadata, save_weights

CHECKPOINT_FORMAT = "dffx.dff-train-checkpoint"
CHECKPOINT_VERSION = 1


class TrainResult(NamedTuple):
    """What :func:`train_dff` returns (on every rank; ``history`` is filled on rank 0).

    out: the weights file written (rank 0) or that rank 0 wrote.
    step: global steps done (== config.steps unless stopped by stop_at / time_limit_s).
    completed: whether ``config.steps`` were reached.
    train_loss, train_accuracy: exponential moving averages (0.9) at the end of the run, or
        None when this run did no step (e.g. resumed at the end).
    val: {"step", "loss", "accuracy", "images"} of the last held-out evaluation, or None.
    history: list of log dicts ({"kind": "train"|"val", "step", ...}) of this run.
    """

    out: Path
    step: int
    completed: bool
    train_loss: float | None
    train_accuracy: float | None
    val: dict | None
    history: list


# --------------------------------------------------------------------------- data
class StepSampler(torch.utils.data.Sampler):
    """Dataset indices for steps ``[start_step, end_step)``, a pure function of (seed, step).

    Global sample k (k = step * batch_size * world_size + rank-major position) is
    ``perm_e[k % N]`` with ``e = k // N`` and ``perm_e`` a random permutation of the N items
    seeded by (seed, e): every epoch visits each item once, and rank r takes the r-th
    ``batch_size`` slice of each global batch (the role of ``DistributedSampler``). Resuming at
    step t just starts the sampler at t.

    Args:
        n_items: dataset length N (> 0).
        batch_size: images per step and rank.
        seed: base seed.
        start_step, end_step: step range.
        rank, world_size: this process's shard.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, start_step: int, end_step: int,
                 rank: int = 0, world_size: int = 1):
        if n_items < 1:
            raise ValueError("the training dataset is empty")
        self.n, self.b, self.seed = int(n_items), int(batch_size), int(seed)
        self.start, self.end, self.rank, self.world = int(start_step), int(end_step), int(rank), int(world_size)
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.b

    def __iter__(self):
        for step in range(self.start, self.end):
            base = (step * self.world + self.rank) * self.b
            for k in range(base, base + self.b):
                yield int(self._permutation(k // self.n)[k % self.n])


def _collate(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (B, 3, H, W), triangle_id int64 (B, H, W)) from SynthDataset items."""
    images = torch.stack([torch.as_tensor(it["image"], dtype=torch.float32) for it in items])
    tri = torch.stack([torch.as_tensor(it["triangle_id"]).to(torch.int64) for it in items])
    return images, tri


def _check_batch(images: torch.Tensor, tri: torch.Tensor, multiple: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"dataset items must have 'image' (3, H, W), got a batch of shape {tuple(images.shape)}")
    if tri.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"'triangle_id' must be (H, W) like the image, got {tuple(tri.shape)} "
                         f"for images {tuple(images.shape)}")
    if images.shape[2] % multiple or images.shape[3] % multiple:
        raise ValueError(f"training images must have sides divisible by {multiple}, got {tuple(images.shape[2:])}")


def default_dataset_factory(root, split: str):
    """``dffx.synth.dataset.SynthDataset(root, split=split)``; the trainer's default data source."""
    from ..synth.dataset import SynthDataset

    return SynthDataset(root, split=split)


# --------------------------------------------------------------------------- training module
class _TrainModule(nn.Module):
    """Net + loss head as one module, so DDP synchronises the gradients of both."""

    def __init__(self, net: DFFNet, head: nn.Module):
        super().__init__()
        self.net, self.head = net, head

    def forward(self, images, tri, amp_dtype, pixels_per_image, segments, generator):
        with torch.autocast(device_type=images.device.type, dtype=amp_dtype or torch.bfloat16,
                            enabled=amp_dtype is not None):
            features = self.net(images)
        return self.head(features.float(), tri, pixels_per_image=pixels_per_image, segments=segments,
                         generator=generator)


def _unit_class_vectors(head: nn.Module) -> None:
    """Start the loss head's class vectors on the unit sphere.

    The loss normalises them in every forward pass, so only their direction matters, and AdamW
    moves each coordinate by about lr per step whatever the norm: the angular step is lr / |h|.
    A standard-normal initialisation has |h| ~ sqrt(D) = 5.7, which slows the class vectors down
    about 6x; in an 80-step CPU run on the synthetic set (batch 4) the unit start lowered the
    loss to 747 instead of 918 (initially ~950).
    """
    h = getattr(head, "h", None)
    if isinstance(h, nn.Parameter) and h.ndim >= 1:
        with torch.no_grad():
            h.copy_(torch.nn.functional.normalize(h, dim=-1))


# Training images whose DFF maps give the patch vectors when fine-tuning from a weights file.
INIT_CLASS_IMAGES = 256


def _init_from_checkpoint(module: _TrainModule, cfg: TrainConfig, is_main: bool, train_set,
                          device: torch.device) -> None:
    """Start network and loss head from ``cfg.init_from`` for fine-tuning.

    A training checkpoint brings both. A weights file (:func:`~dffx.nn.save_weights`, or a
    shipped name such as "default") brings the network only; its patch vectors are then
    estimated from the data (:func:`_class_vectors_from_features`).
    """
    source = cfg.init_from
    from .extractor import is_weights_name, shipped_weights_path

    if is_weights_name(source):
        source = shipped_weights_path(str(source))
    blob = torch.load(Path(source), map_location="cpu", weights_only=True)
    if not (isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT):
        net, _ = load_weights(source)  # ValueError for a file that is neither
        if asdict(net.config) != asdict(cfg.net):
            raise ValueError(f"init weights {source} are for network {asdict(net.config)}, "
                             f"but this run asks for {asdict(cfg.net)}")
        module.net.load_state_dict(net.state_dict())
        found = _class_vectors_from_features(module, train_set, cfg, device)
        if is_main:
            print(f"initialised from weights {source}; patch vectors from the mean descriptors of "
                  f"{INIT_CLASS_IMAGES} training images ({found:.1%} of the patches seen)")
        return
    blob = load_checkpoint(source)
    if blob["net_config"] != asdict(cfg.net):
        raise ValueError(f"init checkpoint {source} is for network {blob['net_config']}, "
                         f"but this run asks for {asdict(cfg.net)}")
    lut = blob["loss_head"].get("lut")
    if lut is None or not torch.equal(lut.to(module.head.lut.dtype).cpu(), module.head.lut.cpu()):
        # The patch vectors only mean something for the segmentations they were trained on.
        raise ValueError(f"init checkpoint {source} was trained on other segmentations than "
                         f"{cfg.segmentations_path}")
    module.net.load_state_dict(blob["model"])
    module.head.load_state_dict(blob["loss_head"])
    if is_main:
        print(f"initialised from {source} (step {int(blob['step'])} of that run)")


def _class_vectors_from_features(module: _TrainModule, dataset, cfg: TrainConfig, device: torch.device) -> float:
    """Set each patch vector h_kj to the normalised mean DFF descriptor of the patch's pixels.

    A trained network puts the pixels of one surface patch close together, so the mean
    descriptor is the nearest-mean classifier the network already supports: fine-tuning then
    starts near the network's own accuracy instead of relearning the 100 x 500 vectors from
    random directions. Uses :data:`INIT_CLASS_IMAGES` training images drawn with ``cfg.seed``
    (every rank draws the same ones); patches none of them shows keep their unit random vector.

    Returns:
        the fraction of (segmentation, patch) pairs that were seen.
    """
    head, net = module.head, module.net
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed))[:INIT_CLASS_IMAGES]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, pick.tolist()), batch_size=cfg.batch_size,
                                         shuffle=False, num_workers=cfg.workers, collate_fn=_collate)
    K, C, D = head.h.shape
    sums = torch.zeros(K, C, D, dtype=torch.float64, device=device)
    counts = torch.zeros(K, C, dtype=torch.float64, device=device)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for images, tri in loader:
                features = net(images.to(device)).float()                        # (B, D, H, W)
                tri = tri.to(device).long()
                face = tri >= 0
                pixels = features.permute(0, 2, 3, 1)[face].double()             # (N, D)
                labels = head.lut[:, tri[face]].long()                           # (K, N)
                for k in range(K):
                    sums[k].index_add_(0, labels[k], pixels)
                    counts[k] += torch.bincount(labels[k], minlength=C)
    finally:
        net.train(was_training)
    seen = counts > 0
    with torch.no_grad():
        head.h[seen] = torch.nn.functional.normalize(sums[seen], dim=-1).to(head.h.dtype)
    return float(seen.double().mean())


AUGMENT_SALT = 11  # the augmentation's own draws (salt 0: the loss's subsampling, 7: validation)


def _step_generator(device: torch.device, seed: int, step: int, rank: int, salt: int = 0) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + step) * 1009 + rank) * 31 + salt)
    return g


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def _param_groups(module: _TrainModule, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in module.net.named_parameters():
        (decay if p.ndim == 4 else no_decay).append(p)  # conv kernels decay; norms and biases do not
    no_decay += list(module.head.parameters())
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _amp_dtype(cfg: TrainConfig, device: torch.device):
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _hardware(device: torch.device, world: int) -> dict:
    info = {"device": str(device), "world_size": world, "torch": str(torch.__version__),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        from .. import __version__

        info["dffx"] = __version__
    except ImportError:  # pragma: no cover
        pass
    return info


# --------------------------------------------------------------------------- checkpoints
def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoint files ``step_XXXXXXXX.pt`` in ``directory``, oldest step first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.glob("step_*.pt"):
        try:
            found.append((int(p.stem.split("_", 1)[1]), p))
        except ValueError:
            continue
    return [p for _, p in sorted(found)]


def _save_checkpoint(cfg: TrainConfig, step: int, module: _TrainModule, optimizer, scaler, history: list,
                     metadata: dict) -> Path:
    directory = cfg.checkpoint_path
    directory.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": step,
        "net_config": asdict(module.net.config), "model": module.net.state_dict(),
        "loss_head": module.head.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(), "config": plain_metadata(cfg.to_dict()), "metadata": plain_metadata(metadata),
        "history": plain_metadata({"h": history[-1000:]})["h"],
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    path = directory / f"step_{step:08d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    for old in list_checkpoints(directory)[:-cfg.keep_checkpoints]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint (``torch.load(weights_only=True)``, CPU tensors).

    Returns:
        the dict with keys format, version, step, net_config, model, loss_head, optimizer,
        scaler, config, metadata, history, rng.

    Raises:
        ValueError: not a dffx DFF training checkpoint.
    """
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a dffx DFF training checkpoint")
    if int(blob.get("version", 0)) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {blob['version']}; this dffx reads <= {CHECKPOINT_VERSION}")
    return blob


# --------------------------------------------------------------------------- evaluation
def evaluate(net: DFFNet, head: nn.Module, dataset, cfg: TrainConfig, device: torch.device,
             max_batches: int | None = None) -> dict:
    """Held-out loss and patch accuracy of ``net`` + ``head`` on ``dataset`` (eval mode, no grad).

    Batches of ``cfg.batch_size`` in dataset order; the loss's pixel/segmentation draw uses
    ``cfg.pixels_per_image`` / ``cfg.segments`` with generators seeded by (cfg.seed, batch index),
    so repeated evaluations of the same weights give the same numbers.

    Returns:
        {"loss": mean total loss per batch, "accuracy": image-weighted mean patch accuracy,
        "images": images evaluated}; loss/accuracy NaN when the dataset is empty.
    """
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False,
                                         num_workers=cfg.workers, collate_fn=_collate)
    was_training = net.training, head.training
    net.eval(), head.eval()
    loss_sum = acc_sum = 0.0
    n_images = 0
    try:
        with torch.no_grad():
            for i, (images, tri) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                images, tri = images.to(device), tri.to(device)
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                out = head(net(images).float(), tri, pixels_per_image=cfg.pixels_per_image, segments=cfg.segments,
                           generator=_step_generator(device, cfg.seed, i, 0, salt=7))
                b = images.shape[0]
                loss_sum += float(out.total) * b
                acc_sum += float(out.accuracy) * b
                n_images += b
    finally:
        net.train(was_training[0]), head.train(was_training[1])
    if n_images == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "images": 0}
    return {"loss": loss_sum / n_images, "accuracy": acc_sum / n_images, "images": n_images}


# --------------------------------------------------------------------------- trainer
def _dist_setup(cfg: TrainConfig):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = torch.device(cfg.device) if cfg.device else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        return device, 0, 1, False
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    started = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        started = True
    return device, rank, world, started


def train_dff(config: TrainConfig, dataset_factory: Callable[..., Any] | None = None) -> TrainResult:
    """Train the DFF extractor (paper Sec. III-B) and write the weights file ``config.out``.

    Args:
        config: :class:`TrainConfig`.
        dataset_factory: ``factory(root, split=...)`` returning a torch Dataset whose items are
            dicts with "image" float32 (3, H, W) RGB in [0, 1] and "triangle_id" int (H, W)
            (-1: no face surface); called with split "train" and "val". Default:
            :func:`default_dataset_factory` (``SynthDataset``). Tests inject small fakes here.

    Returns:
        :class:`TrainResult`. Side effects: checkpoints and ``train_log.jsonl`` in
        ``config.checkpoint_path``, the weights file ``config.out`` (rank 0 only).

    Raises:
        ValueError: invalid config, empty training split, mismatching data or a checkpoint
            written for a different network.
        FileNotFoundError: missing data folder or segmentation file.
    """
    from ..segment import load_segmentations
    from .loss import AngularSoftmaxLoss

    cfg = config
    cfg.validate()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    factory = dataset_factory or default_dataset_factory
    if not Path(cfg.data).exists():
        raise FileNotFoundError(f"training data folder not found: {cfg.data}")
    seg_path = cfg.segmentations_path
    if not seg_path.is_file():
        raise FileNotFoundError(f"segmentation file not found: {seg_path} (write one with `dffx segment --out ...`)")

    device, rank, world, started_dist = _dist_setup(cfg)
    is_main = rank == 0
    try:
        return _train(cfg, factory, load_segmentations(seg_path), AngularSoftmaxLoss, device, rank, world, is_main)
    finally:
        if started_dist:
            import torch.distributed as dist

            dist.destroy_process_group()


def _datasets(cfg, factory, is_main: bool):
    """(train split, val split or [] when the set has none); ValueError for an empty train split.

    The training splits of ``cfg.extra_data`` are appended to ``cfg.data``'s (one index space,
    drawn uniformly); validation reads ``cfg.data``'s held-out split only, so held-out accuracy
    stays comparable between runs with and without extra sets."""
    train_set = factory(cfg.data, split="train")
    if cfg.extra_data:
        from torch.utils.data import ConcatDataset

        train_set = ConcatDataset([train_set, *(factory(d, split="train") for d in cfg.extra_data)])
    try:
        val_set = factory(cfg.data, split="val")
    except ValueError as exc:  # SynthDataset raises for an empty split
        if is_main:
            warnings.warn(f"no held-out split ({exc}); training without held-out evaluation", stacklevel=2)
        val_set = []
    if len(train_set) == 0:
        raise ValueError(f"the training split of {cfg.data} is empty")
    return train_set, val_set


def _resume(cfg, module, optimizer, scaler, is_main: bool) -> tuple[int, dict | None]:
    """Load the newest checkpoint of ``cfg.checkpoint_path`` into the module, optimizer, scaler
    and random generators; (its step, its last held-out result), or (0, None) without one.

    Raises:
        ValueError: the checkpoint is for another network configuration.
    """
    found = list_checkpoints(cfg.checkpoint_path)
    if not found:
        if is_main and not cfg.init_from:
            print(f"no checkpoint in {cfg.checkpoint_path}; starting from scratch")
        return 0, None
    blob = load_checkpoint(found[-1])
    if blob["net_config"] != asdict(cfg.net):
        raise ValueError(f"checkpoint {found[-1]} is for network {blob['net_config']}, "
                         f"but this run asks for {asdict(cfg.net)}")
    old = blob.get("config", {})
    changed = [k for k in ("batch_size", "seed", "scale", "pixels_per_image", "segments")
               if k in old and old[k] != getattr(cfg, k)]
    if changed and is_main:
        warnings.warn(f"resuming {found[-1].name} with changed settings {changed}: the run will not "
                      "match an uninterrupted one", stacklevel=2)
    module.net.load_state_dict(blob["model"])
    module.head.load_state_dict(blob["loss_head"])
    optimizer.load_state_dict(blob["optimizer"])
    if scaler.is_enabled() and blob["scaler"]:  # empty when saved by a run without fp16 scaling
        scaler.load_state_dict(blob["scaler"])
    torch.set_rng_state(blob["rng"]["torch"])
    random.setstate(blob["rng"]["python"])
    if blob["rng"].get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng"]["cuda"])
    if is_main:
        print(f"resuming from {found[-1]} at step {int(blob['step'])}")
    return int(blob["step"]), (blob.get("metadata") or {}).get("held_out")


def _start(cfg, module, optimizer, scaler, is_main: bool, train_set, device) -> tuple[int, dict | None]:
    """(step, last held-out result) to start from: the newest checkpoint with ``cfg.resume``, else
    step 0, the network first initialised from ``cfg.init_from`` when given."""
    step, last_val = _resume(cfg, module, optimizer, scaler, is_main) if cfg.resume else (0, None)
    if cfg.init_from and step == 0:
        _init_from_checkpoint(module, cfg, is_main, train_set, device)
    return step, last_val


def _optimizer_step(module, optimizer, scaler, loss, grad_clip) -> None:
    """Backward pass, optional gradient clipping, and the (loss-scaled) AdamW update."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()


def _barrier(world: int) -> None:
    """Wait for every process of a distributed run (nothing to do for one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _time_is_up(cfg, t_start: float, stop_flag, world: int) -> bool:
    """Whether ``cfg.time_limit_s`` has passed (rank 0 decides for all ranks)."""
    if cfg.time_limit_s is None:
        return False
    stop_flag.fill_(float(time.perf_counter() - t_start > cfg.time_limit_s))
    if world > 1:
        import torch.distributed as dist

        dist.broadcast(stop_flag, src=0)
    return bool(stop_flag.item())


def _prepare_batch(images, tri, cfg, step: int, rank: int, device, check: bool = False):
    """A loaded batch (checked first with ``check``: a run's first batch) augmented (drawn from
    (seed, step, rank): a resumed run repeats the draws), moved to ``device``, channels-last
    when configured."""
    if check:
        _check_batch(images, tri, cfg.net.multiple)
    if cfg.augment:
        images, tri = augment_batch(images, tri, cfg.augment,
                                    _step_generator(torch.device("cpu"), cfg.seed, step, rank, salt=AUGMENT_SALT))
    images = images.to(device, non_blocking=True)
    tri = tri.to(device, non_blocking=True)
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, tri


def _ema(average: float | None, value: float) -> float:
    """The training curve's exponential moving average (weight 0.1 on the newest value)."""
    return value if average is None else 0.9 * average + 0.1 * value


def _metadata(cfg, segs, net, amp_dtype, device, world: int, t_start: float, sizes: tuple[int, int], step: int,
              completed: bool, last_val, ema: tuple) -> dict:
    """What a checkpoint and the weights file record about the run (the model card's facts)."""
    return {"steps": step, "completed": completed, "train_images": sizes[0], "val_images": sizes[1],
            "batch_size": cfg.batch_size, "global_batch": cfg.batch_size * world, "lr": cfg.lr,
            "scale": cfg.scale, "pixels_per_image": cfg.pixels_per_image, "segments": cfg.segments,
            "augment": list(cfg.augment),
            "segmentations": {"file": str(cfg.segmentations_path), "count": int(segs.lut.shape[0]),
                              "n_patches": int(segs.n_patches), "mesh_hash": segs.mesh_hash},
            "held_out": last_val, "final_train": {"loss": ema[0], "accuracy": ema[1]},
            "parameters": count_parameters(net), "seed": cfg.seed,
            "init_from": str(cfg.init_from) if cfg.init_from else None,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
            "hardware": _hardware(device, world), "wall_s_this_run": round(time.perf_counter() - t_start, 1),
            "data": str(cfg.data), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "paper": "Jiang et al., Deep Face Feature for Face Alignment, arXiv 1708.02721, Sec. III-B"}


def _build(cfg, segs, loss_cls, device):
    """The network with its loss head on ``device``, AdamW, the autocast dtype and the loss scaler."""
    head = loss_cls(torch.as_tensor(segs.lut), n_patches=segs.n_patches, dim=cfg.net.out_dim, scale=cfg.scale)
    _unit_class_vectors(head)
    module = _TrainModule(DFFNet(cfg.net), head).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    if cfg.channels_last:
        module.net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(_param_groups(module, cfg.weight_decay), lr=cfg.lr)
    amp_dtype = _amp_dtype(cfg, device)
    return module, optimizer, amp_dtype, torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)


def _distributed(module, world: int, device):
    """``module`` wrapped for data-parallel training when there are several processes."""
    if world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)


def _loader(cfg, train_set, step: int, end: int, rank: int, world: int, device):
    """Batches for steps ``step`` to ``end`` (:class:`StepSampler`: a resumed run sees the batches an
    uninterrupted one would)."""
    sampler = StepSampler(len(train_set), cfg.batch_size, cfg.seed, step, max(step, end), rank, world)
    return torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler,
                                       num_workers=cfg.workers, collate_fn=_collate,
                                       pin_memory=device.type == "cuda", persistent_workers=False,
                                       generator=torch.Generator().manual_seed(cfg.seed + step))


class _RunLog:
    """Appends entries to the run's history and, in the main process, to ``train_log.jsonl``."""

    def __init__(self, history: list, path: Path | None):
        self.history = history
        self.file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a")

    def __call__(self, entry: dict) -> None:
        self.history.append(entry)
        if self.file:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None


def _held_out(module, val_set, cfg, device, step: int, log) -> dict | None:
    """The held-out loss and accuracy at ``step`` (logged), or None without a val split."""
    if len(val_set) == 0:
        return None
    result = {"step": step, **evaluate(module.net, module.head, val_set, cfg, device, cfg.val_batches)}
    log({"kind": "val", **result})
    return result


def _show_progress(bar, ema_loss: float, ema_acc: float, last_val: dict | None) -> None:
    postfix = {"loss": f"{ema_loss:.3f}", "acc": f"{ema_acc:.3f}"}
    if last_val:
        postfix["val_acc"] = f"{last_val['accuracy']:.3f}"
    bar.set_postfix(postfix, refresh=False)
    bar.update(1)


def _train(cfg, factory, segs, loss_cls, device, rank, world, is_main) -> TrainResult:
    t_start = time.perf_counter()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    train_set, val_set = _datasets(cfg, factory, is_main)

    module, optimizer, amp_dtype, scaler = _build(cfg, segs, loss_cls, device)

    history = []
    ckpt_dir = cfg.checkpoint_path
    step, last_val = _start(cfg, module, optimizer, scaler, is_main, train_set, device)
    first_step = step

    train_module = _distributed(module, world, device)
    end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    loader = _loader(cfg, train_set, step, end, rank, world, device)
    log = _RunLog(history, ckpt_dir / "train_log.jsonl" if is_main else None)

    def metadata(completed: bool) -> dict:
        return _metadata(cfg, segs, module.net, amp_dtype, device, world, t_start, (len(train_set), len(val_set)),
                         step, completed, last_val, (ema_loss, ema_acc))

    def run_val():
        nonlocal last_val
        last_val = _held_out(module, val_set, cfg, device, step, log) or last_val

    from tqdm import tqdm

    bar = tqdm(total=end, initial=min(step, end), disable=not (cfg.progress and is_main), desc="train dff",
               dynamic_ncols=True)
    ema_loss = ema_acc = None
    stop_flag = torch.zeros(1, device=device)
    module.train()
    try:
        for images, tri in loader:
            images, tri = _prepare_batch(images, tri, cfg, step, rank, device, check=step == first_step)
            lr = _lr_at(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            out = train_module(images, tri, amp_dtype, cfg.pixels_per_image, cfg.segments,
                               _step_generator(device, cfg.seed, step, rank))
            loss = out.total
            if not torch.isfinite(loss):
                raise RuntimeError(f"training loss became {float(loss)} at step {step}; lower --lr")
            _optimizer_step(module, optimizer, scaler, loss, cfg.grad_clip)
            step += 1

            lv, av = float(loss.detach()), float(out.accuracy)
            ema_loss, ema_acc = _ema(ema_loss, lv), _ema(ema_acc, av)
            if is_main:
                if step % cfg.log_every == 0 or step == end:
                    log({"kind": "train", "step": step, "loss": lv, "accuracy": av, "lr": lr})
                if cfg.val_every and step % cfg.val_every == 0 and step < end:
                    run_val()
                _show_progress(bar, ema_loss, ema_acc, last_val)
            if _time_is_up(cfg, t_start, stop_flag, world):
                break
            if step % cfg.checkpoint_every == 0 and step < end:
                if is_main:
                    _save_checkpoint(cfg, step, module, optimizer, scaler, history, metadata(False))
                _barrier(world)
    except BaseException:
        log.close()
        raise
    finally:
        bar.close()

    completed = step >= cfg.steps
    out_path = Path(cfg.out)
    if is_main:
        if ema_loss is not None or last_val is None:
            run_val()
        meta = metadata(completed)
        _save_checkpoint(cfg, step, module, optimizer, scaler, history, meta)
        save_weights(out_path, module.net, meta, half=cfg.half_weights)
        log({"kind": "done", "step": step, "completed": completed, "out": str(out_path)})
        log.close()
    _barrier(world)
    return TrainResult(out_path, step, completed, ema_loss, ema_acc, last_val, history)
