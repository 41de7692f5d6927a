"""``dffx.FaceAligner``: image -> face boxes -> canonical crops -> cascade -> results in image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import as_bgr_image
from ..imageio import DEFAULT_MAX_PIXELS, check_pixels
from ..detect import DEFAULT_DETECTOR, DEFAULT_MIN_FACE_SIZE, DETECTORS, MTCNN_MIN_FACE_SIZE
from ..geometry.camera import project
from ..nn.integrity import check_shipped_file
from .cascade import Cascade
from .predictor import align_in_image, cascade_features, check_converged_iou, default_cascade_path


@dataclass
class FaceAlignment:
    """One aligned face, in the input image's pixels (0-based, x right, y down).

    Attributes:
        box: float64 (4,) face box x0, y0, x1, y1 the kept pass started from: the given or
            detected box, or the previous landmarks' box when a refine pass was kept.
        landmarks: float64 (68, 2) iBUG landmarks.
        visible: bool (68,) depth-buffer visibility of each landmark.
        pose: dict pitch, yaw, roll in degrees (camera convention of ``docs/design.md``); the
            same rotation as a matrix: :attr:`rotation`.
        camera: float64 (6,) weak-perspective w = (s, pitch, yaw, roll, tx, ty) in image pixels.
        identity: float32 (m1,) p_id; expression: float32 (m2,) blendshape weights.
        vertices: float32 (n, 3) the dense face mesh in image pixels (x, y, depth).
        score: alignment confidence in [-1, 1] (:mod:`dffx.align.confidence`): about 0.93 for a
            typical well-aligned face, lower for a poor fit or a box without a face; None when
            the cascade file has no template.
    """

    box: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    pose: dict
    camera: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    vertices: np.ndarray
    score: float | None = None

    @property
    def rotation(self) -> np.ndarray:
        """float64 (3, 3) the head rotation R of eq. 2 (``docs/design.md``): from model space
        (ICT-FaceKit: x to the subject's left, y up, z towards the viewer) to the camera's (x
        right, y up, z towards the viewer), so ``vertices`` = (s (R q)_x + tx, -s (R q)_y + ty,
        s (R q)_z) for each model point q. Unlike ``pose``'s Euler angles it has no gimbal lock
        near profile, where pitch and roll turn the head about nearly one axis."""
        from ..geometry.camera import rotation_matrix

        return rotation_matrix(*self.camera[1:4])

    def to_json(self) -> dict:
        """The JSON record ``dffx align`` writes for this face: box, landmarks, visible, pose
        (pitch, yaw, roll in degrees), rotation (the 3 x 3 matrix of :attr:`rotation`, row-major;
        free of the Euler angles' gimbal lock near profile) and score."""
        record = {"box": [round(float(v), 2) for v in self.box],
                  "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
                  "visible": [bool(v) for v in self.visible],
                  "pose": {k: round(float(v), 2) for k, v in self.pose.items()},
                  "rotation": [[round(float(v), 6) for v in row] for row in self.rotation]}
        if self.score is not None:
            record["score"] = round(self.score, 4)
        return record

    def write_obj(self, path, triangles: np.ndarray):
        """Write the dense face mesh as a Wavefront OBJ file (``dffx align --mesh``).

        The positions are the image-pixel ``vertices`` with y negated, (x, -y, depth): a
        right-handed frame with x right, y up and z towards the camera, in which the mesh is the
        model's shape (eq. 3) scaled, rotated and shifted (eq. 2), so the triangles keep their
        front-facing winding. Seen from +z with y up it lies over the photo.

        Args:
            path: the .obj file to write.
            triangles: int (T, 3) the model's triangles (``FaceAligner.model.triangles``).

        Returns:
            the path written. Raises ValueError for triangles that do not index this mesh.
        """
        from ..model.obj import write_obj

        pose = ", ".join(f"{k} {v:.1f}" for k, v in self.pose.items())
        return write_obj(path, np.asarray(self.vertices, np.float64) * [1.0, -1.0, 1.0], triangles,
                         comment=f"dffx face mesh: x, -y, depth in image pixels; {pose} degrees")


# Re-crop passes after the first run and the box IoU at which a face needs no more of them,
# measured in docs/experiments/2026-12-02-refinement-and-confidence.md; the score under which a detected
# face is dropped is the cascade file's own, calibrated with its template
# (dffx.align.score_calibration).
DEFAULT_REFINE = 1
DEFAULT_CONVERGED_IOU = 0.85
DEFAULT_MIN_SCORE = "cascade"
DEFAULT_MIRROR = False
MIN_BOX_SIDE = 4.0      # px: a given box smaller than this holds no face to align
MIN_BOX_INSIDE = 0.25   # a given box must lie at least this much inside the image (by area)


class FaceAligner:
    """Large-pose face alignment (paper Sec. III-C) with DFF or SIFT landmark features.

    Args:
        features: "dff" (the paper's method) or "sift" (its "Ours (SIFT)" baseline).
        cascade: descent-direction file (default: the shipped ``dffx/weights/cascade_<features>.npz``).
        weights: DFF network weights (default: the network the cascade was trained with,
            :func:`dffx.align.predictor.cascade_features`).
        device: torch device for the DFF network (default: CUDA if available, else CPU).
        backend: where the DFF network runs, "torch" (PyTorch: CPU or CUDA, float32 or
            bfloat16) or "onnxruntime" (ONNX Runtime on the CPU, float32, the shipped
            ``dff_default.onnx``: no PyTorch needed, a 1.3x faster network and a 2x faster
            start on a 2-core CPU, landmarks within 0.1 px of PyTorch's; docs/alignment.md,
            "Latency"). None (default): "torch" when PyTorch is installed, else "onnxruntime".
            Ignored for SIFT.
        precision: the DFF network's dtype, "float32" (default) or "bfloat16": about 2x faster
            network on CPUs with native bfloat16 (AMX, AVX512-BF16), the same accuracy on
            held-out renders and the real samples (docs/experiments/2026-12-03-latency.md); slower on
            other CPUs (:func:`dffx.nn.cpu_has_native_bfloat16` tells). Ignored for SIFT.
        mirror: also align every face in the mirror image and average the two results
            (:mod:`dffx.align.mirror`): 3-8% lower NME in 14 of 15 settings measured, for twice
            the work (docs/experiments/2026-12-03-mirror-averaging.md). Default
            ``DEFAULT_MIRROR``.
        model: a :class:`dffx.FaceModel` (default: ``load_face_model()``, i.e. $DFFX_FACE_MODEL).
        refine: re-crop passes after the first run (:func:`dffx.align.predictor.align_in_image`):
            each starts from the box of the previous landmarks. Each face keeps its last pass
            (DFF) or its best-scoring pass (SIFT), whichever did better on held-out renders
            (:data:`dffx.align.predictor.KEEP_PASS`). Default ``DEFAULT_REFINE``.
        converged_iou: a face gets no further pass once its landmarks' box overlaps the box its
            pass started from by this IoU: the next crop would be nearly the same. None: every
            face gets all ``refine`` passes. Default ``DEFAULT_CONVERGED_IOU``.
        min_score: detected faces whose alignment score is below this are dropped as false
            detections (None: keep all). Faces from boxes the caller gives are always kept.
            Default ``"cascade"``: the threshold calibrated with the cascade file's template
            (:attr:`Cascade.min_score`, 0.82 for the shipped DFF cascade; the score's scale
            differs between networks). Ignored for a cascade file without a template.
        detector: face detector used when no boxes are given, one of
            :data:`dffx.detect.DETECTORS` (default ``"mtcnn"``).
        camera_refit: after the cascade's last stage, re-fit the camera and shape to its landmarks
            (:mod:`dffx.align.camera_refit`): 2-3% lower NME and 4-5% lower head-pose error on
            held-out renders (docs/experiments/2026-12-04-camera-refit.md). Default True; False runs the
            paper's cascade as it is.
        min_face_size: smallest face side, in pixels, the detector looks for (an integer >= 12;
            default ``dffx.detect.DEFAULT_MIN_FACE_SIZE``, 40). Raise it for large photos of
            large faces: detecting in a 12-megapixel photo takes about 1 s at 40 px, 0.4 s at 80.
        max_pixels: largest image (width x height) :meth:`align` accepts (None: no limit);
            default ``dffx.imageio.DEFAULT_MAX_PIXELS``, 100 M: a 20000 x 20000 image took 7.6 GB.

    Raises:
        FileNotFoundError: missing cascade/weights/model files; ValueError: unknown features,
        negative ``refine``, ``converged_iou`` not a number > 0, a ``min_score`` other than a
        finite number, "cascade" or None, an unknown detector, precision or backend, ``min_face_size`` not an integer >= 12, and for
        the onnxruntime backend a precision other than float32 or a device other than the CPU;
        ImportError: the backend's package is not installed.
    """

    def __init__(self, features: str = "dff", cascade=None, weights=None, device=None, model=None,
                 refine: int = DEFAULT_REFINE, converged_iou: float | None = DEFAULT_CONVERGED_IOU,
                 min_score: float | str | None = DEFAULT_MIN_SCORE, detector: str = DEFAULT_DETECTOR,
                 precision: str = "float32", mirror: bool = DEFAULT_MIRROR,
                 min_face_size: int = DEFAULT_MIN_FACE_SIZE, backend: str | None = None, camera_refit: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS):
        from ..model import load_face_model

        if refine < 0:
            raise ValueError(f"refine must be >= 0, got {refine}")
        check_converged_iou(converged_iou)
        if min_score is not None and min_score != "cascade" and not (
                isinstance(min_score, (int, float, np.number)) and np.isfinite(min_score)):
            raise ValueError(f"min_score must be a finite number, 'cascade' or None, got {min_score!r}")
        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
        if isinstance(min_face_size, bool) or not isinstance(min_face_size, (int, np.integer)) \
                or min_face_size < MTCNN_MIN_FACE_SIZE:
            raise ValueError(f"min_face_size must be an integer >= {MTCNN_MIN_FACE_SIZE} (pixels), "
                             f"got {min_face_size!r}")
        self.min_face_size = int(min_face_size)
        self.refine, self.converged_iou = int(refine), converged_iou
        self.min_score, self.detector, self.mirror = min_score, detector, bool(mirror)
        self.camera_refit = bool(camera_refit)
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
                                       or max_pixels < 1):
            raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
        self.max_pixels = max_pixels
        if cascade is None:
            cascade = default_cascade_path(features)
            check_shipped_file(cascade)  # the shipped file: its SHA-256 is in dffx/weights/SHA256SUMS
        self.cascade = Cascade.load(cascade)
        if self.cascade.features != features:
            raise ValueError(f"cascade file was trained with {self.cascade.features!r} features, not {features!r}")
        # the model with the landmarks the cascade regresses (its landmark convention)
        self.model = self.cascade.bind(model if model is not None else load_face_model())
        self.features = cascade_features(self.cascade, weights, device, precision, backend)
        if self.min_score == "cascade":
            self.min_score = self.cascade.min_score

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Face boxes (F, 4) float64 x0, y0, x1, y1 (landmark-box convention), best first, from
        this aligner's detector and ``min_face_size`` (:func:`dffx.detect.detect_faces` with
        the detector's default score threshold). Raises ValueError for a bad image."""
        from ..detect import detect_faces

        return detect_faces(self.checked_image(image), min_size=self.min_face_size, detector=self.detector)[:, :4]

    def align(self, image: np.ndarray, boxes=None, *, camera_refit: bool | None = None) -> list[FaceAlignment]:
        """Align every face of one image.

        Args:
            image: uint8 (H, W, 3) BGR (as cv2.imread gives) or (H, W) grey.
            boxes: optional (F, 4) face boxes x0, y0, x1, y1 (landmark-box convention; one (4,)
                box is one face); when None, faces are found with :meth:`detect` (the
                ``detector`` and ``min_face_size`` given at construction), and those scoring
                below ``min_score`` after alignment are dropped.
            camera_refit: None (default): the aligner's ``camera_refit``; True or False for this
                call (:class:`dffx.FaceTracker` passes False).

        Returns:
            one :class:`FaceAlignment` per face, in box (or detector score) order; an empty list
            when no face is found.

        Raises:
            ValueError: empty image, wrong dtype or shape, malformed boxes (not (F, 4) numbers,
                not finite, x1 <= x0 or y1 <= y0, under ``MIN_BOX_SIDE`` pixels, or mostly
                outside the image; :meth:`checked_boxes`).
        """
        img = self.checked_image(image)
        detected = boxes is None
        if detected:
            boxes = self.detect(img)
        boxes = self.checked_boxes(boxes, img.shape[:2])
        if len(boxes) == 0:
            return []
        refit = self.camera_refit if camera_refit is None else bool(camera_refit)
        result = align_in_image(self.model, self.cascade, self.features, img, boxes, self.refine,
                                self.converged_iou, mirror=self.mirror, camera_refit=refit)
        m1 = self.model.n_identity
        out = []
        for i in range(len(boxes)):
            cam, p = result.camera[i], result.params[i]
            vertices = project(self.model.shape(p[:m1], p[m1:]), cam)
            pose = dict(zip(("pitch", "yaw", "roll"), np.degrees(cam[1:4])))
            out.append(FaceAlignment(box=result.boxes[i], landmarks=result.landmarks[i], visible=result.visible[i],
                                     pose=pose, camera=cam, identity=p[:m1], expression=p[m1:], vertices=vertices,
                                     score=None if result.score is None else float(result.score[i])))
        if detected and self.min_score is not None:
            out = [face for face in out if face.score is None or face.score >= self.min_score]
        return out

    @staticmethod
    def checked_boxes(boxes, image_shape=None) -> np.ndarray:
        """Face boxes as float64 (F, 4) x0, y0, x1, y1 (one box (4,) becomes (1, 4)).

        Args:
            boxes: (F, 4) or (4,) numbers, pixels.
            image_shape: (H, W) of the image the boxes belong to; when given, a box must have
                sides of at least ``MIN_BOX_SIDE`` pixels and at least ``MIN_BOX_INSIDE`` of its
                area inside the image (a face there is something to align).

        Raises:
            ValueError: not numbers, not (F, 4) or (4,), NaN or inf, a box whose x1 <= x0
                or y1 <= y0, too small or mostly outside the image (the message names the box).
        """
        try:
            array = np.asarray(boxes, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"boxes must be numbers x0, y0, x1, y1, got {boxes!r:.80}") from err
        if array.size == 0:
            return np.zeros((0, 4))
        array = array[None] if array.shape == (4,) else array
        if array.ndim != 2 or array.shape[1] != 4:
            raise ValueError(f"boxes must have shape (F, 4) (x0, y0, x1, y1), got {array.shape}")
        bad = np.flatnonzero(~(np.isfinite(array).all(axis=1) & (array[:, 2] > array[:, 0])
                               & (array[:, 3] > array[:, 1])))
        if len(bad):
            raise ValueError(f"box {bad[0]} must be finite with x1 > x0 and y1 > y0, got {array[bad[0]].tolist()}")
        if image_shape is None:
            return array
        sides = array[:, 2:] - array[:, :2]
        small = np.flatnonzero(sides.min(axis=1) < MIN_BOX_SIDE)
        if len(small):
            raise ValueError(f"box {small[0]} is {sides[small[0], 0]:.3g} x {sides[small[0], 1]:.3g} px; a face "
                             f"box needs sides of at least {MIN_BOX_SIDE} px")
        inside = box_inside_fraction(array, image_shape)
        outside = np.flatnonzero(inside < MIN_BOX_INSIDE)
        if len(outside):
            h, w = image_shape
            raise ValueError(f"box {outside[0]} {array[outside[0]].tolist()} lies {100 * inside[outside[0]]:.0f}% "
                             f"inside the {w} x {h} image; at least {100 * MIN_BOX_INSIDE:.0f}% must be")
        return array

    def checked_image(self, image) -> np.ndarray:
        """uint8 (H, W, 3) BGR from a BGR or (H, W) grey uint8 image
        (:func:`dffx._validate.as_bgr_image`). Raises ValueError: empty, another dtype or shape,
        more than ``max_pixels`` pixels."""
        img = as_bgr_image(image)
        check_pixels(img.shape[1], img.shape[0], self.max_pixels)
        return img

    def align_many(self, images, boxes=None) -> list[list[FaceAlignment]]:
        """:meth:`align` over a list of images (``boxes``: None, or one entry per image: an
        (F, 4) array, or None to detect that image's faces). Each image is aligned on its own:
        on a CPU a batch of faces gains under 10% per face over one face at a time (the faces of
        one image are aligned together). Raises ValueError when ``boxes`` and ``images`` differ
        in length, and as :meth:`align` does."""
        images = list(images)
        boxes = [None] * len(images) if boxes is None else list(boxes)
        if len(boxes) != len(images):
            raise ValueError(f"boxes must hold one entry per image: {len(boxes)} for {len(images)} images")
        return [self.align(im, b) for im, b in zip(images, boxes)]


def box_inside_fraction(boxes: np.ndarray, image_shape) -> np.ndarray:
    """float64 (F,): the share of each box's area (boxes (F, 4) x0, y0, x1, y1 with x1 > x0,
    y1 > y0) that lies inside an image of ``image_shape`` (H, W)."""
    h, w = image_shape[:2]
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    inside = (np.clip(b[:, 2], 0, w) - np.clip(b[:, 0], 0, w)) * (np.clip(b[:, 3], 0, h) - np.clip(b[:, 1], 0, h))
    return inside / ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))


def boxes_fit_image(boxes: np.ndarray, image_shape) -> np.ndarray:
    """bool (F,): which boxes (F, 4) :meth:`FaceAligner.checked_boxes` accepts for an image of
    ``image_shape``: sides of at least ``MIN_BOX_SIDE`` px, at least ``MIN_BOX_INSIDE`` inside."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    big = (b[:, 2:] - b[:, :2]).min(axis=1) >= MIN_BOX_SIDE
    return big & (box_inside_fraction(b, image_shape) >= MIN_BOX_INSIDE)


def draw_alignment(image: np.ndarray, faces: list[FaceAlignment]) -> np.ndarray:
    """Overlay: visible landmarks as filled green dots, hidden ones as red rings, head-pose axes."""
    import cv2

    from ..geometry.camera import rotation_matrix

    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    for face in faces:
        r = max(1, int(round((face.box[2] - face.box[0]) / 80)))
        for (x, y), vis in zip(face.landmarks, face.visible):
            c = (int(round(x)), int(round(y)))
            if vis:
                cv2.circle(out, c, r, (0, 220, 0), -1, cv2.LINE_AA)
            else:
                cv2.circle(out, c, r, (0, 0, 255), 1, cv2.LINE_AA)
        R = rotation_matrix(*face.camera[1:4])
        origin = face.landmarks[30]  # nose tip
        length = 0.5 * (face.box[2] - face.box[0])
        for axis, colour in zip(np.eye(3), ((0, 0, 255), (0, 255, 0), (255, 0, 0))):  # x red, y green, z blue
            d = (R @ axis)[:2] * np.array([1.0, -1.0]) * length
            cv2.arrowedLine(out, tuple(int(v) for v in origin), tuple(int(v) for v in origin + d), colour, 2,
                            cv2.LINE_AA, tipLength=0.15)
    return out
