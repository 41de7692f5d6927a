"""Head pose fused into the descent directions (issue 27): one set of directions per yaw sector.

A linear descent direction is a compromise over every pose it was trained on; at large yaw the
features of a half-hidden face move differently from a frontal one's. After the cascade's first
(generic) stage the camera carries a yaw estimate; later stages blend sector-specific directions
by that estimate (Xiong and De la Torre's global SDM does the same with hard domains):

    X_hat = X + sum_s a_s(yaw) (R_X,s F + b_X,s),      sum_s a_s = 1,

with a_s the hat functions of :func:`sector_weights`: linear between neighbouring sector centres,
so that no seam shows when the yaw estimate crosses from one sector to the next.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SECTOR_YAW = (-60.0, 0.0, 60.0)   # sector centres, degrees (renders span +-90 uniformly)


def check_sector_yaw(centres) -> np.ndarray:
    """The sector centres as float64 (S,) degrees, strictly increasing, at least two.

    Raises:
        ValueError: fewer than two centres, not finite, or not strictly increasing.
    """
    c = np.asarray(centres, np.float64).reshape(-1)
    if len(c) < 2 or not np.all(np.isfinite(c)) or np.any(np.diff(c) <= 0):
        raise ValueError(f"sector yaw centres must be at least two finite, strictly increasing degrees; got {c.tolist()}")
    return c


def sector_weights(yaw: np.ndarray, centres) -> np.ndarray:
    """Blend weights a_s(yaw) of the yaw sectors: float64 (B, S), each row sums to 1.

    Args:
        yaw: (B,) yaw in radians (the camera's, :mod:`dffx.geometry.camera`).
        centres: (S,) sector centres in degrees (:func:`check_sector_yaw`).

    A yaw between two centres is shared between them linearly; beyond the outer centres it
    belongs to the outer sector alone.

    Raises:
        ValueError: bad centres; a non-finite yaw.

    >>> import numpy as np
    >>> sector_weights(np.radians([-75.0, -30.0, 15.0]), (-60, 0, 60))
    array([[1.  , 0.  , 0.  ],
           [0.5 , 0.5 , 0.  ],
           [0.  , 0.75, 0.25]])
    """
    c = check_sector_yaw(centres)
    deg = np.degrees(np.asarray(yaw, np.float64).reshape(-1))
    if not np.all(np.isfinite(deg)):
        raise ValueError("sector_weights: the yaw estimate is not finite")
    deg = np.clip(deg, c[0], c[-1])
    hi = np.clip(np.searchsorted(c, deg, side="right"), 1, len(c) - 1)
    t = (deg - c[hi - 1]) / (c[hi] - c[hi - 1])
    weights = np.zeros((len(deg), len(c)))
    rows = np.arange(len(deg))
    weights[rows, hi - 1] = 1.0 - t
    weights[rows, hi] += t
    return weights
