"""Pictures of matches: Fig. 8 (sparse, lines between matched points) and Fig. 9 (dense, colour coding).

All images are uint8 BGR (OpenCV). Coordinates follow :mod:`dffx.match.dense`.
"""

from __future__ import annotations

import numpy as np

from .dense import Matches, as_mask

_GAP = 4                      # pixels between panels
_LABEL_HEIGHT = 18


def position_colours(mask, xy=None) -> np.ndarray:
    """Smooth colour field over a face region (the source colour code of Fig. 9).

    The mask's bounding box is mapped to u, v in [0, 1] (u left to right, v top to bottom) and
    coloured ``R = u, G = v, B = 1 - (u + v) / 2``: blue at the top left, red-magenta top
    right, green bottom left, yellow bottom right, every position a different colour.

    Args:
        mask: bool (H, W) face mask (must contain a True pixel).
        xy: optional (N, 2) points ``(x, y)``; when given their colours are returned instead.

    Returns:
        uint8 (H, W, 3) BGR image (0 outside the mask), or uint8 (N, 3) BGR colours of ``xy``.

    Raises:
        ValueError: empty mask.
    """
    m = np.asarray(mask, bool)
    if m.ndim != 2 or not m.any():
        raise ValueError("position_colours needs a non-empty bool (H, W) mask")
    ys, xs = np.nonzero(m)
    lo = np.array([xs.min(), ys.min()], np.float64)
    span = np.maximum(np.array([xs.max(), ys.max()], np.float64) - lo, 1.0)

    def colour(points):
        uv = np.clip((np.asarray(points, np.float64) - lo) / span, 0.0, 1.0)
        u, v = uv[:, 0], uv[:, 1]
        bgr = np.stack([1.0 - (u + v) / 2, v, u], axis=1)
        return np.round(255 * bgr).astype(np.uint8)

    if xy is not None:
        return colour(np.asarray(xy, np.float64).reshape(-1, 2))
    out = np.zeros(m.shape + (3,), np.uint8)
    out[ys, xs] = colour(np.stack([xs, ys], axis=1))
    return out


def _bgr(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"image must be a non-empty uint8 (H, W) or (H, W, 3) array, got {img.dtype} {img.shape}")
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def _dim(image: np.ndarray, factor: float = 0.35) -> np.ndarray:
    """A darkened grey copy of an image (context under colour codes)."""
    grey = _bgr(image).mean(axis=2, keepdims=True)
    return np.repeat(np.round(grey * factor), 3, axis=2).astype(np.uint8)


def _hstack(panels: list[np.ndarray]) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    out = []
    for i, p in enumerate(panels):
        pad = np.zeros((h, p.shape[1], 3), np.uint8)
        pad[: p.shape[0]] = p
        out.append(pad)
        if i + 1 < len(panels):
            out.append(np.full((h, _GAP, 3), 255, np.uint8))
    return np.concatenate(out, axis=1)


def _vstack(rows: list[np.ndarray]) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    out = []
    for i, r in enumerate(rows):
        pad = np.zeros((r.shape[0], w, 3), np.uint8)
        pad[:, : r.shape[1]] = r
        out.append(pad)
        if i + 1 < len(rows):
            out.append(np.full((_GAP, w, 3), 255, np.uint8))
    return np.concatenate(out, axis=0)


def _label(row: np.ndarray, text: str) -> np.ndarray:
    import cv2

    bar = np.full((_LABEL_HEIGHT, row.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, _LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, row], axis=0)


def dense_colour_code(matches: Matches, src_shape, dst_shape, src_mask, colours=None):
    """The two colour-coded maps of Fig. 9.

    Args:
        matches: dense :class:`Matches` (integer pixel positions).
        src_shape, dst_shape: (H, W) of the source and target images.
        src_mask: bool source face mask (defines the colour field, :func:`position_colours`).
        colours: optional uint8 (H, W, 3) source colour field to use instead.

    Returns:
        (src_code, dst_code, dst_hit): uint8 (H, W, 3) source field restricted to matched source
        pixels; uint8 (H', W', 3) target image where each matched target pixel has the mean
        colour of the source pixels matched to it; bool (H', W') target pixels hit.
    """
    sm = as_mask(src_mask, tuple(src_shape), "src_mask")
    field = position_colours(sm) if colours is None else np.asarray(colours, np.uint8)
    s = np.round(matches.src_xy).astype(np.int64)
    d = np.round(matches.dst_xy).astype(np.int64)
    src_code = np.zeros(tuple(src_shape) + (3,), np.uint8)
    src_code[s[:, 1], s[:, 0]] = field[s[:, 1], s[:, 0]]
    h, w = dst_shape
    flat = d[:, 1] * w + d[:, 0]
    total = np.zeros((h * w, 3), np.float64)
    np.add.at(total, flat, field[s[:, 1], s[:, 0]].astype(np.float64))
    count = np.bincount(flat, minlength=h * w).astype(np.float64)
    hit = count > 0
    dst_code = np.zeros((h * w, 3), np.uint8)
    dst_code[hit] = np.round(total[hit] / count[hit, None]).astype(np.uint8)
    return src_code, dst_code.reshape(h, w, 3), hit.reshape(h, w)


def draw_dense(src_image, dst_image, matches: Matches, src_mask=None, dst_mask=None) -> np.ndarray:
    """Fig. 9 picture of a dense match: two rows, the images on top and their colour codes below.

    The source face is coloured by position (:func:`position_colours`); every target pixel
    matched by some source pixel takes that pixel's colour (the mean when several map to it).
    Unmatched face pixels are drawn mid grey, everything else as a darkened grey image.

    Args:
        src_image, dst_image: uint8 BGR images; matches: :class:`Matches` from
            :func:`dffx.match.dense_match` on them; src_mask, dst_mask: their face masks.

    Returns:
        uint8 BGR picture.
    """
    src, dst = _bgr(src_image), _bgr(dst_image)
    sm = as_mask(src_mask, src.shape[:2], "src_mask")
    dm = as_mask(dst_mask, dst.shape[:2], "dst_mask")
    src_code, dst_code, hit = dense_colour_code(matches, src.shape[:2], dst.shape[:2], sm)
    panels = []
    for image, mask, code, matched in ((src, sm, src_code, _matched_src(matches, sm)),
                                       (dst, dm, dst_code, hit)):
        out = _dim(image)
        out[mask & ~matched] = 128
        out[matched] = code[matched]
        panels.append(out)
    top = _label(_hstack([src, dst]), "source | target")
    limit = matches.params.get("max_angle_deg")
    bottom = _label(_hstack(panels), f"DFF dense: {len(matches)} / {matches.n_source} face px matched"
                    + (f" (< {limit:g} deg)" if limit is not None else ""))
    return _vstack([top, bottom])


def _matched_src(matches: Matches, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, bool)
    s = np.round(matches.src_xy).astype(np.int64)
    out[s[:, 1], s[:, 0]] = True
    return out


def draw_sparse(src_image, dst_image, rows: dict, *, correct: dict | None = None, src_mask=None,
                max_lines: int | None = None) -> np.ndarray:
    """Fig. 8 picture: one row per method, source | target side by side with a line per match.

    Args:
        src_image, dst_image: uint8 BGR images.
        rows: dict name -> :class:`Matches` (e.g. ``{"DFF": ..., "SIFT": ...}``), drawn in order.
        correct: optional dict name -> bool (M,) per match; correct matches are drawn green,
            wrong ones red. Without it, lines take the colour of their source position
            (:func:`position_colours` over ``src_mask``, or over the whole image), so the same
            source point has the same colour in every row.
        src_mask: bool source face mask for the colour field.
        max_lines: draw at most this many matches per row (evenly spaced over the list).

    Returns:
        uint8 BGR picture.
    """
    import cv2

    src, dst = _bgr(src_image), _bgr(dst_image)
    sm = as_mask(src_mask, src.shape[:2], "src_mask")
    offset = src.shape[1] + _GAP
    out_rows = []
    for name, m in rows.items():
        canvas = _hstack([src, dst]).copy()
        n = len(m)
        pick = np.arange(n) if max_lines is None or n <= max_lines else np.linspace(0, n - 1, max_lines).astype(int)
        if correct is not None and name in correct:
            ok = np.asarray(correct[name], bool)
            colours = np.where(ok[:, None], np.array([[0, 200, 0]]), np.array([[0, 0, 255]])).astype(np.uint8)
        else:
            colours = position_colours(sm, m.src_xy) if n else np.zeros((0, 3), np.uint8)
        for i in pick:
            p = (int(round(float(m.src_xy[i, 0]))), int(round(float(m.src_xy[i, 1]))))
            q = (int(round(float(m.dst_xy[i, 0]))) + offset, int(round(float(m.dst_xy[i, 1]))))
            c = tuple(int(v) for v in colours[i])
            cv2.line(canvas, p, q, c, 1, cv2.LINE_AA)
            cv2.circle(canvas, p, 2, c, -1, cv2.LINE_AA)
            cv2.circle(canvas, q, 2, c, -1, cv2.LINE_AA)
        text = f"{name}: {n} matches of {m.n_source} source points"
        if correct is not None and name in correct and n:
            text += f", {100 * np.mean(correct[name]):.0f}% correct"
        out_rows.append(_label(canvas, text))
    if not out_rows:
        raise ValueError("rows is empty: nothing to draw")
    return _vstack(out_rows)
