"""dffx.FaceTracker and `dffx track`: alignment over video frames, each face starting from its
previous landmarks. The "videos" are real photos moved, turned and zoomed frame by frame, with
the ground-truth landmarks moved alike."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dffx.eval.metrics import nme_box

from conftest import SHARED


def moving_frames(image, landmarks, count, shift=(3.0, 2.0), roll_deg=1.0, zoom=0.012):
    """Frames of ``image`` moved by ``shift`` px, turned by ``roll_deg`` and zoomed by ``zoom`` per
    frame (about its centre), with the (68, 2) landmarks moved alike."""
    h, w = image.shape[:2]
    frames, truth = [], []
    for k in range(count):
        M = cv2.getRotationMatrix2D((w / 2, h / 2), roll_deg * k, 1 + zoom * k)
        M[:, 2] += (shift[0] * k - 30, shift[1] * k - 20)
        frames.append(cv2.warpAffine(image, M, (w, h), borderMode=cv2.BORDER_REPLICATE))
        truth.append(None if landmarks is None else landmarks @ M[:, :2].T + M[:, 2])
    return frames, truth


@pytest.fixture(scope="module")
def aligner(face_model):
    from dffx.align import FaceAligner

    return FaceAligner("dff", device="cpu", model=face_model)


@pytest.fixture(scope="module")
def portrait(aflw2000_dir):
    """image00050 (yaw 3 deg) and its 68 ground-truth landmarks in image pixels."""
    from dffx.data import load_aflw2000_3d

    samples, _ = load_aflw2000_3d(aflw2000_dir)
    sample = next(s for s in samples if s.name == "image00050")
    image = cv2.imread(str(sample.image_path))
    return image, sample.ground_truth_to_image(sample.landmarks, image.shape[:2])


class CountingDetector:
    """Wraps dffx.detect.detect_faces and counts its calls."""

    def __init__(self, monkeypatch):
        import dffx.detect

        self.calls, self._detect = 0, dffx.detect.detect_faces
        monkeypatch.setattr(dffx.detect, "detect_faces", self)

    def __call__(self, image, **kwargs):
        self.calls += 1
        return self._detect(image, **kwargs)


def test_tracker_follows_a_moving_face_with_one_detection(aligner, portrait, monkeypatch):
    """Twelve frames of a moving, turning, zooming face: one detector run, one track throughout,
    errors as low as detecting and aligning every frame."""
    from dffx.align import FaceTracker

    frames, truth = moving_frames(*portrait, 12)
    per_frame = [min(nme_box(f.landmarks, g) for f in aligner.align(frame)) for frame, g in zip(frames, truth)]
    detector = CountingDetector(monkeypatch)
    tracker = FaceTracker(aligner, detect_every=None)
    errors, moved, landmarks = [], np.zeros(2), []
    for k, (frame, g) in enumerate(zip(frames, truth)):
        tracked = tracker.update(frame)
        assert len(tracked) == 1 and tracked[0].track_id == 0 and tracked[0].frames == k + 1
        assert tracked[0].detected == (k == 0)
        errors.append(nme_box(tracked[0].face.landmarks, g))
        landmarks.append(tracked[0].face.landmarks)
        moved += tracked[0].motion
    first = landmarks[0]
    assert detector.calls == tracker.detector_runs == 1
    assert max(errors) < 0.06 and np.mean(errors) < np.mean(per_frame) + 0.005

    def centre(points):
        return (points.min(0) + points.max(0)) / 2

    # the motions add up to the path of the face's landmark box, and that box follows the truth
    # within 2.5% of the face in every frame, so the path does too (no drift: the error does not
    # grow over the frames). The box centre's offset is the cascade's own: at most 1.4% with the
    # 4,000-render cascade, 2.0% (in frame 2) with the shipped 12,000-render one
    np.testing.assert_allclose(moved, centre(tracked[0].face.landmarks) - centre(first), atol=1e-6)
    side = np.ptp(truth[0], axis=0).mean()
    assert max(np.linalg.norm(centre(p) - centre(g)) for p, g in zip(landmarks, truth)) < 0.025 * side
    record = tracked[0].to_json()
    assert record["track_id"] == 0 and len(record["landmarks"]) == 68


def test_lost_face_ends_its_track_and_a_new_one_starts_when_it_returns(aligner, portrait):
    """A face that leaves (grey frames) is dropped by its score; the detector looks every frame
    until a face is back, which gets a new track id."""
    from dffx.align import FaceTracker

    frames, _ = moving_frames(*portrait, 3)
    grey = np.full_like(frames[0], 128)
    tracker = FaceTracker(aligner, detect_every=None)
    counts = [len(tracker.update(f)) for f in frames[:2] + [grey, grey] + frames[2:]]
    assert counts == [1, 1, 0, 0, 1]
    assert tracker.tracks[0].track_id == 1 and tracker.tracks[0].detected
    assert tracker.detector_runs == 4  # frame 0, both grey frames (the track is lost in the first), the return
    tracker.reset()
    assert tracker.tracks == [] and tracker.update(grey) == [] and tracker.detector_runs == 1


def test_face_leaving_the_frame_ends_its_track(aligner, portrait):
    """A face that slides out of the frame: once its predicted box lies mostly outside, the
    track ends quietly (no error from the aligner's box check, issue 28)."""
    from dffx.align import FaceTracker

    image, _ = portrait
    tracker = FaceTracker(aligner, detect_every=None)
    counts = []
    for shift in (0, 60, 120, 180, 240, 300, 360, 420):
        frame = np.full_like(image, 128)
        frame[:, : image.shape[1] - shift] = image[:, shift:]  # the scene moves left by shift px
        counts.append(len(tracker.update(frame)))
    assert counts[0] == 1 and counts[-1] == 0


def test_tracker_keeps_every_face_of_a_group_photo_with_stable_ids(aligner):
    """Six small faces (32-49 px wide) moving 3 px per frame: periodic detections find no new
    face, every track keeps its id, and a track whose score falls restarts from the detector."""
    from dffx.align import FaceTracker

    image = cv2.imread(str(SHARED / "data" / "dev" / "dlib-examples" / "2008_002470.jpg"))
    if image is None:
        pytest.skip("dlib example photo not found")
    frames, _ = moving_frames(image, None, 8, shift=(3.0, -2.0), roll_deg=0.0, zoom=0.0)
    tracker = FaceTracker(aligner, detect_every=3)
    first = {t.track_id for t in tracker.update(frames[0])}
    assert len(first) == 6
    for frame in frames[1:]:
        tracked = tracker.update(frame)
        assert {t.track_id for t in tracked} == first
        assert min(t.face.score for t in tracked) > 0.8
    assert 3 <= tracker.detector_runs < len(frames)


def test_tracker_rejects_bad_arguments_and_frames(aligner):
    from dffx.align import FaceTracker

    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="detect_every"):
            FaceTracker(aligner, detect_every=bad)
    with pytest.raises(ValueError, match="min_score"):
        FaceTracker(aligner, min_score=float("nan"))
    with pytest.raises(ValueError, match="reanchor_drop"):
        FaceTracker(aligner, reanchor_drop=-0.1)
    tracker = FaceTracker(aligner)
    with pytest.raises(ValueError, match="empty image"):
        tracker.update(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        tracker.update(np.zeros((32, 32, 3), np.float32))


def test_track_command_writes_json_lines_and_an_overlay_video(portrait, tmp_path, face_model, ict_dir, monkeypatch,
                                                              capsys):
    from dffx.cli import main

    monkeypatch.setenv("DFFX_FACE_MODEL", str(ict_dir))
    frames, _ = moving_frames(*portrait, 5)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    out, overlay = tmp_path / "clip.jsonl", tmp_path / "clip_overlay.avi"
    assert main(["track", str(video), "--out", str(out), "--overlay", str(overlay), "--device", "cpu"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(5))
    assert all(len(r["faces"]) == 1 and r["faces"][0]["track_id"] == 0 for r in records)
    assert len(records[0]["faces"][0]["landmarks"]) == 68
    read = cv2.VideoCapture(str(overlay))
    assert int(read.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    (tmp_path / "not_a_video.avi").write_text("hello")
    assert main(["track", str(tmp_path / "not_a_video.avi"), "--out", str(tmp_path / "x.jsonl")]) == 1
    assert main(["track", str(tmp_path / "missing.avi"), "--out", str(tmp_path / "x.jsonl")]) == 1
    # issue 28 (12): a video cut in half tracks the frames it has and says what it read
    data = video.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["track", str(tmp_path / "cut.avi"), "--out", str(tmp_path / "cut.jsonl"), "--device", "cpu"]) == 0
    read = len((tmp_path / "cut.jsonl").read_text().splitlines())
    assert 0 < read < 5 and f"warning: {tmp_path / 'cut.avi'}: read {read} of the 5 frames" in capsys.readouterr().err
    # issue 28 (13): an overlay name that is no video is refused before anything is written
    assert main(["track", str(video), "--out", str(tmp_path / "y.jsonl"), "--overlay", str(tmp_path / "o.png")]) == 1
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "y.jsonl").exists()
