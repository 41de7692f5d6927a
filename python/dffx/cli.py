"""The ``dffx`` command line: ``info``, ``render-depth``, ``eval``, ``segment``, ``synth``,
``synth-preview``, ``train``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .detect import DEFAULT_DETECTOR, DETECTORS
from .eval.protocols import DATASETS as EVAL_DATASETS


def _cmd_info(args) -> int:
    from .info import cmake_dir, info

    if args.cmake_dir:
        print(cmake_dir())
        return 0
    facts = info()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(map(len, facts))
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _cmd_render_depth(args) -> int:
    import cv2

    from .model import load_face_model
    from .render import depth_to_image, frame_camera, render_depth

    model = load_face_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for yaw in args.yaw:
        camera = frame_camera(model.mean, np.radians(args.pitch), np.radians(yaw), np.radians(args.roll), args.size)
        result = render_depth(model, camera, args.size)
        path = out / f"mean_face_depth_yaw{yaw:+04.0f}.png"
        if not cv2.imwrite(str(path), depth_to_image(result.depth)):
            raise OSError(f"could not write {path}")
        print(f"{path}  ({int((result.triangle_id >= 0).sum())} face pixels)")
    return 0


def _cmd_eval(args) -> int:
    from .eval import EvalOptions, evaluate, format_table
    from .eval.protocols import write_per_image_csv
    from .model import load_face_model

    opts = EvalOptions(dataset=args.dataset, root=Path(args.root), method=args.method, limit=args.limit,
                       yaw_csv=Path(args.yaw_csv) if args.yaw_csv else None, detector=args.detector,
                       progress=not args.no_progress, cascade=Path(args.cascade) if args.cascade else None,
                       refine=args.refine, converged_iou=args.converged_iou, precision=args.precision,
                       mirror=args.mirror, backend=args.backend, camera_refit=not args.no_camera_refit)
    summary, rows = evaluate(opts, load_face_model(args.model))
    if args.per_image:
        write_per_image_csv(rows, Path(args.per_image))
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def _cmd_segment(args) -> int:
    import time

    from .model import load_face_model
    from .segment import area_spread, label_map, random_segmentations, save_segmentations

    model = load_face_model(args.model)
    start = time.perf_counter()
    lut = random_segmentations(model.mean, model.triangles, count=args.count, n_patches=args.patches,
                               seed=args.seed, iterations=args.iterations, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    path = save_segmentations(args.out, lut, n_patches=args.patches, seeds=args.seed + np.arange(args.count),
                              iterations=args.iterations, triangles=model.triangles)
    spread = area_spread(model.mean, model.triangles, lut, args.patches)
    print(f"{path}  ({args.count} segmentations x {args.patches} patches, {lut.shape[1]} triangles, "
          f"{args.iterations} Lloyd iterations)")
    print(f"time  {elapsed:.2f} s ({elapsed / args.count:.3f} s per segmentation)")
    print(f"patch area (cm^2)  min {spread['min']:.3f}  max {spread['max']:.3f}  mean {spread['mean']:.3f}  "
          f"std {spread['std']:.3f}  cv {spread['cv']:.3f}")
    if args.preview:
        import cv2

        from .geometry import project
        from .ops import rasterize
        from .render import frame_camera

        size = 448
        raster = rasterize(project(model.mean, frame_camera(model.mean, 0.0, 0.0, 0.0, size)), model.triangles, size)
        labels = label_map(lut[0], raster.triangle_id)
        palette = np.random.default_rng(args.seed).integers(40, 256, size=(args.patches, 3), dtype=np.uint8)
        image = np.zeros((size, size, 3), np.uint8)
        face = labels >= 0
        image[face] = palette[labels[face]]
        if not cv2.imwrite(str(args.preview), image):
            raise OSError(f"could not write {args.preview}")
        print(f"{args.preview}  (segmentation 0, frontal mean face, {len(np.unique(labels[face]))} patches visible)")
    return 0


def _cmd_synth(args) -> int:
    from .synth import SynthConfig, synthesize

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
    from .synth.preview import preview_grid

    path = preview_grid(args.data, args.out, count=args.count, columns=args.columns,
                        segmentations=args.segmentations, split=args.split)
    print(path)
    return 0


def _cmd_train_cascade(args) -> int:
    import time

    from .align import synth_split, train_cascade
    from .align.predictor import make_features
    from .model import load_face_model
    from .model.annotated_landmarks import model_for_convention

    model = model_for_convention(load_face_model(args.model), args.landmarks)
    features = make_features(args.features, args.dff)
    start = time.perf_counter()
    # labels at the chosen convention's vertices, from each render's stored camera and shape
    train = synth_split(args.data, "train", limit=args.train_images, seed=args.seed, model=model)
    if args.mirror_augment:
        from .align.mirror import mirrored_split

        train = mirrored_split(train)
    val = synth_split(args.data, "val", limit=args.val_images, seed=args.seed, model=model)
    perturbation = {}  # unset flags keep train_cascade's defaults
    if args.box_shift is not None:
        perturbation["box_shift"] = args.box_shift
    if args.box_scale is not None:
        perturbation["box_scale"] = args.box_scale
    cascade = train_cascade(model, features, train, val, stages=args.stages, boxes=args.boxes, seed=args.seed,
                            progress=not args.no_progress, **perturbation)
    cascade.info.update(data=str(args.data), seconds=round(time.perf_counter() - start, 1),
                        mirror_augment=bool(args.mirror_augment), landmarks=args.landmarks)
    if args.features == "dff":  # bind the directions to their network (dffx.align.predictor.cascade_features)
        from .nn.integrity import file_sha256
        from .nn.extractor import is_weights_name

        weights = features.extractor.weights_path
        name = "default" if args.dff is None else args.dff if is_weights_name(args.dff) else None
        cascade.info.update(dff_network=name, dff_sha256=file_sha256(weights),
                            dff_weights=f"dffx/weights/{weights.name}" if name else str(weights))
    path = cascade.save(args.out)
    print(json.dumps(cascade.info, indent=2))
    print(path)
    return 0


def _cmd_train_template(args) -> int:
    from .align import Cascade, synth_split
    from .align.cascade import training_template
    from .align.predictor import cascade_features
    from .model import load_face_model

    cascade = Cascade.load(args.cascade)
    features = cascade_features(cascade)  # the features the directions were learned on
    # labels at the cascade's own landmarks (as `dffx train cascade` computes them)
    model = cascade.bind(load_face_model(args.model))
    data = synth_split(args.data, "train", limit=args.images, seed=args.seed, model=model)
    cascade.template, used = training_template(features, data, np.random.default_rng(args.seed), count=args.images)
    cascade.info.update(template_images=used, template_data=str(args.data))
    path = cascade.save(args.out if args.out else args.cascade)
    print(f"template of {used} training faces -> {path}")
    return 0


def _cmd_train_min_score(args) -> int:
    from .align import FaceAligner
    from .align.score_calibration import calibrate_min_score
    from .data import load_300w

    if args.every < 1 or args.offset < 0:
        raise ValueError(f"--every must be >= 1 and --offset >= 0, got {args.every} and {args.offset}")
    samples, _ = load_300w(args.photos)
    samples = samples[args.offset::args.every]
    if not samples:
        raise ValueError(f"{args.photos}: no annotated photos (image + .pts) to calibrate on")
    aligner = FaceAligner("dff", cascade=args.cascade, model=args.model, min_score=None)
    calibration = calibrate_min_score(aligner, samples, seed=args.seed)
    calibration.update(photos=str(args.photos), every=args.every, offset=args.offset, seed=args.seed)
    aligner.cascade.info.update(min_score=calibration["min_score"], min_score_calibration=calibration)
    path = aligner.cascade.save(args.out if args.out else args.cascade)
    print(json.dumps(calibration, indent=2))
    print(path)
    return 0


def _missing(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _cmd_export_onnx(args) -> int:
    from .nn.onnx_export import export_onnx

    out = export_onnx(args.out, args.weights, args.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _cmd_export_cascade(args) -> int:
    from .align.cascade import Cascade
    from .align.export import write_cascade_file
    from .align.predictor import default_cascade_path
    from .model import load_face_model

    cascade = Cascade.load(args.cascade or default_cascade_path("dff"))
    out = write_cascade_file(args.out, load_face_model(args.model), cascade)
    network = cascade.info.get("dff_network") or cascade.info.get("dff_weights")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); run it on the maps of the DFF network "
          f"{network!r} (dffx export-onnx --weights {network or 'default'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``dffx`` command."""
    parser = argparse.ArgumentParser(prog="dffx", description="Large-pose face alignment with the Deep Face Feature")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="version, native backend, CUDA, data locations")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--cmake-dir", action="store_true", help="print only the folder holding dffxConfig.cmake")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("render-depth", help="write depth-map PNGs of the mean face at given yaw angles")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--yaw", type=float, nargs="+", default=[0.0, 45.0, 90.0], help="yaw angles in degrees")
    p.add_argument("--pitch", type=float, default=0.0, help="pitch in degrees")
    p.add_argument("--roll", type=float, default=0.0, help="roll in degrees")
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.set_defaults(run=_cmd_render_depth)

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
    p.add_argument("--refine", type=int, default=0,
                   help="dff/sift: re-crop passes from the previous landmarks' box (default 0, the paper's protocol)")
    p.add_argument("--converged-iou", type=float, default=None,
                   help="dff/sift: a face gets no more re-crop passes once its landmarks' box overlaps its start "
                        "box by this IoU (default: every face gets all --refine passes)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="dff: the network's dtype; bfloat16 is ~2x faster (network) on CPUs with AMX/AVX512-BF16")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"],
                   help="dff: where the network runs (default torch; onnxruntime: CPU, float32)")
    p.add_argument("--mirror", action="store_true",
                   help="dff/sift: also align the mirror image and average the two (default off: the paper's protocol)")
    p.add_argument("--no-camera-refit", action="store_true",
                   help="dff/sift: skip the camera refit after the last stage (the paper's cascade as it is)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--per-image", metavar="CSV", default=None, help="write per-face errors to CSV")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_eval)

    p = sub.add_parser("segment", help="random CVT segmentations of the mean face (DFF training targets, Sec. III-B)")
    p.add_argument("--out", required=True, help="output .npz (lookup table count x triangles + metadata)")
    p.add_argument("--count", type=int, default=100, help="number of segmentations (paper: 100)")
    p.add_argument("--patches", type=int, default=500, help="patches per segmentation (paper: 500)")
    p.add_argument("--seed", type=int, default=0, help="segmentation k uses seed + k")
    p.add_argument("--iterations", type=int, default=30, help="Lloyd iterations")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--preview", metavar="PNG", default=None,
                   help="also write segmentation 0 on the frontal mean face (448x448, random colours)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_segment)

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

    train_sub = sub.add_parser("train", help="train the DFF network (dff)").add_subparsers(dest="what", required=True)
    from .align.cli import add_align_parsers

    add_align_parsers(sub)

    from .match.cli import add_match_parser

    add_match_parser(sub)
    try:
        from .nn.cli import add_train_dff_parser  # imports torch
    except ImportError as exc:  # torch is optional for everything but the network
        p = train_sub.add_parser("dff", help="train the DFF network (needs PyTorch)")
        p.set_defaults(run=lambda _args, exc=exc: _missing(f"dffx train dff needs PyTorch: {exc}"))
    else:
        add_train_dff_parser(train_sub)
    p = train_sub.add_parser("cascade", help="learn the descent directions of the alignment cascade (eq. 9-11)")
    p.add_argument("--data", required=True, help="a dffx synth output folder")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--features", default="dff", choices=["dff", "sift"], help="landmark descriptors")
    p.add_argument("--dff", default=None, help="DFF weights: a path or a shipped name (default: the shipped default network)")
    p.add_argument("--train-images", type=int, default=None, help="random training samples (default: all)")
    p.add_argument("--val-images", type=int, default=500, help="held-out samples that choose the regularisers")
    p.add_argument("--boxes", type=int, default=5, help="perturbed initial boxes per training image (paper: 5)")
    p.add_argument("--mirror-augment", action="store_true",
                   help="also train on every training image's mirror image (twice the faces)")
    p.add_argument("--box-shift", type=float, default=None,
                   help="box perturbation: shift up to this fraction of the crop side (default 0.05)")
    p.add_argument("--box-scale", type=float, default=None,
                   help="box perturbation: scale by up to 1 +- this (default 0.1)")
    p.add_argument("--stages", type=int, default=3, help="cascade iterations K (paper: 3)")
    p.add_argument("--landmarks", default="300w", choices=["300w", "ict"],
                   help="landmark convention the cascade regresses: 300w = vertices learned from 300-W's "
                        "annotations (default), ict = ICT-FaceKit's published vertices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_train_cascade)
    p = sub.add_parser("export-onnx", help="write a DFF network as ONNX (ONNX Runtime, TensorRT, ...; needs torch "
                                           "and onnx)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--weights", default=None, help="DFF weights: a shipped name or a .pt file (default: the shipped "
                                                   "default network)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    p.set_defaults(run=_cmd_export_onnx)

    p = sub.add_parser("export-cascade", help="write the face model and a DFF cascade as one file for C++ "
                                              "(dffx::Cascade, csrc/include/dffx/cascade.hpp)")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--cascade", default=None, help="a DFF cascade .npz (default: the shipped one)")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.set_defaults(run=_cmd_export_cascade)

    p = train_sub.add_parser("template", help="add the alignment-confidence template to a cascade file")
    p.add_argument("--cascade", required=True, help="cascade .npz to read")
    p.add_argument("--data", required=True, help="a dffx synth output folder (its train split is used)")
    p.add_argument("--out", default=None, help="output .npz (default: overwrite --cascade)")
    p.add_argument("--images", type=int, default=1000, help="random training faces to average")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.set_defaults(run=_cmd_train_template)

    p = train_sub.add_parser("min-score", help="calibrate the alignment-score threshold of a cascade file on "
                                               "annotated photos (dffx.align.score_calibration)")
    p.add_argument("--cascade", required=True, help="cascade .npz with a template (`dffx train template`)")
    p.add_argument("--photos", required=True,
                   help="300W-style folder of training photos with .pts files (never evaluation data)")
    p.add_argument("--out", default=None, help="output .npz (default: overwrite --cascade)")
    p.add_argument("--every", type=int, default=10, help="use every this many photos (sorted by path)")
    p.add_argument("--offset", type=int, default=5, help="the first photo used")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.set_defaults(run=_cmd_train_min_score)
    return parser


def main(argv=None) -> int:
    """Entry point; returns the process exit code. Errors print one line, exit code 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"dffx {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
