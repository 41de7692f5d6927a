"""Every setting of an alignment, declared, documented and validated once (:class:`AlignOptions`).

:class:`dffx.FaceAligner` and :class:`dffx.FaceTracker` (through its aligner) take their settings
from it, ``dffx eval``'s cascade methods too (with the paper's protocol as their defaults:
:data:`EVAL_DEFAULTS`), and the command-line flags of ``dffx align``, ``dffx track`` and
``dffx eval`` are generated from its fields (:func:`add_arguments`, :func:`from_args`). A new
setting is a new field here (with its flag's help), its use, and its test.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields

import numpy as np

from ..detect import DEFAULT_DETECTOR, DETECTORS, MTCNN_MIN_FACE_SIZE
from ..imageio import DEFAULT_MAX_PIXELS
from ..tiny.path import TINY_MAX_FACE_SIZE, TINY_METHODS, TINY_MODES, TINY_NETWORK_MAX_FACE_SIZE

PRECISIONS = ("float32", "bfloat16")
# Where the DFF network runs: PyTorch (CPU or CUDA, float32 or bfloat16) or ONNX Runtime (CPU,
# float32, the shipped dff_default.onnx; no PyTorch needed). docs/experiments/2026-12-03-latency.md.
BACKENDS = ("torch", "onnxruntime")


def check_converged_iou(converged_iou) -> None:
    """Raise ValueError unless ``converged_iou`` is None or a number > 0 (above 1 no face converges)."""
    if converged_iou is not None and not (isinstance(converged_iou, (int, float, np.number)) and converged_iou > 0):
        raise ValueError(f"converged_iou must be a number > 0 or None, got {converged_iou!r}")


def _pixels_or_auto(text: str) -> int | str:
    """``--min-face-size``'s value: "auto" or an integer (validated by AlignOptions)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer number of pixels or 'auto', got {text!r}") from None


def _flag(help_text: str, none: str = "none", **argparse_options) -> dict:
    """A field's flag: its help, what None means for it, and its argparse options."""
    return {"help": help_text, "none": none, "argparse": argparse_options}


@dataclass(frozen=True)
class AlignOptions:
    """Settings of :class:`dffx.FaceAligner` (and of ``dffx eval``'s dff/sift methods).

    Attributes:
        refine: re-crop passes after the first run (int >= 0;
            :func:`dffx.align.predictor.align_in_image`): each starts from the box of the previous
            pass's 68 landmarks, the box convention the cascade was trained on.
        converged_iou: a face gets no further pass once its landmarks' box overlaps the box its
            pass started from by this IoU (a number > 0; above 1 none converges); None: every
            face gets all ``refine`` passes.
        min_score: detected faces whose alignment score is below this are dropped (a finite
            number; None keeps all; "cascade": the threshold calibrated with the cascade file,
            :attr:`dffx.align.Cascade.min_score`, 0.81 for the shipped DFF cascade). Faces from
            boxes the caller gives are always kept.
        detector: face detector when no boxes are given, one of :data:`dffx.detect.DETECTORS`.
        precision: the DFF network's dtype, "float32" or "bfloat16" (about 2x faster on CPUs with
            AMX or AVX512-BF16, the same accuracy; slower on other CPUs).
        mirror: also align every face in the mirror image and average the two results
            (:mod:`dffx.align.mirror`): 3-8 % lower NME in most settings, twice the work.
        min_face_size: smallest face side the detector looks for, pixels (an int >= 12), or
            "auto": 1/25 of the image's shorter side, at least 24 px
            (:func:`dffx.detect.auto_min_face_size`).
        backend: where the DFF network runs: "torch", "onnxruntime" (CPU, float32, the shipped
            ONNX file; no PyTorch needed) or None (torch when installed, else onnxruntime).
        camera_refit: after the cascade's last stage, re-fit the camera and shape to the
            landmarks (:mod:`dffx.align.camera_refit`); False runs the paper's cascade as it is.
        max_pixels: largest image (width x height) accepted, an int >= 1 or None (no limit).
        tiny: which faces go through the tiny-face network first (:mod:`dffx.align.tiny_route`):
            "auto" (boxes whose longer side is under :data:`dffx.tiny.path.TINY_MAX_FACE_SIZE`
            pixels), "always" or "never".
        tiny_method: how the tiny path aligns a face: "sr-cascade" (the DFF cascade on the
            joint network's super-resolved face; measured better than the cascade on the
            upsampled face below 20 px), "network" (the landmark-only network's own landmarks and
            the cascade's 3DMM fit to them: faster, score None) or "auto" (the network below
            :data:`dffx.tiny.path.TINY_NETWORK_MAX_FACE_SIZE` px, where it is the more accurate,
            sr-cascade above; detected faces take sr-cascade while ``min_score`` is set, so
            that a false detection can be dropped by its score).

    Raises:
        ValueError: any setting out of its range, naming it.
    """

    # refine and converged_iou were measured in docs/experiments/2026-12-02-refinement-and-confidence.md;
    # min_score is each cascade file's own, calibrated with its template (dffx.align.score_calibration)
    refine: int = field(default=1, metadata=_flag(
        "re-crop passes from the previous landmarks' box", type=int))
    converged_iou: float | None = field(default=0.85, metadata=_flag(
        "a face gets no more re-crop passes once its landmarks' box overlaps the box its pass started "
        "from by this IoU (above 1: every face gets all)", none="every face gets all passes", type=float))
    min_score: float | str | None = field(default="cascade", metadata=_flag(
        "drop detected faces whose alignment score is below this (negative: keep all)", none="keep all",
        type=float))
    detector: str = field(default=DEFAULT_DETECTOR, metadata=_flag(
        "face detector when no --box is given", choices=DETECTORS))
    precision: str = field(default="float32", metadata=_flag(
        "dff: the network's dtype; bfloat16 is ~2x faster (network) on CPUs with AMX/AVX512-BF16",
        choices=PRECISIONS))
    mirror: bool = field(default=False, metadata=_flag(
        "also align each face in the mirror image and average the two", action=argparse.BooleanOptionalAction))
    min_face_size: int | str = field(default="auto", metadata=_flag(
        "smallest face side the detector looks for, pixels, or auto: 1/25 of the image's shorter side, "
        "at least 24 (a fixed size costs more on large photos the smaller it is)", type=_pixels_or_auto,
        metavar="PX|auto"))
    backend: str | None = field(default=None, metadata=_flag(
        "dff: where the network runs (torch, or onnxruntime: CPU, float32)",
        none="torch when installed, else onnxruntime", choices=BACKENDS))
    camera_refit: bool = field(default=True, metadata=_flag(
        "re-fit camera and shape to the landmarks after the last stage", action=argparse.BooleanOptionalAction))
    max_pixels: int | None = field(default=DEFAULT_MAX_PIXELS, metadata=_flag(
        "refuse images of more than N pixels, checked from the file header before decoding (0: no limit)",
        none="no limit", type=int, metavar="N"))
    tiny: str = field(default="auto", metadata=_flag(
        "faces that go through the tiny-face network (joint super-resolution and landmarks) first: "
        f"auto (boxes under {TINY_MAX_FACE_SIZE:g} px), always or never", choices=TINY_MODES))
    tiny_method: str = field(default="auto", metadata=_flag(
        "how the tiny path aligns: sr-cascade (the DFF cascade on the joint network's super-resolved face), "
        "network (the landmark-only network's landmarks and the 3DMM fitted to them) or auto (network for "
        f"boxes under {TINY_NETWORK_MAX_FACE_SIZE:g} px, sr-cascade above)", choices=TINY_METHODS))

    def __post_init__(self):
        def integer(value) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        if not integer(self.refine) or self.refine < 0:
            raise ValueError(f"refine must be >= 0 (an integer), got {self.refine!r}")
        check_converged_iou(self.converged_iou)
        if self.min_score is not None and not isinstance(self.min_score, str) and not (
                isinstance(self.min_score, (int, float, np.number)) and np.isfinite(self.min_score)):
            raise ValueError(f"min_score must be a finite number, 'cascade' or None, got {self.min_score!r}")
        if isinstance(self.min_score, str) and self.min_score != "cascade":
            raise ValueError(f"min_score must be a finite number, 'cascade' or None, got {self.min_score!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.min_face_size != "auto" and (not integer(self.min_face_size)
                                             or self.min_face_size < MTCNN_MIN_FACE_SIZE):
            raise ValueError(f"min_face_size must be an integer >= {MTCNN_MIN_FACE_SIZE} (pixels) or 'auto', "
                             f"got {self.min_face_size!r}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {self.backend!r}")
        if self.max_pixels is not None and (not integer(self.max_pixels) or self.max_pixels < 1):
            raise ValueError(f"max_pixels must be a positive integer or None, got {self.max_pixels!r}")
        if self.tiny not in TINY_MODES:
            raise ValueError(f"tiny must be one of {TINY_MODES}, got {self.tiny!r}")
        if self.tiny_method not in TINY_METHODS:
            raise ValueError(f"tiny_method must be one of {TINY_METHODS}, got {self.tiny_method!r}")
        for name in ("mirror", "camera_refit"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def replace(self, **changes) -> AlignOptions:
        """A copy with ``changes`` (validated); ValueError names a setting that does not exist."""
        unknown = sorted(set(changes) - set(NAMES))
        if unknown:
            raise ValueError(f"unknown alignment setting(s) {', '.join(unknown)}; the settings are {', '.join(NAMES)}")
        return dataclasses.replace(self, **changes)


NAMES = tuple(f.name for f in fields(AlignOptions))

#: ``dffx eval``'s dff/sift methods: the paper's protocol (one pass from the given box), the
#: PyTorch network; the settings about detection do not apply there.
EVAL_DEFAULTS = AlignOptions(refine=0, converged_iou=None, backend="torch")
EVAL_SETTINGS = ("refine", "converged_iou", "precision", "mirror", "backend", "camera_refit", "tiny",
                 "tiny_method")


def add_arguments(parser: argparse.ArgumentParser, names=NAMES, defaults: AlignOptions = AlignOptions()) -> None:
    """Add a ``--flag`` for each setting in ``names`` (``--refine``, ``--converged-iou``, ...; the
    two booleans as ``--mirror/--no-mirror`` and ``--camera-refit/--no-camera-refit``). Unset
    flags parse as None and keep ``defaults`` (:func:`from_args`); each help names its default."""
    by_name = {f.name: f for f in fields(AlignOptions)}
    for name in names:
        spec = by_name[name].metadata
        default = getattr(defaults, name)
        shown = spec["none"] if default is None else "the threshold calibrated with the cascade file" \
            if default == "cascade" else ("on" if default else "off") if isinstance(default, bool) else default
        parser.add_argument("--" + name.replace("_", "-"), default=None, dest=name,
                            help=f"{spec['help']} (default: {shown})", **spec["argparse"])


def from_args(args: argparse.Namespace, defaults: AlignOptions = AlignOptions()) -> AlignOptions:
    """The settings the flags of :func:`add_arguments` gave, over ``defaults``. On the command line
    a negative ``--min-score`` keeps every face (None) and ``--max-pixels 0`` removes the limit."""
    given = {name: getattr(args, name) for name in NAMES if getattr(args, name, None) is not None}
    if "min_score" in given and given["min_score"] < 0:
        given["min_score"] = None
    if given.get("max_pixels") == 0:
        given["max_pixels"] = None
    return defaults.replace(**given)
