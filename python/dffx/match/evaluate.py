"""Quantitative matching evaluation on synthesized pairs with known correspondence (Sec. IV-A).

The paper shows matching only qualitatively (Fig. 8-9). Here two renders of the same fitted
photo (:class:`dffx.synth.Synthesizer`) at different yaw form a pair, and the 3D model gives the
true correspondence of every face pixel:

1. the source sample's mesh is rasterized again (the synthesizer's extended mesh, so the
   triangle ids are those of the render): triangle t and barycentrics b per pixel;
2. the same (t, b) on the target sample's projected mesh is the true target point;
3. it is *visible* when it passes the depth test against the target render's depth buffer
   (:func:`dffx.landmark_visibility` on the points, default 1 px tolerance).

Pairs are grouped by yaw difference: small (< 30 deg), medium (30-60), large (> 60). Pitch,
roll and expression are the same in both views; light, face-box jitter, photometric noise and
background differ.

Metrics per method (DFF sparse, SIFT sparse, DFF dense), summed over the pairs of a group:

* **correct**: matches within ``CORRECT_PX`` = 5 px of the true target point / matches made
  (a match of a source point whose true point is hidden is never correct);
* **valid**: matched source points with a visible true point / source points with a visible
  true point;
* **hidden matched**: matched source points whose true point is hidden / such source points
  (the paper's Fig. 8 remark: DFF should leave them unmatched, SIFT matches them to the
  other side of the face).

A fourth row, **DFF sparse at SIFT's count** ("dff-top"), keeps on each pair only the n DFF
matches of smallest descriptor angle, n = the number of SIFT matches on that pair. SIFT's
ratio test and DFF's 30 degree threshold accept very different numbers of matches, so their
correct rates are not at the same recall; this row compares the two at equal match count.

Source points: SIFT keypoints in the source face mask (sparse, shared by both methods) and all
source face pixels (dense). Face masks are ``triangle_id >= 0`` (model surface, no eye/mouth
caps). Sparse keypoints take the true point of their nearest pixel (at most 0.7 px off).

Use photos the DFF network was not trained on: :func:`held_out_sources` takes the held-out
photos of a ``dffx synth`` set (their fits are stored), :func:`fit_sources` fits 300W-style
annotated photos. Numbers are only meaningful with trained weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dense import DENSE_MAX_ANGLE_DEG, dense_match, mask_pixels, synth_face_mask
from .sparse import SIFT_RATIO, SPARSE_MAX_ANGLE_DEG, sift_keypoints, sparse_match

CORRECT_PX = 5.0
YAW_BINS = (("small", 0.0, 30.0), ("medium", 30.0, 60.0), ("large", 60.0, 90.0))  # |yaw_dst - yaw_src|, degrees
METHODS = ("dff", "dff-top", "sift", "dff-dense")
_COUNTS = ("points", "visible", "matches", "correct", "matched_visible", "hidden", "matched_hidden")


def yaw_group(diff_deg: float) -> str:
    """Group name of a yaw difference in degrees: "small" (< 30), "medium" (30-60), "large" (>= 60)."""
    d = abs(float(diff_deg))
    return "small" if d < 30 else "medium" if d < 60 else "large"


# ------------------------------------------------------------------ ground truth
@dataclass
class PairTruth:
    """True correspondence of a synthesized pair, per source pixel.

    Attributes:
        target_xy: float32 (H, W, 2) true target position ``(x, y)`` (target pixels) of the
            surface point seen at each source pixel; NaN where ``defined`` is False.
        visible: bool (H, W) the true point is visible in the target (depth test, in the image).
        defined: bool (H, W) source face pixels with a truth: model triangle seen in the stored
            label map and in the re-rasterization (they agree on all but a few edge pixels).
        dst_mask: bool (H', W') target face mask (``triangle_id >= 0``).
    """

    target_xy: np.ndarray
    visible: np.ndarray
    defined: np.ndarray
    dst_mask: np.ndarray

    def at(self, xy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Truth at the nearest pixel of (N, 2) source points: (target_xy (N, 2), visible (N,),
        defined (N,)); points outside the image are undefined."""
        p = np.round(np.asarray(xy, np.float64).reshape(-1, 2)).astype(np.int64)
        h, w = self.visible.shape
        inside = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
        x, y = np.clip(p[:, 0], 0, w - 1), np.clip(p[:, 1], 0, h - 1)
        defined = inside & self.defined[y, x]
        return self.target_xy[y, x], defined & self.visible[y, x], defined


def _mesh_of(synth_or_mesh):
    from ..synth.mesh import SynthMesh

    if isinstance(synth_or_mesh, SynthMesh):
        return synth_or_mesh
    return synth_or_mesh.mesh


def sample_screen(sample, model, mesh) -> np.ndarray:
    """float32 (n + holes, 3) screen vertices of a synthesized sample's extended mesh
    (``project(mesh.extend(model.shape(p_id, p_exp)), camera)``)."""
    from ..geometry import project

    return project(mesh.extend(model.shape(np.asarray(sample.p_id), np.asarray(sample.p_exp))),
                   np.asarray(sample.camera, np.float64))


def pair_truth(src, dst, model, synth_or_mesh, tolerance: float | None = None) -> PairTruth:
    """True correspondence from synthesized sample ``src`` to sample ``dst`` (same identity).

    Args:
        src, dst: :class:`dffx.synth.SynthSample` (or dicts/objects with ``triangle_id``,
            ``camera``, ``p_id``, ``p_exp``, e.g. ``SynthDataset.raw`` items) of equal size.
        model: the :class:`dffx.FaceModel` they were rendered with.
        synth_or_mesh: the :class:`dffx.synth.Synthesizer` (or its ``SynthMesh``).
        tolerance: depth-test tolerance in pixels (None: dffx's landmark default, 1 px).

    Returns:
        :class:`PairTruth`.

    Raises:
        ValueError: label maps of different or non-2D shapes.
    """
    from ..ops import landmark_visibility, rasterize
    from ..ops.raster import DEFAULT_VISIBILITY_TOLERANCE

    src, dst = _as_sample(src), _as_sample(dst)
    mesh = _mesh_of(synth_or_mesh)
    src_tri, dst_tri = np.asarray(src.triangle_id), np.asarray(dst.triangle_id)
    if src_tri.ndim != 2 or src_tri.shape != dst_tri.shape:
        raise ValueError(f"label maps must be equal (H, W), got {src_tri.shape} and {dst_tri.shape}")
    size = src_tri.shape
    ras = rasterize(sample_screen(src, model, mesh), mesh.triangles, size)
    defined = (src_tri >= 0) & (ras.triangle_id == src_tri)
    tri = ras.triangle_id[defined]
    bary = ras.barycentric[defined].astype(np.float64)
    dst_screen = sample_screen(dst, model, mesh)
    points = np.einsum("pk,pkj->pj", bary, dst_screen[mesh.triangles[tri]].astype(np.float64)).astype(np.float32)
    dst_depth = rasterize(dst_screen, mesh.triangles, size).depth
    tol = DEFAULT_VISIBILITY_TOLERANCE if tolerance is None else tolerance
    vis = landmark_visibility(points, np.arange(len(points)), dst_depth, tol) if len(points) else np.zeros(0, bool)
    target = np.full(size + (2,), np.nan, np.float32)
    target[defined] = points[:, :2]
    visible = np.zeros(size, bool)
    visible[defined] = vis
    return PairTruth(target, visible, defined, synth_face_mask(dst_tri))


class _Sample:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _as_sample(s):
    if isinstance(s, dict):
        return _Sample(**s)
    return s


# ------------------------------------------------------------------ pairs
@dataclass
class SynthPair:
    """Two renders of one fitted photo: ``src`` and ``dst`` (:class:`dffx.synth.SynthSample`),
    their yaw difference in degrees (dst - src) and the name of its group."""

    src: object
    dst: object
    yaw_diff_deg: float
    group: str


def fit_sources(synth, photos, limit: int | None = None) -> list:
    """Fit the model to annotated photos and prepare them for rendering.

    Args:
        synth: :class:`dffx.synth.Synthesizer`.
        photos: a 300W-style folder (images with 68-point ``.pts``, :func:`dffx.data.load_300w`)
            or a list of ``(image uint8 BGR, landmarks float (68, 2))``.
        limit: first N photos.

    Returns:
        list of :class:`dffx.synth.render.PreparedSource`.

    Raises:
        ValueError: no annotated photo; OSError: unreadable image.
    """
    import cv2

    from ..synth import ContourLines, fit_photo

    if isinstance(photos, (str, Path)):
        from ..data import load_300w

        items = []
        for s in load_300w(Path(photos), limit=limit)[0]:
            image = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
            if image is None:
                raise OSError(f"could not read {s.image_path}")
            items.append((image, s.landmarks))
    else:
        items = list(photos)[:limit]
    if not items:
        raise ValueError(f"no annotated photo in {photos}")
    contour = ContourLines(synth.model)
    out = []
    for k, (image, landmarks) in enumerate(items):
        fit = fit_photo(synth.model, np.asarray(landmarks, np.float64), contour=contour)
        out.append(synth.prepare(image, fit.camera, fit.p_id, fit.p_exp, k))
    return out


def held_out_sources(synth, synth_root, limit: int | None = None) -> list:
    """The held-out photos of a ``dffx synth`` set (never seen in training), prepared for rendering
    from their stored fits.

    Raises:
        FileNotFoundError: not a synth folder; ValueError: no held-out photo; OSError: unreadable photo.
    """
    from ..synth.pipeline import read_source_photo
    from ..synth.store import read_manifest

    root = Path(synth_root)
    manifest = read_manifest(root)
    with np.load(root / "fits.npz") as z:
        fits = {k: z[k] for k in z.files}
    photos_root = Path(manifest["settings"]["photos"])
    idx = np.flatnonzero(fits["held_out"])[:limit]
    if len(idx) == 0:
        raise ValueError(f"{root}: no held-out photo (made with --holdout-fraction 0?)")
    out = []
    for k in idx:
        image = read_source_photo(photos_root, manifest["photos"][k])
        out.append(synth.prepare(image, fits["camera"][k], fits["p_id"][k], fits["p_exp"][k], int(k)))
    return out


def render_pair(synth, source, yaw_src_deg: float, yaw_dst_deg: float, rng: np.random.Generator,
                background=None) -> SynthPair:
    """Render one pair of views of ``source`` at two yaw angles (degrees).

    Pitch, roll and expression are drawn once (:func:`dffx.synth.sample_view`) and shared;
    light, face-box jitter and photometric augmentation are drawn per view.

    Args:
        synth: :class:`dffx.synth.Synthesizer`; source: a prepared source.
        yaw_src_deg, yaw_dst_deg: yaw of the two views, degrees.
        rng: random generator.
        background: uint8 (size, size, 3) BGR background of both views (None: mid grey).

    Returns:
        :class:`SynthPair`.
    """
    from ..synth import sample_view

    size = synth.size
    bg = np.full((size, size, 3), 128, np.uint8) if background is None else background
    a = sample_view(rng, synth.model.n_expression, source.p_exp)
    b = sample_view(rng, synth.model.n_expression, source.p_exp)
    b.pitch, b.roll, b.p_exp = a.pitch, a.roll, a.p_exp.copy()
    a.yaw, b.yaw = np.radians(yaw_src_deg), np.radians(yaw_dst_deg)
    diff = float(yaw_dst_deg - yaw_src_deg)
    return SynthPair(synth.render(source, a, bg, rng), synth.render(source, b, bg, rng), diff,
                     yaw_group(diff))


def render_pairs(synth, sources: list, pairs_per_group: int = 2, seed: int = 0, groups=YAW_BINS) -> list[SynthPair]:
    """Pairs for every source and yaw group: ``pairs_per_group`` pairs per source and group.

    A pair's yaw difference is uniform in the group's range (small 0-30, medium 30-60, large
    60-90 degrees), its first yaw uniform such that both stay within +-90 degrees, and its
    direction random. The background is a random crop of another source photo (the source's
    own photo when there is only one).

    Returns:
        list of :class:`SynthPair`, deterministic for a given seed.
    """
    from ..synth.background import random_background

    rng = np.random.default_rng(seed)
    out = []
    for k, source in enumerate(sources):
        for name, lo, hi in groups:
            for _ in range(pairs_per_group):
                diff = rng.uniform(lo, hi)
                first = rng.uniform(-90.0, 90.0 - diff)
                ya, yb = (first, first + diff) if rng.random() < 0.5 else (first + diff, first)
                other = sources[(k + 1 + rng.integers(len(sources) - 1)) % len(sources)] if len(sources) > 1 else source
                bg = random_background(other.image, synth.size, rng)
                out.append(render_pair(synth, source, ya, yb, rng, bg))
    return out


# ------------------------------------------------------------------ scoring
def _features(extractor, images):
    if hasattr(extractor, "extract"):
        return extractor.extract(images)
    return extractor(images)


def _count(n_points, vis_points, defined_points, matched_rows, err) -> dict:
    """Counts of one method on one pair (see the module docstring)."""
    vis = np.asarray(vis_points, bool)
    rows = np.asarray(matched_rows, np.int64)
    ok = vis[rows] & (err <= CORRECT_PX)
    hidden = np.asarray(defined_points, bool) & ~vis
    return {"points": int(n_points), "visible": int(vis.sum()), "matches": int(len(rows)), "correct": int(ok.sum()),
            "matched_visible": int(vis[rows].sum()), "hidden": int(hidden.sum()),
            "matched_hidden": int(hidden[rows].sum())}


def score_pair(pair: SynthPair, truth: PairTruth, src_features=None, dst_features=None, *,
               sparse_angle_deg: float = SPARSE_MAX_ANGLE_DEG, dense_angle_deg: float = DENSE_MAX_ANGLE_DEG,
               ratio: float = SIFT_RATIO, dense: bool = True) -> dict:
    """Match one pair with every method and count against the truth.

    Args:
        pair: :class:`SynthPair`; truth: its :func:`pair_truth`.
        src_features, dst_features: (C, H, W) DFF maps of the two images (None: SIFT only).
        sparse_angle_deg, dense_angle_deg, ratio: thresholds (paper: 30, 12, 1/1.3).
        dense: also run dense DFF matching.

    Returns:
        dict method -> counts dict (``points, visible, matches, correct, matched_visible,
        hidden, matched_hidden``); methods "sift", and with features "dff", "dff-top" (the
        DFF matches of smallest angle, as many as SIFT made) and "dff-dense".
    """
    src_mask = truth.defined
    kp = sift_keypoints(pair.src.image, src_mask)
    t_xy, t_vis, t_def = truth.at(kp.xy)
    kp = kp.select(t_def)          # keypoints whose nearest pixel has a truth
    t_xy, t_vis, t_def = t_xy[t_def], t_vis[t_def], t_def[t_def]
    res = sparse_match(pair.src.image, pair.dst.image, src_features, dst_features, src_mask, truth.dst_mask,
                       max_angle_deg=sparse_angle_deg, ratio=ratio, src_keypoints=kp)
    out = {}
    for method in ("dff", "sift"):
        if method in res:
            m = res[method]
            err = np.linalg.norm(m.dst_xy - t_xy[m.src_index], axis=1) if len(m) else np.zeros(0)
            out[method] = _count(len(kp), t_vis, t_def, m.src_index, err)
            if method == "dff":
                dff_match, dff_err = m, err
    if "dff" in out and "sift" in out:
        # Equal-count comparison: DFF's most confident matches, as many as SIFT made.
        top = np.argsort(dff_match.angle_deg, kind="stable")[:out["sift"]["matches"]]
        out["dff-top"] = _count(len(kp), t_vis, t_def, dff_match.src_index[top], dff_err[top])
    if dense and src_features is not None:
        m = dense_match(src_features, dst_features, src_mask, truth.dst_mask, max_angle_deg=dense_angle_deg)
        px = mask_pixels(src_mask).astype(np.int64)
        d_xy = truth.target_xy[px[:, 1], px[:, 0]]
        d_vis = truth.visible[px[:, 1], px[:, 0]]
        err = np.linalg.norm(m.dst_xy - d_xy[m.src_index], axis=1) if len(m) else np.zeros(0)
        out["dff-dense"] = _count(len(px), d_vis, np.ones(len(px), bool), m.src_index, err)
    return out


def evaluate_pairs(pairs: list[SynthPair], extractor, model, synth_or_mesh, *, dense: bool = True,
                   sparse_angle_deg: float = SPARSE_MAX_ANGLE_DEG, dense_angle_deg: float = DENSE_MAX_ANGLE_DEG,
                   ratio: float = SIFT_RATIO, progress: bool = False) -> dict:
    """The matching table over synthesized pairs with known correspondence.

    Args:
        pairs: :func:`render_pairs` output.
        extractor: a :class:`dffx.nn.DFFExtractor` (anything with ``.extract(images)`` or a
            callable ``images -> (B, C, H, W)``); None evaluates the SIFT baseline only.
        model, synth_or_mesh: face model and synthesizer the pairs were rendered with.
        dense, sparse_angle_deg, dense_angle_deg, ratio: see :func:`score_pair`.
        progress: tqdm bar.

    Returns:
        dict with ``"groups"``: group name ("small", "medium", "large", "all") -> {"pairs": n,
        method -> counts summed over the group's pairs plus the rates ``correct_rate``
        (correct / matches: precision), ``matching_score`` (correct / visible: the share of source
        points whose truth is visible that get a correct match, i.e. recall), ``valid_rate``
        (matched_visible / visible), ``hidden_matched_rate`` (matched_hidden / hidden); a rate is
        None when its denominator is 0}; and
        ``"settings"``: thresholds and the correctness radius. Format with :func:`format_table`.
    """
    from tqdm import tqdm

    names = [g[0] for g in YAW_BINS] + ["all"]
    table = {name: {"pairs": 0} for name in names}
    for pair in tqdm(pairs, desc="match pairs", unit="pair", disable=not progress):
        truth = pair_truth(pair.src, pair.dst, model, synth_or_mesh)
        feats = (None, None)
        if extractor is not None:
            f = _features(extractor, [pair.src.image, pair.dst.image])
            feats = (f[0], f[1])
        counts = score_pair(pair, truth, feats[0], feats[1], dense=dense, sparse_angle_deg=sparse_angle_deg,
                            dense_angle_deg=dense_angle_deg, ratio=ratio)
        for name in (pair.group, "all"):
            table[name]["pairs"] += 1
            for method, c in counts.items():
                acc = table[name].setdefault(method, dict.fromkeys(_COUNTS, 0))
                for key in _COUNTS:
                    acc[key] += c[key]
    for row in table.values():
        for method in METHODS:
            if method in row:
                c = row[method]
                c["correct_rate"] = c["correct"] / c["matches"] if c["matches"] else None
                c["matching_score"] = c["correct"] / c["visible"] if c["visible"] else None
                c["valid_rate"] = c["matched_visible"] / c["visible"] if c["visible"] else None
                c["hidden_matched_rate"] = c["matched_hidden"] / c["hidden"] if c["hidden"] else None
    return {"groups": table, "settings": {"correct_px": CORRECT_PX, "sparse_angle_deg": sparse_angle_deg,
                                          "dense_angle_deg": dense_angle_deg, "sift_ratio": ratio}}


def format_table(table: dict) -> str:
    """Markdown table of :func:`evaluate_pairs` output, one row per (yaw group, method)."""
    s = table["settings"]
    label = {"dff": f"DFF sparse (< {s['sparse_angle_deg']:g} deg)",
             "dff-top": "DFF sparse at SIFT's count (smallest angles)",
             "sift": f"SIFT sparse (ratio {s['sift_ratio']:.3f})",
             "dff-dense": f"DFF dense (< {s['dense_angle_deg']:g} deg)"}
    groups = {"small": "small (< 30 deg)", "medium": "medium (30-60 deg)", "large": "large (> 60 deg)", "all": "all"}

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [f"| yaw difference | pairs | method | source points | with visible truth | matches | "
             f"correct (<= {s['correct_px']:g} px, of matches) | correct, of points with visible truth | "
             f"valid (matched / visible) | hidden matched |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in table["groups"].items():
        if not row["pairs"]:
            continue
        for method in METHODS:
            if method not in row:
                continue
            c = row[method]
            lines.append(f"| {groups.get(name, name)} | {row['pairs']} | {label[method]} | {c['points']} | "
                         f"{c['visible']} | {c['matches']} | {pct(c['correct_rate'])} | {pct(c['matching_score'])} | "
                         f"{pct(c['valid_rate'])} | "
                         f"{pct(c['hidden_matched_rate'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m dffx.match.evaluate``: the matching table on synthesized pairs, printed as markdown.

    Sources: ``--synth DIR`` (held-out photos of a synth set) or ``--photos DIR`` (300W-style
    annotated photos, fitted here). ``--weights`` gives the DFF network; without it only SIFT runs.
    """
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m dffx.match.evaluate", description=main.__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synth", help="dffx synth folder: use its held-out photos")
    src.add_argument("--photos", help="folder of photos with 68-point .pts files")
    p.add_argument("--weights", default=None, help="DFF weights (default: SIFT only)")
    p.add_argument("--limit", type=int, default=5, help="number of source photos")
    p.add_argument("--pairs-per-group", type=int, default=2, help="pairs per photo and yaw group")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-dense", action="store_true", help="skip dense matching")
    p.add_argument("--model", default=None, help="face model (default: $DFFX_FACE_MODEL)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    args = p.parse_args(argv)

    from ..model import load_face_model
    from ..synth import Synthesizer

    model = load_face_model(args.model)
    synth = Synthesizer(model, 224)
    sources = (held_out_sources(synth, args.synth, args.limit) if args.synth
               else fit_sources(synth, args.photos, args.limit))
    extractor = None
    if args.weights:
        from ..nn import DFFExtractor

        extractor = DFFExtractor(args.weights)
    pairs = render_pairs(synth, sources, args.pairs_per_group, args.seed)
    table = evaluate_pairs(pairs, extractor, model, synth, dense=not args.no_dense, progress=True)
    print(json.dumps(table, indent=2) if args.json else format_table(table))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
