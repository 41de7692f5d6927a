"""``dffx eval``: the benchmark protocols."""

from __future__ import annotations

import json
from pathlib import Path

from ..align.options import EVAL_DEFAULTS, EVAL_SETTINGS
from ..align.options import add_arguments as add_options
from ..align.options import from_args as options_from_args
from ..detect import DEFAULT_DETECTOR, DETECTORS
from .protocols import DATASETS as EVAL_DATASETS


def _cmd_eval(args) -> int:
    from ..eval import EvalOptions, evaluate, format_table
    from ..eval.protocols import write_per_image_csv
    from ..model import load_face_model

    align = options_from_args(args, EVAL_DEFAULTS)
    opts = EvalOptions(dataset=args.dataset, root=Path(args.root), method=args.method, limit=args.limit,
                       yaw_csv=Path(args.yaw_csv) if args.yaw_csv else None, detector=args.detector,
                       progress=not args.no_progress, cascade=Path(args.cascade) if args.cascade else None,
                       align=align, face_size=args.face_size,
                       tiny_weights=Path(args.tiny_weights) if args.tiny_weights else None)
    summary, rows = evaluate(opts, load_face_model(args.model))
    if args.per_image:
        write_per_image_csv(rows, Path(args.per_image))
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def add_parsers(sub, train_sub) -> None:
    """Register ``dffx eval`` (the ``add_parsers`` of :mod:`dffx.cli`)."""
    p = sub.add_parser("eval", help="benchmark protocols: NME by yaw bin (AFLW2000-3D, AFLW, held-out synthesized "
                                    "renders) or subset (300W), and head-pose MAE where the truth is known")
    p.add_argument("dataset", choices=list(EVAL_DATASETS))
    p.add_argument("root", help="dataset folder in its official layout (synth: a folder 'dffx synth' wrote; its "
                                "held-out renders are scored)")
    p.add_argument("--method", default="mean-shape", help="predictor: mean-shape, sift or dff (the cascade with the shipped directions)")
    p.add_argument("--limit", type=int, default=None, help="first N faces in the dataset's order")
    p.add_argument("--yaw-csv", default=None, help="AFLW2000-3D: name,yaw_deg lines that decide the yaw bins")
    p.add_argument("--detector", nargs="?", const=DEFAULT_DETECTOR, default=None, choices=DETECTORS,
                   help=f"start from detected boxes instead of ground truth (default detector: {DEFAULT_DETECTOR})")
    p.add_argument("--cascade", default=None,
                   help="dff/sift: a cascade file from 'dffx train cascade' instead of the shipped one")
    add_options(p, EVAL_SETTINGS, EVAL_DEFAULTS)  # dff/sift: defaults are the paper's protocol (one pass)
    p.add_argument("--face-size", type=float, default=None, metavar="PX",
                   help="shrink each image (area downscaling) so that its ground-truth face box is PX pixels on its "
                        "longer side before aligning; NME stays normalised by the box, so sizes compare")
    p.add_argument("--tiny-weights", default=None,
                   help="dff/sift: a tiny-face network from 'dffx train tiny' (or its checkpoint) instead of the shipped one")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--per-image", metavar="CSV", default=None, help="write per-face errors to CSV")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_eval)
