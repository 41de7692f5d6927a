"""The synthesis' source photos as cascade training samples (issue 25: train on photographs too).

A ``dffx synth`` set fits the 3DMM and a camera to every source photo (300-W, 68 annotated
points) and keeps the fits in ``fits.npz``. Those photos are real photographs with known
landmarks and a known camera, so the cascade can learn its descent directions (eq. 9-10) on
them as they are, beside the renders: ``dffx train cascade --data DATA --photos``.

Each photo (and its mirror image, when the set used mirror images) becomes one sample: the
canonical 224-px crop of its ground-truth box (the annotations' bounding box, as the renders
and the benchmarks frame a face), the annotated 68 points as the landmark target X*, and the
fitted camera as the camera target w*, both mapped into the crop. Only the photos of the asked
split are used: the set's held-out photos stay held out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data import load_300w
from ..data.ibug import landmark_box, mirror_landmarks
from ..geometry.camera import camera_in_crop
from ..preprocess import CROP_SIZE, crop_face
from ..synth.pipeline import MIRROR_SUFFIX, read_source_photo
from .cascade import CascadeState, update_geometry


def camera_in_rotated_image(camera: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """A weak-perspective camera (eq. 2) of image pixels carried into the image turned in its
    plane by ``rotation``, so that it projects the same face where the turned image shows it.

    Args:
        camera: float (6,) ``(s, pitch, yaw, roll, tx, ty)`` in image pixels, angles in radians.
        rotation: float (2, 3) the image's in-plane rotation about a point, as
            ``cv2.getRotationMatrix2D`` returns it (pixels, y down; its 2x2 part a rotation).

    Returns:
        float64 (6,): the same scale; the head rotation turned about the viewing axis (with
        D = diag(1, -1), the screen's y flip, ``D A D`` rotates the model's x-y plane, i.e.
        R' = Rz R); ``(tx, ty)`` mapped by the rotation.
    """
    from ..geometry.camera import euler_from_rotation, rotation_matrix

    A, b = np.asarray(rotation, np.float64)[:, :2], np.asarray(rotation, np.float64)[:, 2]
    in_plane = np.eye(3)
    in_plane[:2, :2] = np.diag([1.0, -1.0]) @ A @ np.diag([1.0, -1.0])
    out = np.asarray(camera, np.float64).copy()
    out[1:4] = euler_from_rotation(in_plane @ rotation_matrix(*out[1:4]))
    out[4:6] = A @ out[4:6] + b
    return out


def photo_split(data, photos, split: str = "train", model=None, rotations: int = 0, max_degrees: float = 30.0,
                seed: int = 0) -> dict:
    """The source photos of a synth set as a cascade training split.

    Args:
        data: the ``dffx synth`` folder (its ``manifest.json`` names the photos, ``fits.npz``
            holds their cameras and shapes and which are held out).
        photos: the folder the set was made from (``../shared/data/300w-train``).
        split: "train" (the photos the set trained on) or "val" (its held-out photos).
        model: :class:`dffx.FaceModel` at the cascade's landmark convention; when given,
            ``landmarks160`` / ``visible160`` (which the confidence template reads) come from
            each photo's fit; without it they are left out.
        rotations: also this many copies of each photo turned in its plane about its face box's
            centre by a random angle in [-max_degrees, max_degrees] (at least a third of it in
            size), with the annotated points and the fitted camera turned alike
            (:func:`camera_in_rotated_image`): photo-like faces at rolls 300-W seldom shows.
        max_degrees: the largest in-plane turn, degrees.
        seed: the angles' random seed.

    Returns:
        dict like :func:`dffx.align.predictor.synth_split`: ``crops(ids)`` -> uint8
        (n, 224, 224, 3) BGR, ``landmarks`` float32 (N, 68, 2) the annotated points in crop
        pixels, ``cameras`` float64 (N, 6) the fitted cameras in crop pixels, and with
        ``model`` ``landmarks160`` float32 (N, 160, 2), ``visible160`` bool (N, 160).

    Raises:
        FileNotFoundError: ``data`` is not a synth set or a photo or its .pts is missing.
        OSError: a photo OpenCV cannot read.
        ValueError: an unknown split, or fits that do not match the photo list.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    data, photos = Path(data), Path(photos)
    for path in (data / "manifest.json", data / "fits.npz"):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {data} is not a dffx synth output folder")
    names = json.loads((data / "manifest.json").read_text())["photos"]
    with np.load(data / "fits.npz") as f:
        fit_cameras, held_out = f["camera"], f["held_out"].astype(bool)
        shape = np.concatenate([f["p_id"], f["p_exp"]], axis=1).astype(np.float32)
    if len(fit_cameras) != len(names):
        raise ValueError(f"{data}: {len(fit_cameras)} fits for {len(names)} photos")
    samples, _ = load_300w(photos)
    annotated = {str(Path(s.image_path).relative_to(photos)): s.landmarks for s in samples}
    keep = np.flatnonzero(held_out if split == "val" else ~held_out)
    if not (isinstance(rotations, (int, np.integer)) and rotations >= 0 and 0 < max_degrees <= 90):
        raise ValueError(f"rotations must be an integer >= 0 and max_degrees in (0, 90], got {rotations!r}, "
                         f"{max_degrees!r}")
    rng = np.random.default_rng(seed)
    crops, landmarks, cameras, rows = [], [], [], []  # rows: each sample's photo (its fit)
    for k in keep:
        name = names[k]
        mirrored = name.endswith(MIRROR_SUFFIX)
        base = name[: -len(MIRROR_SUFFIX)] if mirrored else name
        if base not in annotated:
            raise FileNotFoundError(f"{photos / base}: photo or its .pts missing (named in {data}/manifest.json)")
        image = read_source_photo(photos, name)  # the mirror image for a mirrored name
        points = mirror_landmarks(annotated[base], image.shape[1]) if mirrored else annotated[base]
        views = [(image, points, fit_cameras[k])]
        for _ in range(rotations):
            views.append(_turned(image, points, fit_cameras[k], rng.uniform(max_degrees / 3, max_degrees)
                                 * rng.choice([-1.0, 1.0])))
        for view, view_points, view_camera in views:
            crop, transform = crop_face(view, landmark_box(view_points), CROP_SIZE)
            crops.append(crop)
            landmarks.append(view_points * transform[0, 0] + transform[:, 2])
            cameras.append(camera_in_crop(view_camera, transform))
            rows.append(k)
    crops = np.stack(crops)
    out = {"crops": lambda ids: crops[np.asarray(ids)], "landmarks": np.stack(landmarks).astype(np.float32),
           "cameras": np.stack(cameras)}
    if model is not None:
        state = update_geometry(model, CascadeState(out["cameras"], shape[np.asarray(rows)]))
        out.update(landmarks160=state.U.astype(np.float32), visible160=state.V.astype(bool))
    return out


def _turned(image: np.ndarray, points: np.ndarray, camera: np.ndarray, degrees: float):
    """``image`` turned by ``degrees`` (counter-clockwise on screen) about the centre of the
    points' box, with the points and the camera turned alike: (image, points, camera)."""
    import cv2

    box = landmark_box(points)
    rotation = cv2.getRotationMatrix2D((float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2), float(degrees), 1.0)
    turned = cv2.warpAffine(image, rotation, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT101)
    return turned, points @ rotation[:, :2].T + rotation[:, 2], camera_in_rotated_image(camera, rotation)


def concat_splits(first: dict, second: dict) -> dict:
    """Two cascade training splits as one: ids ``0..N1-1`` are ``first``'s, the rest ``second``'s.

    Raises:
        ValueError: the two do not carry the same arrays.
    """
    keys = sorted(k for k in first if k != "crops")
    if keys != sorted(k for k in second if k != "crops"):
        raise ValueError(f"splits with different arrays: {keys} and {sorted(k for k in second if k != 'crops')}")
    n1 = len(first["landmarks"])

    def crops(ids):
        ids = np.asarray(ids)
        out = np.empty((len(ids), CROP_SIZE, CROP_SIZE, 3), np.uint8)
        low = ids < n1
        if low.any():
            out[low] = first["crops"](ids[low])
        if (~low).any():
            out[~low] = second["crops"](ids[~low] - n1)
        return out

    merged = {k: np.concatenate([first[k], second[k]]) for k in keys}
    merged["crops"] = crops
    return merged
