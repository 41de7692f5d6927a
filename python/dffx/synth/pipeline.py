"""``dffx synth``: photos with 68 points -> fits -> a sharded set of re-rendered samples (Sec. III-A).

Reproducible: sample i draws everything from ``np.random.default_rng([seed, i])`` and its
source photo is fixed by i (photos are shuffled once with the seed, then each gets a
contiguous block of ``views / photos`` samples), so a shard's content does not depend on the
number of workers or on which shards were already written. Resumable: finished shards and
the fits are reused on a rerun with the same settings.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..data import load_300w
from ..data.ibug import mirror_landmarks
from ..model import load_face_model
from ..model.annotated_landmarks import CONVENTIONS, model_for_convention
from .fit import CONTOUR_MODES, ContourLines, fit_photo
from .background import face_free_background, random_background
from .render import Synthesizer, sample_view
from .store import FORMAT_TAG, completed_shards, read_manifest, write_manifest, write_shard


BACKGROUNDS = ("context", "no-face", "any")
DEFAULT_ORIGINAL_VIEWS = 0.1   # samples that show their photo as it is (context background)
MIRROR_SUFFIX = "#mirror"      # manifest names of mirror images: the photo's name + this
MAX_BACKGROUND_PHOTOS = 8   # photos tried for a face-free crop before one with the face is accepted


@dataclass
class SynthConfig:
    """Settings of one synthesized set (stored in ``manifest.json``).

    Attributes:
        photos: folder of photos with iBUG ``.pts`` files (searched recursively).
        out: output folder.
        views: total number of samples to render.
        size: image side in pixels.
        seed: master seed.
        workers: processes (0 = all CPU cores).
        shard_size: samples per shard.
        holdout_fraction: fraction of photos marked held out (their samples form the "val" split).
        contour: jaw strategy of the photo fits (:class:`dffx.synth.fit.ContourLines`). The
            default "fixed" fits each point with the vertex that labels it in the renders (the
            ``landmarks`` convention's), so a label sits on the texture of its annotated point;
            sets made before 2026-12-06 fitted ICT's published jawline ("published") but
            labelled the iBUG jaw vertices.
        background: ``"context"`` (default) keeps the photo's own head and surroundings, turned
            with the face (face profiling, :mod:`dffx.synth.context`); ``"no-face"`` pastes the
            face on a crop of another photo beside its annotated face
            (:func:`dffx.synth.background.face_free_background`, sets of 2026-12-02 to -06);
            ``"any"`` crops it anywhere, face included, as sets made before 2026-12-02 did.
        mirror_photos: also use every photo's mirror image as a source (its landmarks mirrored
            with :data:`dffx.data.ibug.IBUG68_MIRROR`; a mirror image is held out with its
            photo). Manifest names of mirror images end in :data:`MIRROR_SUFFIX`.
        original_views: fraction of samples rendered at their photo's own fitted pose and
            expression, unlit: the photo itself with exact labels (only with the "context"
            background, where such a render reproduces the photo). None: 0.1 with the
            "context" background, else 0.
        landmarks: the landmark convention of the stored labels and of the framing
            (:mod:`dffx.model.annotated_landmarks`): ``"300w"`` (default) or ``"ict"`` (sets made
            before 2026-12-06).
        model: face model path (None = $DFFX_FACE_MODEL).
        progress: tqdm progress bar.
    """

    photos: str
    out: str
    views: int
    size: int = 224
    seed: int = 0
    workers: int = 0
    shard_size: int = 500
    holdout_fraction: float = 0.05
    contour: str = "fixed"
    background: str = "context"
    mirror_photos: bool = True
    original_views: float | None = None
    landmarks: str = "300w"
    model: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.original_views is None:
            self.original_views = DEFAULT_ORIGINAL_VIEWS if self.background == "context" else 0.0

    def check(self) -> None:
        """Raise ValueError for settings that cannot work."""
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")
        if self.size < 32:
            raise ValueError(f"size must be >= 32, got {self.size}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.contour not in CONTOUR_MODES:
            raise ValueError(f"contour must be one of {CONTOUR_MODES}, got {self.contour!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {self.background!r}")
        if self.landmarks not in CONVENTIONS:
            raise ValueError(f"landmarks must be one of {CONVENTIONS}, got {self.landmarks!r}")
        if not 0 <= self.original_views <= 1:
            raise ValueError(f"original_views must be in [0, 1], got {self.original_views}")
        if self.original_views and self.background != "context":
            raise ValueError("original_views needs the 'context' background (a pasted background is no photo)")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")


def read_source_photo(photos: Path, name: str) -> np.ndarray:
    """uint8 (H, W, 3) BGR source photo of a set by its manifest name (a name ending in
    :data:`MIRROR_SUFFIX` is the mirror image of the photo it names). Raises OSError if unreadable."""
    mirrored = name.endswith(MIRROR_SUFFIX)
    path = Path(photos) / (name[: -len(MIRROR_SUFFIX)] if mirrored else name)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"could not read {path}")
    return np.ascontiguousarray(image[:, ::-1]) if mirrored else image


def _photo_list(photos: Path, mirror: bool = False) -> tuple[list[str], np.ndarray]:
    """Manifest names and (N, 68, 2) landmarks of the photos, followed by their mirror images."""
    samples, report = load_300w(photos)
    if not samples:
        raise ValueError(f"no photo with a 68-point .pts file under {photos}")
    names = [str(Path(s.image_path).relative_to(photos)) for s in samples]
    landmarks = np.stack([s.landmarks for s in samples])
    if not mirror:
        return names, landmarks
    widths = [read_source_photo(photos, n).shape[1] for n in names]
    flipped = np.stack([mirror_landmarks(x, w) for x, w in zip(landmarks, widths)])
    return names + [n + MIRROR_SUFFIX for n in names], np.concatenate([landmarks, flipped])


def _fit_all(model, landmarks: np.ndarray, contour_mode: str, progress: bool) -> dict:
    from tqdm import tqdm

    contour = ContourLines(model, contour_mode)
    fits = [fit_photo(model, x, contour=contour)
            for x in tqdm(landmarks, desc="fit 3DMM", unit="photo", disable=not progress)]
    return {"camera": np.stack([f.camera for f in fits]), "p_id": np.stack([f.p_id for f in fits]),
            "p_exp": np.stack([f.p_exp for f in fits]), "rms_px": np.array([f.rms_px for f in fits]),
            "nme_io": np.array([f.nme_io for f in fits])}


def source_of(indices: np.ndarray, views: int, order: np.ndarray) -> np.ndarray:
    """Photo index of each sample index: contiguous blocks over the shuffled photo ``order``."""
    return order[(np.asarray(indices, np.int64) * len(order)) // views]


# ---------------------------------------------------------------- worker side
_WORKER: dict = {}


def _init_worker(config: dict, names: list[str], landmarks: np.ndarray, fits: dict, order: np.ndarray) -> None:
    cv2.setNumThreads(1)
    model = model_for_convention(load_face_model(config["model"]), config["landmarks"])
    _WORKER.update(config=config, names=names, landmarks=landmarks, fits=fits, order=order, model=model,
                   synth=Synthesizer(model, config["size"], threads=1, context=config["background"] == "context"))


def _read_photo(k: int) -> np.ndarray:
    return read_source_photo(Path(_WORKER["config"]["photos"]), _WORKER["names"][k])


def _original_view(view, camera: np.ndarray, p_exp: np.ndarray):
    """``view`` turned into the photo's own pose and expression, unlit (box jitter kept)."""
    view.pitch, view.yaw, view.roll = (float(a) for a in camera[1:4])
    view.p_exp = np.asarray(p_exp, np.float32).copy()
    view.light_strength = 0.0
    return view


def _other_photo(src: int, rng: np.random.Generator) -> int:
    """A random photo index other than ``src``."""
    other = int(rng.integers(len(_WORKER["names"]) - 1))
    return other + (other >= src)


def _background(src: int, rng: np.random.Generator) -> np.ndarray | None:
    """The background of a sample of photo ``src``: a crop of another photo (SynthConfig.background),
    or None where the photo's own context is rendered."""
    size = _WORKER["config"]["size"]
    if _WORKER["config"]["background"] == "context":
        return None
    if _WORKER["config"]["background"] == "any":
        return random_background(_read_photo(_other_photo(src, rng)), size, rng)
    for _ in range(MAX_BACKGROUND_PHOTOS):
        other = _other_photo(src, rng)
        photo = _read_photo(other)
        crop = face_free_background(photo, _WORKER["landmarks"][other], size, rng)
        if crop is not None:
            return crop
    return random_background(photo, size, rng)  # faces filled every photo drawn: not seen in practice


def _make_shard(k: int) -> int:
    cfg, fits, synth = _WORKER["config"], _WORKER["fits"], _WORKER["synth"]
    lo, hi = k * cfg["shard_size"], min((k + 1) * cfg["shard_size"], cfg["views"])
    indices = np.arange(lo, hi)
    sources = source_of(indices, cfg["views"], _WORKER["order"])
    prepared, samples, quality = {}, [], []
    for i, src in zip(indices, sources):
        rng = np.random.default_rng([cfg["seed"], int(i)])
        if src not in prepared:
            prepared.clear()  # samples of one photo are contiguous: keep only the current one
            prepared[src] = synth.prepare(_read_photo(src), fits["camera"][src], fits["p_id"][src],
                                          fits["p_exp"][src], int(src))
        view = sample_view(rng, synth.model.n_expression, fits["p_exp"][src])
        if cfg["original_views"] and rng.random() < cfg["original_views"]:
            view = _original_view(view, fits["camera"][src], fits["p_exp"][src])
        samples.append(synth.render(prepared[src], view, _background(int(src), rng), rng))
        quality.append(int(rng.integers(70, 96)))
    write_shard(Path(cfg["out"]), k, samples, indices, quality)
    return len(indices)


# ---------------------------------------------------------------- driver
def synthesize(config: SynthConfig) -> dict:
    """Build (or complete) a synthesized set; returns a summary dict (counts, timing, fit errors).

    Raises:
        ValueError: bad settings, no annotated photo, or an existing set made with other settings.
        OSError: unreadable photos.
    """
    from tqdm import tqdm

    config.check()
    photos, out = Path(config.photos), Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    names, landmarks = _photo_list(photos, config.mirror_photos)
    photo_hash = hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]
    settings = {k: v for k, v in asdict(config).items() if k not in ("out", "workers", "progress", "model")}
    settings["photos"] = str(photos.resolve())
    if (out / "manifest.json").exists():
        old = read_manifest(out)
        old["settings"].setdefault("background", "any")  # sets made before the setting existed
        old["settings"].setdefault("landmarks", "ict")
        old["settings"].setdefault("mirror_photos", False)
        old["settings"].setdefault("original_views", 0.0)
        if old["settings"] != settings or old["photo_hash"] != photo_hash:
            raise ValueError(f"{out} holds a set made with other settings ({old['settings']}); use another --out")
    model = model_for_convention(load_face_model(config.model), config.landmarks)
    start = time.perf_counter()
    fits_path = out / "fits.npz"
    if fits_path.exists():
        with np.load(fits_path) as z:
            fits = {k: z[k] for k in z.files}
    else:
        fits = _fit_all(model, landmarks, config.contour, config.progress)
        rng = np.random.default_rng([config.seed, 1])
        n_photos = len(names) // 2 if config.mirror_photos else len(names)
        held_out = rng.random(n_photos) < config.holdout_fraction
        fits["held_out"] = np.tile(held_out, len(names) // n_photos)  # a mirror image goes with its photo
        fits["order"] = rng.permutation(len(names))
        np.savez(fits_path, **fits)
    fit_seconds = time.perf_counter() - start
    n_shards = -(-config.views // config.shard_size)
    manifest = {"format": FORMAT_TAG, "settings": settings, "photo_hash": photo_hash, "photos": names,
                "n_shards": n_shards, "model": str(model.source)}
    write_manifest(out, manifest)

    todo = sorted(set(range(n_shards)) - completed_shards(out))
    workers = config.workers or os.cpu_count() or 1
    worker_cfg = {**asdict(config), "photos": str(photos)}
    init_args = (worker_cfg, names, landmarks, fits, fits["order"])
    start = time.perf_counter()
    done = 0
    with tqdm(total=sum(min(config.shard_size, config.views - k * config.shard_size) for k in todo),
              desc="render", unit="sample", disable=not config.progress) as bar:
        if workers == 1 or len(todo) <= 1:
            _init_worker(*init_args)
            for k in todo:
                n = _make_shard(k)
                done += n
                bar.update(n)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=init_args) as pool:
                for n in pool.imap_unordered(_make_shard, todo):
                    done += n
                    bar.update(n)
    render_seconds = time.perf_counter() - start
    summary = {"samples": config.views, "rendered_now": done, "shards": n_shards, "workers": workers,
               "fit_seconds": round(fit_seconds, 2), "render_seconds": round(render_seconds, 2),
               "ms_per_sample": round(1000 * render_seconds / max(done, 1), 2),
               "photos": len(names), "held_out_photos": int(fits["held_out"].sum()),
               "fit_nme_io_mean": float(fits["nme_io"].mean()),
               "fit_nme_io_held_out": float(fits["nme_io"][fits["held_out"]].mean()) if fits["held_out"].any() else None}
    manifest["last_run"] = summary
    write_manifest(out, manifest)
    return summary
