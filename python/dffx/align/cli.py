"""``dffx align`` (photos) and ``dffx track`` (a video): the aligner's command line (paper Sec. III-C).

``python/dffx/cli.py`` wires them with ``add_align_parsers(sub)``. Both take the same aligner
options (features, detector, device, precision, re-crop passes, score threshold, face model)::

    dffx align photo.jpg --out aligned/                    # aligned/photo.json + photo_overlay.png
    dffx align photo.jpg --out aligned/ --mesh             # + aligned/photo_face0.obj, one per face
    dffx track clip.mp4 --out clip.jsonl --overlay clip_overlay.avi

Errors: a photo that is missing or not an image gives a one-line error and exit code 1 while the
other photos are still processed; a video that cannot be read gives a one-line error and exit
code 1. A photo cut short (a JPEG without its end marker) is aligned with a one-line warning, and
a video that ends before the frame count its header announces gets a warning line after its
frames; neither changes the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from ..detect import DEFAULT_DETECTOR, DETECTORS
from ..imageio import DEFAULT_MAX_PIXELS, DamagedImageWarning, read_image

OVERLAY_VIDEO_SUFFIXES = {".avi": "MJPG", ".mp4": "mp4v"}   # dffx track --overlay: file suffix -> codec


def add_aligner_arguments(p: argparse.ArgumentParser) -> None:
    """The :class:`dffx.FaceAligner` options shared by ``dffx align`` and ``dffx track``."""
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS,
                   help=f"face detector when no --box is given (default: {DEFAULT_DETECTOR})")
    p.add_argument("--min-face-size", type=int, default=None, metavar="PX",
                   help="smallest face side the detector looks for, pixels (default: FaceAligner's, 40; "
                        "raise it for large photos: far faster)")
    p.add_argument("--features", default="dff", choices=["dff", "sift"], help="landmark descriptors of the cascade")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--backend", default=None, choices=["torch", "onnxruntime"],
                   help="dff: where the network runs (default: torch when installed, else onnxruntime; "
                        "onnxruntime: CPU, float32, a faster network and start than torch's there)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="dff: the network's dtype; bfloat16 is ~2x faster (network) on CPUs with AMX/AVX512-BF16")
    p.add_argument("--refine", type=int, default=None,
                   help="re-crop passes from the previous landmarks' box (default: FaceAligner's, 1)")
    p.add_argument("--converged-iou", type=float, default=None,
                   help="a face gets no more re-crop passes once its landmarks' box overlaps the box its pass "
                        "started from by this IoU (default: FaceAligner's, 0.85; above 1: every face gets all)")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop detected faces whose alignment score is below this (default: the threshold "
                        "calibrated with the cascade file, 0.80 for the shipped one; negative: keep all)")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                   help="also align each face in the mirror image and average the two (default: FaceAligner's)")
    p.add_argument("--camera-refit", action=argparse.BooleanOptionalAction, default=None,
                   help="re-fit camera and shape to the landmarks after the last stage (default: FaceAligner's, on; "
                        "the tracker's frames run without it)")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse images of more than N pixels, checked from the file header before decoding "
                        f"(default {DEFAULT_MAX_PIXELS:,}; 0 = no limit)")


def aligner_from_args(args):
    """A :class:`dffx.FaceAligner` from the options of :func:`add_aligner_arguments` (unset ones
    keep the aligner's defaults)."""
    from ..model import load_face_model
    from .aligner import FaceAligner

    options = {}
    if args.refine is not None:
        options["refine"] = args.refine
    if args.converged_iou is not None:
        options["converged_iou"] = args.converged_iou
    if args.min_score is not None:
        options["min_score"] = None if args.min_score < 0 else args.min_score
    if args.mirror is not None:
        options["mirror"] = args.mirror
    if args.camera_refit is not None:
        options["camera_refit"] = args.camera_refit
    if args.min_face_size is not None:
        options["min_face_size"] = args.min_face_size
    options["max_pixels"] = args.max_pixels or None
    return FaceAligner(features=args.features, device=args.device, model=load_face_model(args.model),
                       detector=args.detector, precision=args.precision, backend=args.backend, **options)


def _cmd_align(args) -> int:
    import cv2

    from .aligner import draw_alignment

    box = None
    if args.box:
        box = np.array([[float(v) for v in args.box.split(",")]])
        if box.shape != (1, 4):
            raise ValueError(f"--box must be X0,Y0,X1,Y1, got {args.box!r}")
    aligner = aligner_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    written = {}  # output stem -> the input that wrote it
    for name in expand_image_arguments(args.images):
        image, unreadable = None, None
        if Path(name).is_file():
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DamagedImageWarning)
                    image = read_image(name, args.max_pixels or None)
                for warning in caught:  # decoded in part: said on one line, aligned all the same
                    print(f"dffx align: warning: {warning.message}", file=sys.stderr)
            except (OSError, ValueError) as exc:  # not an image, damaged, over the pixel limit
                unreadable = str(exc).removeprefix(f"{name}: ")
        stem = Path(name).stem
        problem = ("no such file" if not Path(name).exists() else
                   "no image files in this folder" if Path(name).is_dir() else
                   unreadable if unreadable else
                   f"same name as {written[stem]}, whose results it would overwrite" if stem in written else None)
        if problem:
            print(f"dffx align: error: {name}: {problem}", file=sys.stderr)
            failed += 1
            continue
        written[stem] = name
        faces = aligner.align(image, box)
        record = {"image": str(name), "face_boxes": "given" if box is not None else args.detector,
                  "faces": [f.to_json() for f in faces]}
        if args.mesh:
            for i, (face, face_record) in enumerate(zip(faces, record["faces"])):
                face_record["mesh"] = face.write_obj(out / f"{stem}_face{i}.obj", aligner.model.triangles).name
        (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
        if not cv2.imwrite(str(out / f"{stem}_overlay.png"), draw_alignment(image, faces)):
            raise OSError(f"could not write {out / (stem + '_overlay.png')}")
        print(f"{name}: {len(faces)} face(s)" + ("" if faces else " (no face found)"))
    return 1 if failed else 0


# Extensions of the files a folder argument of ``dffx align`` contributes (what cv2.imread reads).
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".jp2", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def expand_image_arguments(names: list[str]) -> list[str]:
    """``dffx align``'s arguments with each folder replaced by its image files (by extension,
    sorted, not recursive); a folder without any stays as it is, so that it gets an error line."""
    out = []
    for name in names:
        path = Path(name)
        found = sorted(str(f) for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS) \
            if path.is_dir() else []
        out.extend(found or [name])
    return out


def _cmd_track(args) -> int:
    import cv2

    from .aligner import draw_alignment
    from .tracker import FaceTracker

    if not Path(args.video).is_file():
        raise OSError(f"{args.video}: no such file")
    if args.overlay and Path(args.overlay).suffix.lower() not in OVERLAY_VIDEO_SUFFIXES:
        # OpenCV would write a .png "video" as one image and say so only as a warning
        raise ValueError(f"--overlay {args.overlay}: not a video file name (use {' or '.join(OVERLAY_VIDEO_SUFFIXES)})")
    video = cv2.VideoCapture(args.video)
    ok, frame = video.read() if video.isOpened() else (False, None)
    if not ok:
        raise ValueError(f"{args.video}: not a video OpenCV can read")
    tracker = FaceTracker(aligner_from_args(args), detect_every=args.detect_every or None)
    writer = None
    if args.overlay:
        fourcc = OVERLAY_VIDEO_SUFFIXES[Path(args.overlay).suffix.lower()]
        fps = video.get(cv2.CAP_PROP_FPS) or 25.0
        writer = cv2.VideoWriter(args.overlay, cv2.VideoWriter_fourcc(*fourcc), fps, frame.shape[1::-1])
        if not writer.isOpened():
            raise OSError(f"could not write {args.overlay} (use .avi or .mp4)")
    frames = faces_seen = 0
    with open(args.out, "w") as out:
        while ok:
            tracked = tracker.update(frame)
            out.write(json.dumps({"frame": frames, "faces": [t.to_json() for t in tracked]}) + "\n")
            if writer is not None:
                writer.write(draw_alignment(frame, [t.face for t in tracked]))
            frames, faces_seen = frames + 1, faces_seen + len(tracked)
            ok, frame = video.read()
    if writer is not None:
        writer.release()
    announced = int(video.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if announced > frames:  # decoding stopped early: the file is cut short or damaged
        print(f"dffx track: warning: {args.video}: read {frames} of the {announced} frames its header announces "
              "(cut short or damaged)", file=sys.stderr)
    print(f"{args.video}: {frames} frame(s), {faces_seen} face(s) in all, {tracker.detector_runs} detector run(s)")
    return 0


def add_align_parsers(sub) -> None:
    """Add ``align`` and ``track`` to the ``dffx`` subcommands."""
    p = sub.add_parser("align", help="68 landmarks, visibility and head pose of every face in photos (Sec. III-C)")
    p.add_argument("images", nargs="+", help="image files, or folders (their image files, not recursive)")
    p.add_argument("--out", required=True, help="output folder: NAME.json and NAME_overlay.png per image")
    p.add_argument("--box", default=None, help="face box X0,Y0,X1,Y1 (default: detect faces)")
    p.add_argument("--mesh", action="store_true",
                   help="also write each face's dense 3D mesh as NAME_face<i>.obj (x, -y, depth in image pixels; "
                        "about 0.5 MB a face)")
    add_aligner_arguments(p)
    p.set_defaults(run=_cmd_align)

    p = sub.add_parser("track", help="the same for every frame of a video, each face starting from its previous "
                                     "landmarks (dffx.FaceTracker)")
    p.add_argument("video", help="a video file OpenCV can read")
    p.add_argument("--out", required=True,
                   help="JSON lines, one per frame: {\"frame\": i, \"faces\": [{\"track_id\": .., \"box\": .., "
                        "\"landmarks\": .., \"visible\": .., \"pose\": .., \"score\": ..}]}")
    p.add_argument("--overlay", default=None, help="also write the frames with the landmarks drawn (.avi or .mp4)")
    p.add_argument("--detect-every", type=int, default=30,
                   help="run the detector every N frames to find faces that entered (default 30; 0: only when "
                        "no face is tracked or a track weakens)")
    add_aligner_arguments(p)
    p.set_defaults(run=_cmd_track)
