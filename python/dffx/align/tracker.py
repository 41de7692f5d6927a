"""Face alignment over video frames: each face starts from its landmarks' box in the previous frame.

Per frame the cascade of Sec. III-C runs from the box of the face's 68 landmarks in the frame
before, moved by its last shift, which is the box convention the cascade was trained on (the
same box a re-crop pass starts from, :func:`dffx.align.predictor.align_in_image`). The face
detector, which costs more than the alignment itself (docs/experiments/2026-12-03-latency.md), runs only
on the first frame, when no face is tracked, every ``detect_every`` frames to pick up faces that
entered, after a track's score has dropped (the track then restarts from the detection), and in
a frame where a track was lost. A track ends when its alignment score falls below
``min_score``: the box no longer holds a face. Measurements: docs/experiments/2026-12-03-video.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..detect import box_iou
from .aligner import FaceAligner, FaceAlignment, boxes_fit_image

DEFAULT_DETECT_EVERY = 30   # frames between detector runs while faces are tracked (1 s at 30 fps)
SAME_FACE_IOU = 0.3         # a detection overlapping a track's box this much is that face
DUPLICATE_IOU = 0.5         # two tracks whose landmark boxes overlap this much follow one face
DEFAULT_REANCHOR_DROP = 0.03  # a track whose score fell this much since its detection restarts from the detector


@dataclass
class TrackedFace:
    """One face in one frame.

    Attributes:
        track_id: int, stable over the frames a face is followed (new faces get new ids).
        face: the :class:`FaceAlignment` in this frame (image pixels).
        frames: int, number of frames this track has been followed, this one included.
        detected: bool, True when this frame's box came from the detector, False when it came
            from the previous frames' landmarks.
        motion: float64 (2,) shift of the landmark box's centre since the previous frame, pixels
            (zeros in a track's first frame); the next frame starts from the box moved by this.
        anchor_score: the alignment score in the last frame this track started from a
            detection (None without a confidence template).
    """

    track_id: int
    face: FaceAlignment
    frames: int
    detected: bool
    motion: np.ndarray
    anchor_score: float | None = None

    @property
    def landmark_box(self) -> np.ndarray:
        """float64 (4,) box x0, y0, x1, y1 of the 68 landmarks (the cascade's box convention)."""
        return _landmark_box(self.face.landmarks)

    def to_json(self) -> dict:
        """The face's ``dffx align`` JSON record plus ``track_id``."""
        return {"track_id": self.track_id, **self.face.to_json()}


@dataclass
class _Start:
    """Where one face's alignment starts in this frame: a box, the track it continues (None for
    a new face) and whether the box came from the detector."""

    box: np.ndarray
    track: TrackedFace | None
    detected: bool


class FaceTracker:
    """Large-pose face alignment over the frames of a video (paper Sec. III-C per frame).

    Args:
        aligner: the :class:`FaceAligner` to run (its features, cascade, device, precision,
            re-crop passes and detector); default ``FaceAligner()``.
        detect_every: run the detector every this many frames while faces are tracked, to find
            faces that entered (None: only while no face is tracked). Default
            ``DEFAULT_DETECT_EVERY`` (30).
        min_score: a face whose alignment score is below this is dropped, and its track ends;
            default the aligner's ``min_score``, or its cascade's calibrated threshold
            (:attr:`Cascade.min_score`) when that is None.
            Ignored for a cascade file without a confidence template (tracks then end only when
            the face leaves the frame).
        reanchor_drop: a track whose score has fallen this much below its score in the frame
            it last started from a detection makes the next frame run the detector, and a
            detection on that face replaces the track's predicted box. From a box a tenth of the
            face off the cascade corrects most but not all of the offset
            (docs/experiments/2026-12-03-video.md), so on small, fast-moving faces the box can
            drift frame after frame, and the score shows it. Default ``DEFAULT_REANCHOR_DROP`` (0.03); None: never.

    Raises:
        ValueError: ``detect_every`` not None or a positive int, ``min_score`` not finite,
            ``reanchor_drop`` negative or not finite.
    """

    def __init__(self, aligner: FaceAligner | None = None, detect_every: int | None = DEFAULT_DETECT_EVERY,
                 min_score: float | None = None, reanchor_drop: float | None = DEFAULT_REANCHOR_DROP):
        if detect_every is not None and (not isinstance(detect_every, (int, np.integer)) or detect_every < 1):
            raise ValueError(f"detect_every must be None or a positive int, got {detect_every!r}")
        self.aligner = aligner if aligner is not None else FaceAligner()
        if min_score is None:
            min_score = self.aligner.min_score if self.aligner.min_score is not None else self.aligner.cascade.min_score
        if not np.isfinite(min_score):
            raise ValueError(f"min_score must be a finite number, got {min_score!r}")
        if reanchor_drop is not None and not (np.isfinite(reanchor_drop) and reanchor_drop >= 0):
            raise ValueError(f"reanchor_drop must be a finite number >= 0 or None, got {reanchor_drop!r}")
        self.detect_every, self.min_score, self.reanchor_drop = detect_every, float(min_score), reanchor_drop
        self.reset()

    def reset(self) -> None:
        """Forget every track (e.g. at a scene cut); the next frame runs the detector."""
        self.tracks: list[TrackedFace] = []
        self.frame_index = 0
        self.detector_runs = 0
        self._next_id = 0
        self._last_detection = None

    def update(self, frame: np.ndarray) -> list[TrackedFace]:
        """Align the faces of the next frame.

        Args:
            frame: uint8 (H, W, 3) BGR (as ``cv2.VideoCapture.read`` gives) or (H, W) grey.

        Returns:
            one :class:`TrackedFace` per face followed in this frame, continuing tracks first
            (in track order), then faces the detector found this frame; empty when none. When
            a track is lost in a frame the detector did not search, it searches that frame.

        Raises:
            ValueError: empty frame, wrong dtype or shape.
        """
        img = self.aligner.checked_image(frame)
        # constant-velocity prediction of the box's position (not of its size, whose errors would grow)
        starts = [_Start(t.landmark_box + np.tile(t.motion, 2), t, False) for t in self.tracks]
        searched = self._detector_due()
        if searched:
            starts = self._detect(img, starts)
        tracks = self._align(img, starts)
        if not searched and len(tracks) < len(starts):
            # a track was lost in this frame (the face left, or a cut): look for new faces in it now
            kept = [_Start(t.landmark_box, t, False) for t in tracks]
            tracks += self._align(img, [s for s in self._detect(img, kept) if s.track is None])
        self.frame_index += 1
        self.tracks = _drop_duplicates(tracks)
        return list(self.tracks)

    def _detect(self, img: np.ndarray, starts: list[_Start]) -> list[_Start]:
        """Run the detector: detections of untracked faces become new starts, and a weak track
        whose face is detected restarts from the detection."""
        self.detector_runs += 1
        self._last_detection = self.frame_index
        starts = list(starts)
        for box in self.aligner.detect(img):
            k = _same_face(np.asarray([s.box for s in starts]).reshape(-1, 4), box)
            if k is None:
                starts.append(_Start(box, None, True))
            elif starts[k].track is not None and not starts[k].detected and self._weak(starts[k].track):
                starts[k] = _Start(box, starts[k].track, True)
        return starts

    def _align(self, img: np.ndarray, starts: list[_Start]) -> list[TrackedFace]:
        """Align from every start; faces scoring below ``min_score`` are dropped (lost or false),
        and so are starts whose predicted box has (mostly) left the frame or shrunk to nothing."""
        starts = [s for s in starts if boxes_fit_image(s.box, img.shape)[0]]
        if not starts:
            return []
        # Without the camera refit: frame after frame from the last landmarks' box, it let a small
        # face of the group-photo test drift off within four frames (docs/experiments/2026-12-04-camera-refit.md).
        faces = self.aligner.align(img, np.stack([s.box for s in starts]), camera_refit=False)
        tracks = []
        for face, start in zip(faces, starts):
            if face.score is not None and face.score < self.min_score:
                continue
            if start.track is None:
                tracks.append(TrackedFace(self._new_id(), face, 1, True, np.zeros(2), face.score))
                continue
            before, box = start.track.landmark_box, _landmark_box(face.landmarks)
            motion = (box[:2] + box[2:] - before[:2] - before[2:]) / 2
            anchor = face.score if start.detected else start.track.anchor_score
            tracks.append(TrackedFace(start.track.track_id, face, start.track.frames + 1, start.detected, motion,
                                      anchor))
        return tracks

    def _detector_due(self) -> bool:
        if not self.tracks or any(self._weak(t) for t in self.tracks):
            return True
        return self.detect_every is not None and self.frame_index - self._last_detection >= self.detect_every

    def _weak(self, track: TrackedFace) -> bool:
        """A track whose score fell by ``reanchor_drop`` since its last detection: its box may be drifting."""
        score, anchor = track.face.score, track.anchor_score
        return (self.reanchor_drop is not None and score is not None and anchor is not None
                and score < anchor - self.reanchor_drop)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1


def _same_face(boxes: np.ndarray, box: np.ndarray) -> int | None:
    """Index of the box among ``boxes`` (K, 4) that frames the same face as ``box``: the most
    overlapping one if it overlaps by SAME_FACE_IOU, else the nearest one holding its centre
    (a drifted track's box may have shrunk around part of the face); None if there is none."""
    if not len(boxes):
        return None
    overlap = box_iou(boxes, box)
    if overlap.max() >= SAME_FACE_IOU:
        return int(np.argmax(overlap))
    centre, centres = (box[:2] + box[2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = np.all((boxes[:, :2] <= centre) & (centre <= boxes[:, 2:]), axis=1)
    if not inside.any():
        return None
    distance = np.where(inside, np.linalg.norm(centres - centre, axis=1), np.inf)
    return int(np.argmin(distance))


def _landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks -> their box x0, y0, x1, y1 (the cascade's box convention)."""
    return np.concatenate([landmarks.min(0), landmarks.max(0)])


def _drop_duplicates(tracks: list[TrackedFace]) -> list[TrackedFace]:
    """Two tracks that have converged on one face keep the older one (the smaller id)."""
    kept: list[TrackedFace] = []
    for t in sorted(tracks, key=lambda t: t.track_id):
        if not any(box_iou(k.landmark_box[None], t.landmark_box)[0] >= DUPLICATE_IOU for k in kept):
            kept.append(t)
    order = {id(t): i for i, t in enumerate(tracks)}
    return sorted(kept, key=lambda t: order[id(t)])
