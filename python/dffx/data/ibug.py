"""300W / iBUG ``.pts`` landmark files, and the landmark helpers every loader shares.

The iBUG ``.pts`` format (300W, Menpo, ...)::

    version: 1
    n_points:  68
    {
    x1 y1
    ...
    x68 y68
    }

stores 1-BASED pixel coordinates (the centre of the top-left pixel is ``(1, 1)``, Matlab style).
:func:`read_pts` returns them 0-based, like every dffx loader: x right, y down, the centre of the
top-left pixel at ``(0, 0)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .sample import DatasetFormatError, FaceSample, LoadReport

__all__ = ["IMAGE_SUFFIXES", "landmark_box", "load_300w", "read_pts"]

#: Image file suffixes :func:`load_300w` pairs with ``.pts`` files (compared case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm")


def landmark_box(points) -> np.ndarray:
    """Tight bounding box of the annotated landmarks, NaN rows ignored.

    This is the "ground-truth box" rule of AFLW2000-3D and 300W: the box every method is
    initialised from is ``(min x, min y, max x, max y)`` of the ground-truth points.

    Args:
        points: (K, 2) pixels; a row with a NaN (in either coordinate) is not annotated.

    Returns:
        float64 (4,) ``(x0, y0, x1, y1)``.

    Raises:
        ValueError: ``points`` is not (K, 2), or no row is finite in both coordinates.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (K, 2), got {pts.shape}")
    valid = np.isfinite(pts).all(axis=1)
    if not valid.any():
        raise ValueError(f"points has no finite (annotated) row among {pts.shape[0]}")
    pts = pts[valid]
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def _check_limit(limit) -> int | None:
    """``None`` (no limit) or a non-negative int; anything else is a ValueError."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
        raise ValueError(f"limit must be None or a non-negative int, got {limit!r}")
    if limit < 0:
        raise ValueError(f"limit must be None or a non-negative int, got {limit}")
    return int(limit)


def _check_root(root, dataset: str) -> Path:
    """The dataset folder as a Path; DatasetFormatError naming it if it is missing or not a folder."""
    path = Path(root)
    if not path.exists():
        raise DatasetFormatError(f"{dataset} folder {path} does not exist")
    if not path.is_dir():
        raise DatasetFormatError(f"{dataset} root {path} is not a folder")
    return path


def read_pts(path, n_points: int | None = 68) -> np.ndarray:
    """Read an iBUG ``.pts`` landmark file.

    Args:
        path: the ``.pts`` file (``version: 1`` header, ``n_points: K``, ``{``, K lines ``x y``, ``}``).
            Blank lines, CRLF line ends and a missing final newline are accepted.
        n_points: the number of points the caller requires (68 for 300W); ``None`` accepts the
            count the header declares.

    Returns:
        float64 (K, 2) pixels, 0-BASED (the file's 1-based values minus 1), x right, y down.

    Raises:
        DatasetFormatError: (message names the file) unreadable file, missing or bad
            ``version`` / ``n_points`` header or braces, a point count other than the header's
            (or than ``n_points``), a line that is not two numbers, or a non-finite value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"cannot read landmark file {path}: {exc}") from None
    lines = [ln for ln in (raw.strip() for raw in text.splitlines()) if ln]

    def bad(msg: str) -> DatasetFormatError:
        return DatasetFormatError(f"malformed .pts file {path}: {msg}")

    declared = _pts_header(lines, n_points, bad)
    body = lines[3:-1]
    if len(body) != declared:
        raise bad(f"header declares {declared} points, found {len(body)} point lines")
    pts = np.empty((declared, 2), dtype=np.float64)
    for i, ln in enumerate(body):
        fields = ln.split()
        if len(fields) != 2:
            raise bad(f"point {i + 1} is not 'x y': {ln!r}")
        try:
            pts[i] = [float(fields[0]), float(fields[1])]
        except ValueError:
            raise bad(f"point {i + 1} is not numeric: {ln!r}") from None
    if not np.isfinite(pts).all():
        raise bad("non-finite coordinate")
    return pts - 1.0


def _pts_header(lines: list[str], n_points: int | None, bad) -> int:
    """The point count a .pts file's header declares, after checking the header and the braces
    (``bad(message)`` makes the error)."""
    if len(lines) < 4:
        raise bad(f"only {len(lines)} non-empty lines")
    key, _, value = lines[0].partition(":")
    if key.strip().lower() != "version" or not value.strip():
        raise bad(f"first line must be 'version: N', got {lines[0]!r}")
    key, _, value = lines[1].partition(":")
    if key.strip().lower() != "n_points":
        raise bad(f"second line must be 'n_points: K', got {lines[1]!r}")
    try:
        declared = int(value.strip())
    except ValueError:
        raise bad(f"n_points is not an integer: {lines[1]!r}") from None
    if declared <= 0:
        raise bad(f"n_points must be positive, got {declared}")
    if n_points is not None and declared != n_points:
        raise bad(f"n_points is {declared}, expected {n_points}")
    if lines[2] != "{":
        raise bad(f"third line must be '{{', got {lines[2]!r}")
    if lines[-1] != "}":
        raise bad(f"last line must be '}}', got {lines[-1]!r}")
    return declared


def _subset(rel_dirs: tuple[str, ...]) -> str:
    """300W evaluation subset from the folders between the root and the file (lower-cased)."""
    for i, part in enumerate(rel_dirs):
        if part in ("helen_testset", "lfpw_testset"):
            return "common"
        if part in ("helen", "lfpw") and i + 1 < len(rel_dirs) and rel_dirs[i + 1] == "testset":
            return "common"
    if "ibug" in rel_dirs:
        return "challenging"
    return "other"


def _walk_files(root: Path):
    """Yield (relative dir parts, file names) for every folder under ``root``, following folder
    symlinks (datasets are often linked in) but visiting each real folder once."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        yield rel.parts, filenames


def load_300w(root, limit: int | None = None) -> tuple[list[FaceSample], LoadReport]:
    """Load a 300W-style folder tree: every image with a same-stem iBUG ``.pts`` beside it.

    Images (``.jpg .jpeg .png .ppm``, any case) are searched recursively under ``root``
    (folder symlinks are followed) and paired with the ``.pts`` file of the same stem in the same
    folder. Samples are sorted by their path relative to ``root``.

    Each :class:`FaceSample` has:

    - ``name``: the path relative to ``root`` without suffix, ``/``-separated
      (e.g. ``ibug/image_003_1``), unique even when two folders hold the same stem;
    - ``landmarks``: float64 (68, 2) from :func:`read_pts`, 0-based pixels of the image file;
    - ``face_box``: :func:`landmark_box` of the 68 points (the ground-truth box rule);
    - ``yaw_deg`` / ``yaw_source``: None (300W has no pose labels);
    - ``crop_box``: None (the landmarks are in the image's own pixels);
    - ``extra["subset"]``: ``"common"`` if a folder between ``root`` and the file is named
      ``helen_testset`` or ``lfpw_testset`` (or the pair ``helen/testset``, ``lfpw/testset`` of
      the official release), else ``"challenging"`` if one is named ``ibug``, else ``"other"``
      (training sets, AFW, 300W private test...). Folder names compare case-insensitively and only
      the part of the path BELOW ``root`` counts, so a root such as ``/data/ibug/300W`` does not
      make everything "challenging"; ``extra["pts_path"]``: the ``.pts`` file.

    Images without a ``.pts`` are ignored silently (they are not annotated). A ``.pts`` without an
    image is recorded in ``report.skipped`` as ``(relative path, reason)``; so are additional
    images sharing one ``.pts`` (the first suffix in ``IMAGE_SUFFIXES`` order is used).

    Args:
        root: the dataset folder.
        limit: keep only the first ``limit`` samples (after sorting); None keeps all.

    Returns:
        ``(samples, report)``.

    Raises:
        DatasetFormatError: ``root`` missing or not a folder, no annotated image under it, or a
            malformed ``.pts`` (message names the file).
        ValueError: a bad ``limit``.
    """
    limit = _check_limit(limit)
    root = _check_root(root, "300W")
    report = LoadReport(dataset="300W", root=root)
    rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}

    pairs: list[tuple[str, Path, Path, tuple[str, ...]]] = []  # (sort key, image, pts, dirs)
    for dirs, filenames in _walk_files(root):
        images: dict[str, list[str]] = {}
        pts_files: dict[str, str] = {}
        for fname in filenames:
            stem, suffix = os.path.splitext(fname)
            suffix = suffix.lower()
            if suffix == ".pts":
                pts_files[stem] = fname
            elif suffix in rank:
                images.setdefault(stem, []).append(fname)
        folder = root.joinpath(*dirs)
        rel_prefix = "/".join(dirs + ("",)) if dirs else ""
        for stem, pts_name in pts_files.items():
            candidates = sorted(images.get(stem, []), key=lambda f: (rank[os.path.splitext(f)[1].lower()], f))
            if not candidates:
                report.skipped.append((rel_prefix + pts_name, "no image with the same stem next to the .pts"))
                continue
            for other in candidates[1:]:
                report.skipped.append((rel_prefix + other, f"another image ({candidates[0]}) already uses {pts_name}"))
            key = rel_prefix + stem
            pairs.append((key, folder / candidates[0], folder / pts_name, tuple(d.lower() for d in dirs)))

    if not pairs:
        raise DatasetFormatError(f"no image with a same-stem .pts file found under {root}")
    pairs.sort(key=lambda p: p[0])
    report.skipped.sort()
    if limit is not None:
        pairs = pairs[:limit]

    samples = []
    for key, image_path, pts_path, dirs in pairs:
        landmarks = read_pts(pts_path, n_points=68)
        samples.append(FaceSample(
            name=key,
            image_path=image_path,
            landmarks=landmarks,
            face_box=landmark_box(landmarks),
            extra={"subset": _subset(dirs), "pts_path": pts_path},
        ))
    report.loaded = len(samples)
    return samples, report


# iBUG 68-point mirror partners (0-based): jaw, brows, nose, eyes, mouth read right to left.
# tests/align/test_align.py checks it against ICT's mirror-symmetric landmark vertices.
IBUG68_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """(..., 68, 2) iBUG landmarks -> the same face's landmarks in the mirror image (each point
    at its partner's index, x -> ``width`` - 1 - x)."""
    out = np.array(landmarks)[..., IBUG68_MIRROR, :]
    out[..., 0] = width - 1 - out[..., 0]
    return out
