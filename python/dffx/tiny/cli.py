"""``dffx train tiny`` and ``dffx export-tiny-onnx``: the tiny-face networks (issue 26)."""

from __future__ import annotations

import argparse


def add_parsers(sub, train_sub) -> None:
    """Register ``dffx train tiny`` (on ``train_sub``) and ``dffx export-tiny-onnx`` (on ``sub``, the
    top-level sub-parsers); PyTorch is imported when they run."""
    from .train import TinyTrainConfig

    d = TinyTrainConfig(out="")
    p = train_sub.add_parser("tiny", help="train the joint super-resolution and alignment network for tiny faces")
    p.add_argument("--out", required=True, help="weights file (.pt); checkpoints and the log go to OUT_checkpoints/")
    p.add_argument("--photos", default="", help="300-W training photos (e.g. ../shared/data/300w-train)")
    p.add_argument("--renders", default="", help="a dffx synth folder")
    p.add_argument("--steps", type=int, default=d.steps, help=f"(default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate, cosine decay (default {d.lr})")
    p.add_argument("--no-sr", action="store_true", help="the landmark-only ablation: no super-resolution head")
    p.add_argument("--sr-weight", type=float, default=d.sr_weight, help=f"(default {d.sr_weight})")
    p.add_argument("--landmark-head", choices=["heatmap", "regression"], default=d.landmark_head)
    p.add_argument("--width", type=int, default=d.width, help=f"(default {d.width})")
    p.add_argument("--blocks", type=int, default=d.blocks, help=f"(default {d.blocks})")
    p.add_argument("--val-every", type=int, default=d.val_every, help=f"(default {d.val_every})")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help=f"(default {d.checkpoint_every})")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="checkpoint and stop after this many minutes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_cmd_train_tiny)
    p = sub.add_parser("export-tiny-onnx", help="write a tiny-face network as ONNX (needs torch and onnx)")
    p.add_argument("--weights", required=True, help="a tiny-face weights file or checkpoint (dffx train tiny)")
    p.add_argument("--out", required=True, help="the .onnx file to write (next to a shipped .pt, with its name: the "
                                                "tiny path runs it on ONNX Runtime)")
    p.set_defaults(run=_cmd_export_tiny_onnx)


def _cmd_train_tiny(args: argparse.Namespace) -> int:
    from .train import TinyTrainConfig, train_tiny

    config = TinyTrainConfig(out=args.out, photos=args.photos, renders=args.renders, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, sr=not args.no_sr, sr_weight=args.sr_weight,
                             landmark_head=args.landmark_head, width=args.width, blocks=args.blocks,
                             val_every=args.val_every, checkpoint_every=args.checkpoint_every,
                             threads=args.threads, seed=args.seed)
    print(train_tiny(config, resume=args.resume, time_limit_min=args.time_limit, progress=not args.no_progress))
    return 0


def _cmd_export_tiny_onnx(args: argparse.Namespace) -> int:
    from .onnx_export import export_tiny_onnx

    print(f"wrote {export_tiny_onnx(args.out, args.weights)}")
    return 0
