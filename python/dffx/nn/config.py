"""Settings of the DFF network and its trainer, importable without PyTorch.

:class:`DFFNetConfig` (the U-Net's size, stored in every weights file) and :class:`TrainConfig`
(every flag of ``dffx train dff``) live here rather than beside the code that uses them so
that building the ``dffx`` command line never imports torch (about a second of start-up).
:mod:`dffx.nn.unet` and :mod:`dffx.nn.train` re-export them.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

_NORMS = ("batch", "group", "none")
_AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def is_weights_name(weights) -> bool:
    """A bare word like "default" or "base8" (not an existing file) names a shipped network:
    ``dffx/weights/dff_<name>.pt``, or ``.onnx`` for the ONNX Runtime extractor."""
    return (isinstance(weights, str) and re.fullmatch(r"[A-Za-z0-9_-]+", weights) is not None
            and not Path(weights).exists())


# what a weights file may declare (the "large" preset has 7.8 M parameters): a bound checked
# before any layer is allocated, so a crafted file cannot ask for gigabytes
MAX_PARAMETERS = 200_000_000
MAX_OUT_DIM = 1024


@dataclass(frozen=True)
class DFFNetConfig:
    """Size of a :class:`DFFNet`; stored in every weights file so loading rebuilds the same net.

    Attributes:
        base_channels: channels of the first (full-resolution) level.
        depth: number of 2x down-samplings; H and W must be multiples of ``2 ** depth``.
        out_dim: feature dimension (paper: 32).
        norm: "batch" (BatchNorm2d, default), "group" (GroupNorm with 8 groups, for tiny or
            uneven batches) or "none" (convolutions get a bias).
        max_channels: cap on the channels of the deep levels (None: no cap).
    """

    base_channels: int = 16
    depth: int = 4
    out_dim: int = 32
    norm: str = "batch"
    max_channels: int | None = None

    def __post_init__(self):
        for name in ("base_channels", "depth", "out_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DFFNetConfig.{name} must be a positive int, got {value!r}")
        if self.depth > 8:
            raise ValueError(f"DFFNetConfig.depth must be <= 8, got {self.depth}")
        if self.norm not in _NORMS:
            raise ValueError(f"DFFNetConfig.norm must be one of {_NORMS}, got {self.norm!r}")
        if self.max_channels is not None and (not isinstance(self.max_channels, int) or self.max_channels < 1):
            raise ValueError(f"DFFNetConfig.max_channels must be None or a positive int, got {self.max_channels!r}")
        if self.norm == "group" and any(c % 8 for c in self.channels):
            raise ValueError(f"norm='group' needs channel counts divisible by 8, got {self.channels}")
        if self.out_dim > MAX_OUT_DIM or self.estimated_parameters > MAX_PARAMETERS:
            raise ValueError(f"DFFNetConfig {self.channels} -> {self.out_dim} is too large (about "
                             f"{self.estimated_parameters / 1e6:.0f} M parameters; at most {MAX_PARAMETERS / 1e6:.0f} M "
                             f"and out_dim <= {MAX_OUT_DIM}): refusing to allocate it")

    @property
    def estimated_parameters(self) -> int:
        """An upper bound on the parameter count (two 3x3 convolutions per level on the way down
        and up, the up-sampling and the skip), known before any layer is built."""
        return sum(45 * c * c for c in self.channels) + 9 * 3 * self.channels[0] + self.channels[0] * self.out_dim

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels per level, from full resolution (level 0) to the bottleneck (level ``depth``)."""
        cap = self.max_channels or 1 << 30
        return tuple(min(self.base_channels << i, cap) for i in range(self.depth + 1))

    @property
    def multiple(self) -> int:
        """H and W of the input must be multiples of this (``2 ** depth``)."""
        return 1 << self.depth

    @classmethod
    def preset(cls, name: str) -> "DFFNetConfig":
        """Named sizes: "default" (base 16, 1.94 M parameters, CPU-trainable and shipped) and
        "large" (base 32, 7.76 M parameters, for GPU training).

        Raises:
            ValueError: unknown name.
        """
        presets = {"default": cls(), "large": cls(base_channels=32)}
        if name not in presets:
            raise ValueError(f"unknown DFFNet preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]

    @classmethod
    def from_dict(cls, data: dict) -> "DFFNetConfig":
        """Rebuild from :func:`dataclasses.asdict` output (unknown keys are an error).

        Raises:
            ValueError: not a dict, unknown keys or invalid values.
        """
        if not isinstance(data, dict):
            raise ValueError(f"DFFNet config must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DFFNet config keys {unknown} (this dffx knows {sorted(known)})")
        return cls(**data)


# training-time augmentation families (dffx.nn.augment); here so that validation needs no torch
AUGMENT_FAMILIES = ("colour", "blur", "noise", "jpeg", "scale", "occlusion")


def parse_augment(text: str | None) -> tuple[str, ...]:
    """``"all"``, ``""``/None or a comma-separated subset of :data:`AUGMENT_FAMILIES` -> names.

    Raises:
        ValueError: an unknown family name.
    """
    if not text:
        return ()
    if text == "all":
        return AUGMENT_FAMILIES
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in AUGMENT_FAMILIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; choose from {AUGMENT_FAMILIES} or 'all'")
    return names


@dataclass
class TrainConfig:
    """Settings of :func:`train_dff` (all CLI flags of ``dffx train dff`` map to these fields).

    Attributes:
        data: training-data folder (SynthDataset layout, with ``segmentations.npz``); its
            held-out split is the one validation reads.
        extra_data: more training-data folders (same mesh and segmentations) whose training
            splits are added to ``data``'s, e.g. a set of photos at their own pose
            (``dffx synth --original-views 1``) beside the profiled renders; their held-out
            splits are not read. Samples are drawn uniformly from the union, so each set's
            share is its size.
        out: output weights file (network config + state_dict + metadata).
        segmentations: segmentation set (:func:`dffx.segment.load_segmentations`);
            default ``data/segmentations.npz``.
        net: network size (:class:`DFFNetConfig`; default ~1.9 M parameters).
        steps: optimizer steps in total (a resumed run continues up to this number).
        batch_size: images per step and per process.
        lr: peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay on the convolution weights (norm layers,
            biases and the loss head's patch vectors get none).
        warmup_steps: linear warm-up from 0 to ``lr``.
        lr_schedule: "cosine" (decay to 1% of lr at ``steps``) or "constant".
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        scale: logit scale s of the angular softmax (paper: 1; default 16, see module docstring).
        pixels_per_image: face pixels drawn per image and step for the loss (None: all face
            pixels). 2048 is ~10% of a 224x224 face render.
        segments: segmentations drawn per step (None: all of them, paper: 100).
        val_every: evaluate on the held-out split every this many steps (0: only at the end).
        val_batches: held-out batches per evaluation (None: the whole split).
        checkpoint_dir: default ``<out without suffix>_checkpoints`` beside ``out``.
        checkpoint_every: write a checkpoint every this many steps (and always at the end).
        keep_checkpoints: keep this many newest checkpoints (older ones are deleted).
        resume: continue from the newest checkpoint in ``checkpoint_dir`` (fresh start if none).
        init_from: start the network and the loss head's patch vectors from this training
            checkpoint (fine-tuning: step count, optimizer state and schedule start fresh), or
            the network from this weights file or shipped name ("default"), with the patch
            vectors set to the mean descriptor of each patch over training images.
            Ignored when ``resume`` finds a checkpoint of this run.
        workers: DataLoader worker processes (0: load in the main process).
        device: "cpu", "cuda" or "cuda:N" (None: CUDA when available). Under torchrun each rank
            uses cuda:LOCAL_RANK.
        amp: "auto" (bf16 if the GPU supports it, else fp16 with GradScaler; off on CPU),
            "bf16", "fp16" or "off". Ignored on CPU.
        channels_last: run the net in channels-last memory format (faster with oneDNN/cuDNN).
        seed: seeds the initialisation, the sample order and the loss subsampling.
        progress: show a tqdm bar with loss and patch accuracy (rank 0).
        log_every: append a training line to ``checkpoint_dir/train_log.jsonl`` every this many steps.
        stop_at: stop (checkpoint and write ``out``) after this global step even if ``steps``
            is not reached, e.g. to train in slices; ``--resume`` continues.
        time_limit_s: stop likewise once this many seconds have passed in this run.
        half_weights: store the output's parameters as float16 (half the size).
        num_threads: torch CPU threads (None: leave torch's default).
        augment: training-time augmentation families (:mod:`dffx.nn.augment`), e.g.
            ``("colour", "occlusion")``; empty: none (runs before 2026-12-06).
    """

    data: str | os.PathLike
    out: str | os.PathLike
    segmentations: str | os.PathLike | None = None
    extra_data: tuple = ()
    net: DFFNetConfig = field(default_factory=DFFNetConfig)
    steps: int = 20000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    lr_schedule: str = "cosine"
    grad_clip: float | None = None
    scale: float = 16.0
    pixels_per_image: int | None = 2048
    segments: int | None = 16
    val_every: int = 500
    val_batches: int | None = 16
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    resume: bool = False
    init_from: str | os.PathLike | None = None
    workers: int = 0
    device: str | None = None
    amp: str = "auto"
    channels_last: bool = True
    seed: int = 0
    progress: bool = True
    log_every: int = 10
    stop_at: int | None = None
    time_limit_s: float | None = None
    half_weights: bool = True
    num_threads: int | None = None
    augment: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raise ValueError for out-of-range settings."""
        def positive(name, allow_none=False, allow_zero=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if allow_zero else 1):
                raise ValueError(f"TrainConfig.{name} must be a {'non-negative' if allow_zero else 'positive'} int"
                                 f"{' or None' if allow_none else ''}, got {v!r}")

        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            positive(name)
        for name in ("val_every", "warmup_steps", "workers"):
            positive(name, allow_zero=True)
        for name in ("pixels_per_image", "segments", "val_batches", "stop_at", "num_threads"):
            positive(name, allow_none=True)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"TrainConfig.scale must be positive, got {self.scale}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig.lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.amp not in _AMP_CHOICES:
            raise ValueError(f"TrainConfig.amp must be one of {_AMP_CHOICES}, got {self.amp!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip}")
        parse_augment(",".join(self.augment))
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"TrainConfig.time_limit_s must be positive or None, got {self.time_limit_s}")
        if not isinstance(self.net, DFFNetConfig):
            raise ValueError(f"TrainConfig.net must be a DFFNetConfig, got {type(self.net).__name__}")

    @property
    def segmentations_path(self) -> Path:
        """The segmentation file actually used."""
        return Path(self.segmentations) if self.segmentations else Path(self.data) / "segmentations.npz"

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint folder actually used."""
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        out = Path(self.out)
        return out.with_name(out.stem + "_checkpoints")

    def to_dict(self) -> dict:
        """JSON-safe dict of the settings (paths as strings, net config as a dict)."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extra_data":
                v = [str(x) for x in v]
            d[f.name] = asdict(v) if isinstance(v, DFFNetConfig) else (str(v) if isinstance(v, os.PathLike) else v)
        return d
