"""``dffx synth`` and ``dffx synth-preview``: training data."""

from __future__ import annotations

import json


def _cmd_synth(args) -> int:
    from ..synth import SynthConfig, synthesize

    summary = synthesize(SynthConfig(photos=args.photos, out=args.out, views=args.views, size=args.size,
                                     seed=args.seed, workers=args.workers, shard_size=args.shard_size,
                                     holdout_fraction=args.holdout_fraction, contour=args.contour,
                                     background=args.background, landmarks=args.landmarks, model=args.model,
                                     mirror_photos=not args.no_mirror_photos,
                                     original_views=args.original_views,
                                     progress=not args.no_progress))
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_synth_preview(args) -> int:
    from ..synth.preview import preview_grid

    path = preview_grid(args.data, args.out, count=args.count, columns=args.columns,
                        segmentations=args.segmentations, split=args.split)
    print(path)
    return 0


def add_parsers(sub, train_sub) -> None:
    """Register ``dffx synth`` and ``dffx synth-preview`` (the ``add_parsers`` of :mod:`dffx.cli`)."""
    p = sub.add_parser("synth", help="training data: fit the 3DMM to annotated photos, render new views (Sec. III-A)")
    p.add_argument("--photos", required=True, help="folder of photos with 68-point iBUG .pts files (recursive)")
    p.add_argument("--out", required=True, help="output folder (resumable: finished shards are kept)")
    p.add_argument("--views", type=int, required=True, help="number of samples to render (paper: 80000)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="master seed (sample i uses rng([seed, i]))")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    p.add_argument("--shard-size", type=int, default=500, help="samples per shard")
    p.add_argument("--holdout-fraction", type=float, default=0.05, help="photos held out (the 'val' split)")
    p.add_argument("--contour", default="fixed", choices=["published", "fixed", "march", "weight"],
                   help="jaw strategy of the photo fits (docs/synthesis.md); fixed (default) fits the vertices "
                        "that label the renders")
    p.add_argument("--background", default="context", choices=["context", "no-face", "any"],
                   help="context (default): the photo's own head and surroundings turned with the face (face "
                        "profiling); no-face: paste the face on a crop of another photo beside its annotated "
                        "face; any: on a crop anywhere, as sets made before 2026-12-02 did")
    p.add_argument("--landmarks", default="300w", choices=["300w", "ict"],
                   help="landmark convention of the labels: 300w = vertices learned from 300-W's annotations "
                        "(default), ict = ICT-FaceKit's published vertices (sets made before 2026-12-06)")
    p.add_argument("--no-mirror-photos", action="store_true",
                   help="do not add each photo's mirror image as a source (sets made before 2026-12-06)")
    p.add_argument("--original-views", type=float, default=None,
                   help="fraction of samples rendered at their photo's own pose (default 0.1 with the context "
                        "background, 0 otherwise)")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_synth)

    p = sub.add_parser("synth-preview", help="grid of synthesized samples across yaw, with landmarks and patch labels")
    p.add_argument("data", help="a dffx synth output folder")
    p.add_argument("--out", required=True, help="image to write (.png/.jpg)")
    p.add_argument("--segmentations", default=None, help="dffx segment .npz: also draw segmentation 0's labels")
    p.add_argument("--count", type=int, default=12, help="samples in the grid")
    p.add_argument("--columns", type=int, default=4, help="cells per row")
    p.add_argument("--split", default="all", choices=["train", "val", "all"], help="which split to draw from")
    p.set_defaults(run=_cmd_synth_preview)
