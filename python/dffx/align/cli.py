"""``dffx align`` (photos) and ``dffx track`` (a video): the aligner's command line (paper Sec. III-C).

:func:`add_parsers` registers them on the ``dffx`` command line, with the cascade's commands
(``dffx train cascade``, ``train template``, ``train min-score``, ``export-cascade``). Both take the same aligner
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

from ..imageio import DamagedImageWarning, read_image
from ..nn.config import AUGMENT_FAMILIES, parse_augment
from .options import add_arguments as add_options
from .options import from_args as options_from_args
from .pose_sectors import DEFAULT_SECTOR_YAW

OVERLAY_VIDEO_SUFFIXES = {".avi": "MJPG", ".mp4": "mp4v"}   # dffx track --overlay: file suffix -> codec


def add_aligner_arguments(p: argparse.ArgumentParser) -> None:
    """The :class:`dffx.FaceAligner` options shared by ``dffx align`` and ``dffx track``: the
    cascade's features, the device, the face model, and every setting of
    :class:`~dffx.align.options.AlignOptions`."""
    p.add_argument("--features", default="dff", choices=["dff", "sift"], help="landmark descriptors of the cascade")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--tiny-weights", default=None,
                   help="the tiny-face network for faces --tiny sends to it (default: the shipped one)")
    add_options(p)


def aligner_from_args(args):
    """A :class:`dffx.FaceAligner` from the options of :func:`add_aligner_arguments` (unset ones
    keep the defaults)."""
    from ..model import load_face_model
    from .aligner import FaceAligner

    return FaceAligner(features=args.features, device=args.device, model=load_face_model(args.model),
                       options=options_from_args(args), tiny_weights=args.tiny_weights)


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
                    image = read_image(name, aligner.max_pixels)
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
        record = {"image": str(name), "face_boxes": "given" if box is not None else aligner.detector,
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


def _cmd_train_cascade(args) -> int:
    import time

    from ..model import load_face_model
    from ..model.annotated_landmarks import model_for_convention
    from .cascade import train_cascade
    from .predictor import make_features, synth_split

    model = model_for_convention(load_face_model(args.model), args.landmarks)
    features = make_features(args.features, args.dff)
    start = time.perf_counter()
    # labels at the chosen convention's vertices, from each render's stored camera and shape
    train = synth_split(args.data, "train", limit=args.train_images, seed=args.seed, model=model)
    if args.mirror_augment:
        from .mirror import mirrored_split

        train = mirrored_split(train)
    val = synth_split(args.data, "val", limit=args.val_images, seed=args.seed, model=model)
    if args.photos:  # the set's own source photos join its train and val splits
        from .photo_split import concat_splits, photo_split

        train = concat_splits(train, photo_split(args.data, args.photos, "train", model=model,
                                                 rotations=args.photo_rotations, seed=args.seed))
        val = concat_splits(val, photo_split(args.data, args.photos, "val", model=model))
    if args.augment:
        from .augmented_split import augmented_split

        train = augmented_split(train, args.augment, seed=args.seed)
    settings = {}  # unset flags keep train_cascade's defaults
    if args.box_shift is not None:
        settings["box_shift"] = args.box_shift
    if args.box_scale is not None:
        settings["box_scale"] = args.box_scale
    if args.sector_stages:
        settings.update(sector_stages=args.sector_stages, sector_yaw=args.sector_yaw)
    if args.pose_stages:
        settings["pose_stages"] = args.pose_stages
    cascade = train_cascade(model, features, train, val, stages=args.stages, boxes=args.boxes, seed=args.seed,
                            progress=not args.no_progress, **settings)
    cascade.info.update(data=str(args.data), seconds=round(time.perf_counter() - start, 1),
                        mirror_augment=bool(args.mirror_augment), landmarks=args.landmarks,
                        augment=",".join(parse_augment(args.augment)), photos=args.photos,
                        photo_rotations=args.photo_rotations if args.photos else 0)
    if args.features == "dff":  # bind the directions to their network (dffx.align.predictor.cascade_features)
        from ..nn.integrity import file_sha256
        from ..nn.extractor import is_weights_name

        weights = features.extractor.weights_path
        name = "default" if args.dff is None else args.dff if is_weights_name(args.dff) else None
        cascade.info.update(dff_network=name, dff_sha256=file_sha256(weights),
                            dff_weights=f"dffx/weights/{weights.name}" if name else str(weights))
    path = cascade.save(args.out)
    print(json.dumps(cascade.info, indent=2))
    print(path)
    return 0


def _cmd_train_template(args) -> int:
    from ..model import load_face_model
    from .cascade import Cascade, training_template
    from .predictor import cascade_features, synth_split

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
    from ..data import load_300w
    from ..model import load_face_model
    from .aligner import FaceAligner
    from .cascade import Cascade
    from .score_calibration import calibrate_min_score

    if args.every < 1 or args.offset < 0:
        raise ValueError(f"--every must be >= 1 and --offset >= 0, got {args.every} and {args.offset}")
    samples, _ = load_300w(args.photos)
    samples = samples[args.offset::args.every]
    if not samples:
        raise ValueError(f"{args.photos}: no annotated photos (image + .pts) to calibrate on")
    features = Cascade.load(args.cascade).features  # DFF or SIFT: each cascade file has its own scale
    aligner = FaceAligner(features, cascade=args.cascade, model=load_face_model(args.model), min_score=None)
    calibration = calibrate_min_score(aligner, samples, seed=args.seed)
    calibration.update(photos=str(args.photos), every=args.every, offset=args.offset, seed=args.seed)
    aligner.cascade.info.update(min_score=calibration["min_score"], min_score_calibration=calibration)
    path = aligner.cascade.save(args.out if args.out else args.cascade)
    print(json.dumps(calibration, indent=2))
    print(path)
    return 0


def _cmd_export_cascade(args) -> int:
    from ..model import load_face_model
    from .cascade import Cascade
    from .export import write_cascade_file
    from .predictor import default_cascade_path

    cascade = Cascade.load(args.cascade or default_cascade_path("dff"))
    out = write_cascade_file(args.out, load_face_model(args.model), cascade)
    network = cascade.info.get("dff_network") or cascade.info.get("dff_weights")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); run it on the maps of the DFF network "
          f"{network!r} (dffx export-onnx --weights {network or 'default'})")
    return 0


def add_parsers(sub, train_sub) -> None:
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
    p.add_argument("--photos", default=None,
                   help="also learn from the set's source photos as they are (dffx.align.photo_split): the folder "
                        "the set was made from; its training photos join the training split, its held-out ones "
                        "the validation split")
    p.add_argument("--photo-rotations", type=int, default=0, metavar="N",
                   help="with --photos: also N copies of each training photo turned in its plane by 10-30 "
                        "degrees, labels and camera turned alike (default 0)")
    p.add_argument("--augment", default="",
                   help="degrade the training crops as the network's training does (dffx.align.augmented_split): "
                        f"all, or a comma-separated subset of {','.join(AUGMENT_FAMILIES)} (default: none)")
    p.add_argument("--box-shift", type=float, default=None,
                   help="box perturbation: shift up to this fraction of the crop side (default 0.05)")
    p.add_argument("--box-scale", type=float, default=None,
                   help="box perturbation: scale by up to 1 +- this (default 0.1)")
    p.add_argument("--stages", type=int, default=3, help="cascade iterations K (paper: 3)")
    p.add_argument("--sector-stages", type=int, default=0,
                   help="pose fusion (issue 27): the last N stages learn one set of directions per yaw sector, "
                        "blended by the yaw estimate of the stages before (default 0: none)")
    p.add_argument("--sector-yaw", type=float, nargs="+", default=list(DEFAULT_SECTOR_YAW),
                   help="yaw-sector centres in degrees, increasing (default: %(default)s)")
    p.add_argument("--pose-stages", type=int, default=0,
                   help="pose start (issue 27): N camera-only stages before the --stages, so the cascade starts "
                        "from the mean shape under the estimated head pose (default 0: none)")
    p.add_argument("--landmarks", default="300w", choices=["300w", "ict"],
                   help="landmark convention the cascade regresses: 300w = vertices learned from 300-W's "
                        "annotations (default), ict = ICT-FaceKit's published vertices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="ICT-FaceKit folder or .npz (default: $DFFX_FACE_MODEL)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_train_cascade)

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
