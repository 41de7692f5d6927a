"""Regularised least-squares 3DMM fit to 2D landmarks (paper eq. 6-8 and 11), C++/Eigen kernel."""

from __future__ import annotations

import numpy as np

from .._native import _C
from .._validate import as_float_array


def _landmark_arrays(model, landmark_index):
    if hasattr(model, "landmark_model"):
        return model.landmark_model(landmark_index)
    mean, basis, prior = model
    return (as_float_array(mean, "mean", ndim=2, last=3), as_float_array(basis, "basis", ndim=3),
            as_float_array(prior, "prior_variance", ndim=1))


def _inputs(model, targets, cameras, landmark_weights, landmark_index):
    mean, basis, prior = _landmark_arrays(model, landmark_index)
    L = mean.shape[0]
    x = as_float_array(targets, "targets", last=2)
    single = x.ndim == 2
    x = x[None] if single else x
    if x.ndim != 3 or x.shape[1] != L:
        raise ValueError(f"targets must have shape ({L}, 2) or (B, {L}, 2), got {np.shape(targets)}")
    w = as_float_array(cameras, "cameras", last=6).reshape(-1, 6)
    if w.shape[0] != x.shape[0]:
        raise ValueError(f"cameras batch {w.shape[0]} != targets batch {x.shape[0]}")
    c = None
    if landmark_weights is not None:
        c = as_float_array(landmark_weights, "landmark_weights").reshape(x.shape[0], -1)
        if c.shape[1] != L:
            raise ValueError(f"landmark_weights must have {L} entries per face, got {np.shape(landmark_weights)}")
        if np.any(c < 0):
            raise ValueError("landmark_weights must be >= 0")
    return mean, basis, prior, x, w, c, single


def fit_shape(model, targets, cameras, *, landmark_weights=None, landmark_index=None, w_lan: float = 1.0,
              w_reg: float = 1.0, threads: int = 0) -> np.ndarray:
    """Shape parameters p = (p_id, p_exp) whose projected landmarks best match the targets (eq. 6-8).

    Minimises ``w_lan * sum_l c_l ||X_l - Y_l(w, p)||^2 + w_reg * p^T D^-1 p`` per face, where
    Y projects the model's landmark vertices with the weak-perspective camera w (eq. 2).
    Linear in p: the C++/Eigen kernel forms and solves the normal equations in double precision
    (from float32 inputs), one face per thread. Twin: ``dffx.ops._reference.fit_shape_reference``.

    Args:
        model: a :class:`dffx.FaceModel`, or a tuple (mean (L, 3), basis (L, 3, M), prior_variance (M,)).
        targets: (L, 2) or (B, L, 2) target landmarks X in pixels.
        cameras: (6,) or (B, 6) cameras w = (s, pitch, yaw, roll, tx, ty), radians.
        landmark_weights: optional (L,) / (B, L) weights c_l >= 0 (e.g. 0 for hidden landmarks).
        landmark_index: vertex indices of the targets when ``model`` is a FaceModel (default its 68).
        w_lan, w_reg: the weights of eq. 6 (w_lan > 0, w_reg >= 0; pixels^2 vs. prior units).
        threads: CPU threads (0 = all).

    Returns:
        float32 (M,) or (B, M); for a FaceModel the first ``n_identity`` entries are p_id.

    Raises:
        ValueError: wrong shapes, NaN/inf, negative weights, or a singular problem (w_reg = 0
            with too few landmarks).
    """
    mean, basis, prior, x, w, c, single = _inputs(model, targets, cameras, landmark_weights, landmark_index)
    p = _C.fit_shape(mean, basis, prior, x, c, w, float(w_lan), float(w_reg), threads)
    return p[0] if single else p


def fit_shared_shape(model, targets, cameras, *, landmark_weights=None, landmark_index=None, w_lan: float = 1.0,
                     w_reg: float = 1.0) -> np.ndarray:
    """One shape for many images (eq. 11): the generic face of the descent-direction training.

    Minimises ``(w_lan / N) sum_i sum_l c_il ||X_il - Y_l(w_i, p)||^2 + w_reg * p^T D^-1 p``.
    Arguments as :func:`fit_shape` with a leading image axis N; returns float32 (M,).
    Twin: ``dffx.ops._reference.fit_shared_shape_reference``.
    """
    mean, basis, prior, x, w, c, _ = _inputs(model, targets, cameras, landmark_weights, landmark_index)
    return _C.fit_shared_shape(mean, basis, prior, x, c, w, float(w_lan), float(w_reg))
