"""``dffx.FaceAligner``: image -> face boxes -> canonical crops -> cascade -> results in image pixels."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .._validate import as_bgr_image
from ..imageio import check_pixels
from ..geometry.camera import project
from ..nn.integrity import check_shipped_file
from .cascade import Cascade
from .options import NAMES as OPTION_NAMES
from .options import AlignOptions
from .predictor import cascade_features, default_cascade_path
from .tiny_route import TinyRoute, align_routed


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
        vertices: float32 (n, 3) the dense face mesh in image pixels (x, y, depth), computed from
            ``model``, ``identity``, ``expression`` and ``camera`` when first read (eq. 3 and 2;
            about 3 ms a face on a 2-core CPU, which a caller that reads only landmarks and pose
            does not pay) and kept.
        score: alignment confidence in [-1, 1] (:mod:`dffx.align.confidence`): about 0.93 for a
            typical well-aligned face, lower for a poor fit or a box without a face; None when
            the cascade file has no template.
        model: the :class:`dffx.FaceModel` of the mesh.
    """

    box: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    pose: dict
    camera: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    score: float | None = None
    model: object = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def vertices(self) -> np.ndarray:
        """float32 (n, 3) the dense face mesh in image pixels (see the class docstring). Raises
        ValueError when the face has no model to compute it from."""
        if self.model is None:
            raise ValueError("this FaceAlignment has no face model to compute its mesh from")
        return project(self.model.shape(self.identity, self.expression), self.camera)

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


MIN_BOX_SIDE = 4.0      # px: a given box smaller than this holds no face to align
MIN_BOX_INSIDE = 0.25   # a given box must lie at least this much inside the image (by area)


class FaceAligner:
    """Large-pose face alignment (paper Sec. III-C) with DFF or SIFT landmark features.

    Args:
        features: "dff" (the paper's method) or "sift" (its "Ours (SIFT)" baseline).
        cascade: descent-direction file (default: the shipped ``dffx/weights/cascade_<features>.npz``,
            checked against ``dffx/weights/SHA256SUMS``).
        weights: DFF network weights (default: the network the cascade was trained with,
            :func:`dffx.align.predictor.cascade_features`).
        device: torch device for the DFF network (default: CUDA if available, else CPU).
        model: a :class:`dffx.FaceModel` (default: ``load_face_model()``, i.e. $DFFX_FACE_MODEL).
        options: an :class:`~dffx.align.options.AlignOptions` (default: its defaults), where every
            setting is documented: ``refine``, ``converged_iou``, ``min_score``, ``detector``,
            ``precision``, ``mirror``, ``min_face_size``, ``backend``, ``camera_refit``,
            ``max_pixels``, ``tiny``, ``tiny_method``.
        tiny_weights: one tiny-face network for the faces ``tiny`` sends to it (default: the
            shipped ``dffx/weights/tiny_joint.pt`` to super-resolve and
            ``dffx/weights/tiny_landmarks.pt`` for its own landmarks; each loaded when the first
            face that needs it comes).
        **settings: any of those settings, over ``options`` (``FaceAligner(refine=0)``). They
            read as attributes too (``aligner.refine``), and setting one validates it.

    Raises:
        FileNotFoundError: missing cascade/weights/model files; ValueError: unknown features, an
        unknown or out-of-range setting (:class:`~dffx.align.options.AlignOptions`), a damaged
        shipped file, and for the onnxruntime backend a precision other than float32 or a
        device other than the CPU; ImportError: the backend's package is not installed.
    """

    def __init__(self, features: str = "dff", cascade=None, weights=None, device=None, model=None,
                 options: AlignOptions | None = None, tiny_weights=None, **settings):
        from ..model import load_face_model

        options = (options if options is not None else AlignOptions()).replace(**settings)
        object.__setattr__(self, "options", options)
        if cascade is None:
            cascade = default_cascade_path(features)
            check_shipped_file(cascade)  # the shipped file: its SHA-256 is in dffx/weights/SHA256SUMS
        self.cascade = Cascade.load(cascade)
        if self.cascade.features != features:
            raise ValueError(f"cascade file was trained with {self.cascade.features!r} features, not {features!r}")
        # the model with the landmarks the cascade regresses (its landmark convention)
        self.model = self.cascade.bind(model if model is not None else load_face_model())
        self.features = cascade_features(self.cascade, weights, device, options.precision, options.backend)
        self.tiny_route = TinyRoute(tiny_weights, device)

    def __getattr__(self, name: str):
        """The settings read as attributes (``aligner.refine``); ``min_score`` as the number it
        means ("cascade": the cascade file's calibrated threshold)."""
        options = self.__dict__.get("options")
        if options is None or name not in OPTION_NAMES:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = getattr(options, name)
        return self.cascade.min_score if name == "min_score" and value == "cascade" else value

    def __setattr__(self, name: str, value):
        if name in OPTION_NAMES:  # a setting: validated, kept in the options
            object.__setattr__(self, "options", self.options.replace(**{name: value}))
        else:
            object.__setattr__(self, name, value)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Face boxes (F, 4) float64 x0, y0, x1, y1 (landmark-box convention), best first, from
        this aligner's detector and ``min_face_size`` ("auto": :func:`dffx.detect.auto_min_face_size`
        of this image; :func:`dffx.detect.detect_faces` with
        the detector's default score threshold). Raises ValueError for a bad image."""
        from ..detect import auto_min_face_size, detect_faces

        image = self.checked_image(image)
        size = self.min_face_size
        if size == "auto":
            size = auto_min_face_size(*image.shape[:2])
        return detect_faces(image, min_size=size, detector=self.detector)[:, :4]

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
            when no face is found. Faces the ``tiny`` setting sends to the tiny-face path and
            ``tiny_method`` to the landmark network's own landmarks (:mod:`dffx.align.tiny_route`;
            by default given boxes under 17 px) have ``score`` None and are kept whatever
            ``min_score``. Detected faces take the super-resolved way under ``tiny_method="auto"``
            while ``min_score`` is set, so that its score can drop a false detection.

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
        options = self.options.replace(camera_refit=self.camera_refit if camera_refit is None else bool(camera_refit))
        if detected and self.min_score is not None and options.tiny_method == "auto":
            # the landmark network's way has no alignment score to drop a false detection by
            options = options.replace(tiny_method="sr-cascade")
        result = align_routed(self.model, self.cascade, self.features, self.tiny_route, img, boxes, options)
        m1 = self.model.n_identity
        out = []
        for i in range(len(boxes)):
            cam, p = result.camera[i], result.params[i]
            pose = dict(zip(("pitch", "yaw", "roll"), np.degrees(cam[1:4])))
            out.append(FaceAlignment(box=result.boxes[i], landmarks=result.landmarks[i], visible=result.visible[i],
                                     pose=pose, camera=cam, identity=p[:m1], expression=p[m1:],
                                     score=None if result.score is None or np.isnan(result.score[i])
                                     else float(result.score[i]), model=self.model))
        if detected and self.min_score is not None:
            out = [face for face in out if face.score is None or face.score >= self.min_score]
        return out

    def super_resolve(self, image: np.ndarray, boxes) -> np.ndarray:
        """The tiny-face network's super-resolved face crops (Yin et al.'s SR branch; x4 of the
        32-px canonical crop, so a 16-px face is magnified x8).

        Args:
            image: uint8 (H, W, 3) BGR or (H, W) grey.
            boxes: (F, 4) or (4,) face boxes x0, y0, x1, y1 (landmark-box convention).

        Returns:
            uint8 (F, 128, 128, 3) BGR canonical crops (the box centred, its longer side
            128 / CROP_SCALE px; :func:`dffx.preprocess.crop_transform` at 128 px maps image
            pixels into them).

        Raises:
            ValueError: a bad image or boxes (as :meth:`align`), a tiny-face network without the
            SR head; FileNotFoundError: missing tiny-face weights.
        """
        img = self.checked_image(image)
        boxes = self.checked_boxes(boxes, img.shape[:2])
        if len(boxes) == 0:
            return np.zeros((0, 128, 128, 3), np.uint8)
        result = self.tiny_route.path.run(img, boxes)
        if result.sr is None:
            raise ValueError(f"the tiny-face network {self.tiny_route.path.weights} has no super-resolution head")
        return result.sr

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
