"""``dffx segment``: random CVT segmentations of the mean face."""

from __future__ import annotations

import numpy as np


def _cmd_segment(args) -> int:
    import time

    from ..model import load_face_model
    from ..segment import area_spread, label_map, random_segmentations, save_segmentations

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

        from ..geometry import project
        from ..ops import rasterize
        from ..render import frame_camera

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


def add_parsers(sub, train_sub) -> None:
    """Register ``dffx segment`` (the ``add_parsers`` of :mod:`dffx.cli`)."""
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
