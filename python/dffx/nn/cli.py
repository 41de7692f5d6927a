"""``dffx train dff``: the command line of the DFF trainer (:func:`dffx.nn.train.train_dff`).

:func:`add_parsers` registers it on ``dffx train``, with ``dffx export-onnx``; neither imports
PyTorch before it runs.

Example (2-core CPU, default ~1.9 M-parameter net)::

    dffx train dff --data synth/ --out dff.pt --steps 20000 --batch-size 8 --resume

Multi-GPU: ``torchrun --nproc_per_node=4 -m dffx train dff --data synth/ --out dff.pt --net large``.
"""

from __future__ import annotations

import argparse

from .config import AUGMENT_FAMILIES, TrainConfig, parse_augment


def _positive_or_all(text: str) -> int | None:
    """argparse type: a positive int, or 0 / "all" meaning None (no subsampling)."""
    if text.lower() == "all":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = all), got {value}")
    return value or None


def add_train_dff_parser(train_subparsers) -> argparse.ArgumentParser:
    """Add the ``dff`` sub-command to the sub-parsers of ``dffx train``.

    Args:
        train_subparsers: the object returned by ``train_parser.add_subparsers(...)``.

    Returns:
        the new sub-parser; its ``run`` default (:func:`run_train_dff`) returns the exit code.
    """
    d = TrainConfig(data="", out="")
    p = train_subparsers.add_parser(
        "dff", help="train the DFF extractor U-Net on synthetic renders (paper Sec. III-B)",
        description="Train the Deep Face Feature network (U-Net + angular-softmax patch classifiers over random "
                    "segmentations, paper Sec. III-B). Writes a weights file loadable by dffx.nn.DFFExtractor.")
    p.add_argument("--data", required=True, help="training-data folder (dffx synth output, with segmentations.npz)")
    p.add_argument("--extra-data", nargs="+", default=[], metavar="DIR",
                   help="more dffx synth folders whose training splits join --data's (validation stays on "
                        "--data's held-out split), e.g. a set of photos at their own pose")
    p.add_argument("--out", required=True, help="output weights file (.pt)")
    p.add_argument("--segmentations", default=None, help="segmentation set .npz (default: DATA/segmentations.npz)")
    p.add_argument("--net", choices=["default", "large"], default="default",
                   help="network size: default (base 16, ~1.9 M parameters) or large (base 32, ~7.8 M)")
    p.add_argument("--base-channels", type=int, default=None, help="override the net's first-level channels")
    p.add_argument("--depth", type=int, default=None, help="override the net's number of down-samplings")
    p.add_argument("--steps", type=int, default=d.steps, help=f"total optimizer steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"images per step and process (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"(default {d.weight_decay})")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=f"(default {d.warmup_steps})")
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default=d.lr_schedule)
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default: off)")
    p.add_argument("--scale", type=float, default=d.scale,
                   help=f"angular-softmax logit scale s (paper: 1; default {d.scale})")
    p.add_argument("--pixels-per-image", type=_positive_or_all, default=d.pixels_per_image,
                   help=f"face pixels drawn per image and step for the loss, 0 = all (default {d.pixels_per_image})")
    p.add_argument("--segments", type=_positive_or_all, default=d.segments,
                   help=f"segmentations drawn per step, 0 = all (paper: all 100; default {d.segments})")
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help=f"held-out evaluation every N steps, 0 = only at the end (default {d.val_every})")
    p.add_argument("--val-batches", type=_positive_or_all, default=d.val_batches,
                   help=f"held-out batches per evaluation, 0 = the whole split (default {d.val_batches})")
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default: OUT without suffix + "
                                                          "'_checkpoints')")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help=f"(default {d.checkpoint_every})")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="fine-tune: start net and patch vectors from this training checkpoint, or the net from a "
                        "weights file or shipped name such as 'default' (patch vectors: each patch's mean "
                        "descriptor); fresh optimizer and schedule")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this global step (train in slices)")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="checkpoint and stop after this many minutes (resume later with --resume)")
    p.add_argument("--workers", type=int, default=d.workers, help=f"DataLoader workers (default {d.workers})")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default=d.amp,
                   help="mixed precision on CUDA (default auto: bf16 if supported, else fp16)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice, all cores; on a CPU shared with other "
                        "jobs 1 thread can be several times faster than oversubscribed cores)")
    p.add_argument("--full-precision-weights", action="store_true",
                   help="store the output in float32 (default: float16 parameters, half the size)")
    p.add_argument("--augment", default="", metavar="FAMILIES",
                   help="training-time augmentation (dffx.nn.augment): 'all' or a comma-separated subset of "
                        f"{','.join(AUGMENT_FAMILIES)} (default: none)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"(default {d.seed})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_train_dff)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` described by parsed ``dffx train dff`` arguments.

    Raises:
        ValueError: invalid network override.
    """
    from .config import DFFNetConfig

    net = DFFNetConfig.preset(args.net)
    overrides = {k: v for k, v in (("base_channels", args.base_channels), ("depth", args.depth)) if v is not None}
    if overrides:
        net = DFFNetConfig.from_dict({**net.__dict__, **overrides})
    return TrainConfig(
        data=args.data, extra_data=tuple(args.extra_data), out=args.out, segmentations=args.segmentations, net=net,
        steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule, grad_clip=args.grad_clip, scale=args.scale,
        pixels_per_image=args.pixels_per_image, segments=args.segments, val_every=args.val_every,
        val_batches=args.val_batches, checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
        resume=args.resume, init_from=args.init, stop_at=args.stop_at,
        time_limit_s=None if args.time_limit is None else 60.0 * args.time_limit, workers=args.workers,
        device=args.device, amp=args.amp, num_threads=args.threads, half_weights=not args.full_precision_weights,
        seed=args.seed, progress=not args.no_progress, augment=parse_augment(args.augment))


def run_train_dff(args: argparse.Namespace) -> int:
    """Run ``dffx train dff``; prints a summary (weights file, steps, held-out loss/accuracy) and
    returns 0. Errors propagate (the dffx CLI turns OSError/ValueError/RuntimeError into exit 1)."""
    from .train import train_dff

    cfg = config_from_args(args)
    result = train_dff(cfg)
    if result.out.is_file():
        size_mb = result.out.stat().st_size / 1e6
        state = "completed" if result.completed else f"stopped early (resume with --resume to reach {cfg.steps})"
        print(f"{result.out}  ({size_mb:.1f} MB, step {result.step}/{cfg.steps}, {state})")
        if result.val:
            print(f"held-out  loss {result.val['loss']:.4f}  patch accuracy {result.val['accuracy']:.4f}  "
                  f"({result.val['images']} images, step {result.val['step']})")
        if result.train_loss is not None:
            print(f"train (EMA)  loss {result.train_loss:.4f}  patch accuracy {result.train_accuracy:.4f}")
        print(f"checkpoints  {cfg.checkpoint_path}")
    return 0


def _cmd_export_onnx(args) -> int:
    from ..nn.onnx_export import export_onnx

    out = export_onnx(args.out, args.weights, args.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_parsers(sub, train_sub) -> None:
    """Register ``dffx train dff`` and ``dffx export-onnx`` (PyTorch is imported when they run)."""
    add_train_dff_parser(train_sub)
    p = sub.add_parser("export-onnx", help="write a DFF network as ONNX (ONNX Runtime, TensorRT, ...; needs torch "
                                           "and onnx)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--weights", default=None, help="DFF weights: a shipped name or a .pt file (default: the shipped "
                                                   "default network)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    p.set_defaults(run=_cmd_export_onnx)
