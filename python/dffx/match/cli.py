"""``dffx match``: DFF (and SIFT) matching between two face photos, written as a picture (Sec. IV-A).

``python/dffx/cli.py`` wires it with ``add_match_parser(sub)``. Example::

    dffx match a.jpg b.jpg --out matches.png --weights dff.pt            # Fig. 8: DFF and SIFT rows
    dffx match a.jpg b.jpg --out dense.png --weights dff.pt --dense      # Fig. 9: colour coding
    dffx match a.jpg b.jpg --out sift.png --sift-only                    # SIFT baseline, no network

Framing. Each photo is cut to the canonical 224x224 face crop (:func:`dffx.preprocess.crop_face`,
the network's input framing) around its face box: ``--box-src/--box-dst X0,Y0,X1,Y1`` (landmark-box
convention, image pixels) or the best box of :func:`dffx.detect.detect_faces`. ``--no-crop`` takes
images that already are such crops (e.g. synthesized samples) as they are.

Face mask. Matching runs between face pixels only. By default (``--mask ellipse``) the face region
is an ellipse around the face box inside the crop (:func:`ellipse_face_mask`: it covers the
landmark box plus the forehead and keeps most hair, neck and background out, which a photo
without a segmentation offers no better way to do); ``--mask crop`` uses the whole crop.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..imageio import read_image
from ..preprocess import CROP_SCALE, crop_face

ELLIPSE_SEMI_AXES = (0.55, 0.62)   # of the face box width / height
ELLIPSE_SHIFT_UP = 0.10            # ellipse centre above the box centre, fraction of the box height


def parse_box(text: str) -> np.ndarray:
    """argparse type: ``"X0,Y0,X1,Y1"`` -> float64 (4,) box with positive size."""
    try:
        box = np.array([float(v) for v in text.split(",")], np.float64)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 numbers, got {text!r}") from None
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 with X1 > X0 and Y1 > Y0, got {text!r}")
    return box


def ellipse_face_mask(size: int, box_in_crop=None) -> np.ndarray:
    """Elliptic face mask of a face crop.

    Args:
        size: crop side in pixels.
        box_in_crop: (4,) face box ``x0, y0, x1, y1`` in crop pixels (landmark-box convention);
            None: the box of the canonical framing (a centred square of side
            ``size / CROP_SCALE``, what :func:`dffx.preprocess.crop_face` makes of a square box).

    Returns:
        bool (size, size): the ellipse centred ``ELLIPSE_SHIFT_UP`` box heights above the box
        centre with semi-axes ``ELLIPSE_SEMI_AXES`` times the box width and height (the
        landmark box reaches from the brows to the chin; the ellipse adds the forehead).
    """
    if box_in_crop is None:
        half = size / CROP_SCALE / 2
        c = (size - 1) / 2
        box_in_crop = (c - half, c - half, c + half, c + half)
    x0, y0, x1, y1 = (float(v) for v in box_in_crop)
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - ELLIPSE_SHIFT_UP * h
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    return ((xs - cx) / (ELLIPSE_SEMI_AXES[0] * w)) ** 2 + ((ys - cy) / (ELLIPSE_SEMI_AXES[1] * h)) ** 2 <= 1.0


def face_crop(image: np.ndarray, box=None, *, size: int = 224, mask: str = "ellipse", crop: bool = True,
              name: str = "image") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The canonical face crop of a photo and its face mask (see the module docstring).

    Args:
        image: uint8 (H, W, 3) BGR photo.
        box: (4,) face box in image pixels; None: detect (:func:`dffx.detect.detect_faces`).
        size: crop side in pixels (multiple of 16 for the network).
        mask: "ellipse" (:func:`ellipse_face_mask`) or "crop" (every pixel).
        crop: False takes the image as an already framed crop (box and size ignored; the
            ellipse then assumes the canonical framing).
        name: names the image in errors.

    Returns:
        (crop uint8 (S, S, 3) or the image itself, mask bool, transform float64 (2, 3) image ->
        crop, or None when ``crop`` is False).

    Raises:
        ValueError: no face detected, bad box or mask kind.
    """
    if mask not in ("ellipse", "crop"):
        raise ValueError(f"mask must be 'ellipse' or 'crop', got {mask!r}")
    if not crop:
        h, w = image.shape[:2]
        if mask == "crop":
            return image, np.ones((h, w), bool), None
        if h != w:
            raise ValueError(f"{name}: --no-crop with the ellipse mask needs a square crop, got {w}x{h}; "
                             "use --mask crop")
        return image, ellipse_face_mask(h), None
    if box is None:
        from ..detect import detect_faces

        found = detect_faces(image)
        if len(found) == 0:
            raise ValueError(f"no face detected in {name}; pass a face box (--box-src/--box-dst X0,Y0,X1,Y1)")
        box = found[0, :4]
    out, M = crop_face(image, box, size)
    if mask == "crop":
        return out, np.ones((size, size), bool), M
    b = np.asarray(box, np.float64)[:4]
    corners = np.array([[b[0], b[1], 1.0], [b[2], b[3], 1.0]]) @ M.T
    return out, ellipse_face_mask(size, corners.reshape(-1)), M


def add_match_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``match`` command on the ``dffx`` sub-parsers.

    Args:
        subparsers: the object returned by ``parser.add_subparsers(...)``.

    Returns:
        the new sub-parser; its ``run`` default (:func:`run_match`) returns the exit code
        (0 done, 1 error with a one-line message on stderr).
    """
    p = subparsers.add_parser(
        "match", help="DFF vs SIFT feature matching between two face photos (paper Sec. IV-A, Fig. 8-9)",
        description="Match two face photos with the Deep Face Feature (sparse: SIFT keypoints of the source face "
                    "matched to the target face pixel of smallest descriptor angle, kept below 30 deg; SIFT "
                    "baseline with the 1/1.3 ratio test; dense: every source face pixel, kept below 12 deg) and "
                    "write a side-by-side picture.")
    p.add_argument("src", help="source image")
    p.add_argument("dst", help="target image")
    p.add_argument("--out", required=True, help="picture to write (.png/.jpg)")
    p.add_argument("--dense", action="store_true", help="dense matching, Fig. 9 colour coding (default: sparse)")
    p.add_argument("--weights", default=None, help="DFF weights file (default: the weights shipped with dffx)")
    p.add_argument("--sift-only", action="store_true", help="sparse SIFT baseline only (no network, no weights)")
    p.add_argument("--box-src", type=parse_box, default=None, metavar="X0,Y0,X1,Y1",
                   help="source face box (landmark box, image pixels; default: detected)")
    p.add_argument("--box-dst", type=parse_box, default=None, metavar="X0,Y0,X1,Y1", help="target face box")
    p.add_argument("--no-crop", action="store_true", help="the images already are face crops: use them as they are")
    p.add_argument("--mask", choices=["ellipse", "crop"], default="ellipse",
                   help="face region: an ellipse around the face box (default) or the whole crop")
    p.add_argument("--size", type=int, default=224, help="crop side in pixels (default 224)")
    p.add_argument("--max-angle", type=float, default=None,
                   help="DFF angle threshold in degrees (default: 30 sparse, 12 dense, as in the paper)")
    p.add_argument("--ratio", type=float, default=1 / 1.3, help="SIFT ratio-test threshold (default 1/1.3)")
    p.add_argument("--max-lines", type=int, default=300, help="most lines drawn per sparse row")
    p.add_argument("--device", default=None, help="torch device for the network (default: CUDA if available)")
    p.set_defaults(run=run_match)
    return p


def run_match(args) -> int:
    """Run ``dffx match`` for parsed arguments; returns the exit code (errors: one line, 1)."""
    try:
        return _run(args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"dffx match: error: {exc}", file=sys.stderr)
        return 1


def _run(args) -> int:
    import cv2

    from .dense import DENSE_MAX_ANGLE_DEG, dense_match
    from .sparse import SPARSE_MAX_ANGLE_DEG, sparse_match
    from .visualize import draw_dense, draw_sparse

    if args.size < 16 or args.size % 16:
        raise ValueError(f"--size must be a positive multiple of 16, got {args.size}")
    if args.dense and args.sift_only:
        raise ValueError("--dense needs the DFF network; drop --sift-only")
    src_image, dst_image = read_image(args.src), read_image(args.dst)  # dffx.imageio: pixel limit, one-line errors
    src, src_mask, _ = face_crop(src_image, args.box_src, size=args.size, mask=args.mask, crop=not args.no_crop,
                                 name=args.src)
    dst, dst_mask, _ = face_crop(dst_image, args.box_dst, size=args.size, mask=args.mask, crop=not args.no_crop,
                                 name=args.dst)
    features = (None, None)
    if not args.sift_only:
        from ..nn import DFFExtractor

        extractor = DFFExtractor(args.weights, device=args.device)
        features = (extractor.extract(src)[0], extractor.extract(dst)[0])
    if args.dense:
        limit = DENSE_MAX_ANGLE_DEG if args.max_angle is None else args.max_angle
        m = dense_match(features[0], features[1], src_mask, dst_mask, max_angle_deg=limit)
        picture = draw_dense(src, dst, m, src_mask, dst_mask)
        lines = [f"DFF dense: {len(m)} of {m.n_source} source face pixels matched (angle < {limit:g} deg)"]
    else:
        limit = SPARSE_MAX_ANGLE_DEG if args.max_angle is None else args.max_angle
        res = sparse_match(src, dst, features[0], features[1], src_mask, dst_mask, max_angle_deg=limit,
                           ratio=args.ratio)
        rows = {}
        lines = []
        if "dff" in res:
            rows["DFF"] = res["dff"]
            lines.append(f"DFF sparse: {len(res['dff'])} of {res['dff'].n_source} source keypoints matched "
                         f"(angle < {limit:g} deg)")
        rows["SIFT"] = res["sift"]
        lines.append(f"SIFT sparse: {len(res['sift'])} of {res['sift'].n_source} source keypoints matched "
                     f"(ratio < {args.ratio:.3f})")
        picture = draw_sparse(src, dst, rows, src_mask=src_mask, max_lines=args.max_lines)
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    try:
        written = cv2.imwrite(str(out), picture)
    except cv2.error:
        written = False
    if not written:
        raise OSError(f"could not write {out} (use a .png or .jpg name)")
    for line in lines:
        print(line)
    print(out)
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point (``python -m dffx.match.cli SRC DST --out ...``)."""
    parser = argparse.ArgumentParser(prog="dffx")
    sub = parser.add_subparsers(dest="command", required=True)
    add_match_parser(sub)
    args = parser.parse_args(["match", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())


def add_parsers(sub, train_sub) -> None:
    """Register ``dffx match`` (it has no ``train`` command)."""
    add_match_parser(sub)
