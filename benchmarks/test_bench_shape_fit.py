"""Shape-fit benchmarks (paper eq. 6-8 and 11): the C++/Eigen kernel vs. the NumPy reference twins.

Groups:

* ``shape-fit-b1`` / ``shape-fit-b256``: ``dffx.fit_shape(model, targets, cameras, w_reg=W_REG)``
  on 1 / 256 independent 68-landmark problems (M = 135 parameters) vs. ``fit_shape_reference``;
* ``shape-fit-shared``: ``dffx.fit_shared_shape`` of one shape seen in N = 256 images (eq. 11)
  vs. ``fit_shared_shape_reference``.

The native call takes the FaceModel (it slices ``landmark_model()`` itself, which is part of
what is timed); the twin takes the pre-sliced arrays, as documented. Every benchmark checks its
parameters against the other implementation (rtol 1e-3, atol 1e-3).
"""

from __future__ import annotations

import numpy as np
import pytest

import dffx
from dffx.ops import _reference

W_LAN = 1.0
W_REG = 1.0   # prior units vs. pixels^2 (eq. 6); well-conditioned with 136 equations for 135 unknowns
RTOL = ATOL = 1e-3


def assert_same_params(p, expected, what: str) -> None:
    p, expected = np.asarray(p, np.float64), np.asarray(expected, np.float64)
    assert p.shape == expected.shape, f"{what}: shape {p.shape} != {expected.shape}"
    assert np.all(np.isfinite(p)), f"{what}: non-finite parameters"
    bad = ~np.isclose(p, expected, rtol=RTOL, atol=ATOL)
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {p.size} parameters differ from the reference "
                           f"(max |diff| {np.abs(p - expected).max():.3g}; rtol {RTOL}, atol {ATOL})")
    assert np.abs(expected).max() > 0.1, f"{what}: reference parameters are ~0 - bad benchmark input"


def _info(benchmark, group, backend, problem) -> None:
    benchmark.group = group
    benchmark.extra_info.update(backend=backend, batch=int(problem.targets.shape[0]),
                                landmarks=int(problem.targets.shape[1]), params=int(problem.basis.shape[2]),
                                w_lan=W_LAN, w_reg=W_REG)


def _fit_reference(pr):
    return _reference.fit_shape_reference(pr.mean, pr.basis, pr.prior, pr.targets, None, pr.cameras, W_LAN, W_REG)


def _shared_reference(pr):
    return _reference.fit_shared_shape_reference(pr.mean, pr.basis, pr.prior, pr.targets, None, pr.cameras,
                                                 W_LAN, W_REG)


# ---------------------------------------------------------------------------- per-face fit
@pytest.fixture(params=[1, 256], ids=["b1", "b256"])
def fit_problem(request):
    return request.getfixturevalue(f"fit_problem_b{request.param}")


def test_fit_shape_native(benchmark, face_model, fit_problem):
    pr = fit_problem
    _info(benchmark, f"shape-fit-b{len(pr.targets)}", "native-cpu", pr)
    p = benchmark(dffx.fit_shape, face_model, pr.targets, pr.cameras, w_lan=W_LAN, w_reg=W_REG)
    assert_same_params(p, _fit_reference(pr), "native fit_shape")


def test_fit_shape_reference(benchmark, face_model, fit_problem):
    pr = fit_problem
    _info(benchmark, f"shape-fit-b{len(pr.targets)}", "numpy-reference", pr)
    p = benchmark(_fit_reference, pr)
    assert_same_params(dffx.fit_shape(face_model, pr.targets, pr.cameras, w_lan=W_LAN, w_reg=W_REG), p,
                       "reference fit_shape vs native")


# ---------------------------------------------------------------------------- shared fit (eq. 11)
def test_fit_shared_shape_native(benchmark, face_model, shared_fit_problem_n256):
    pr = shared_fit_problem_n256
    _info(benchmark, "shape-fit-shared", "native-cpu", pr)
    p = benchmark(dffx.fit_shared_shape, face_model, pr.targets, pr.cameras, w_lan=W_LAN, w_reg=W_REG)
    assert p.shape == (pr.basis.shape[2],)
    assert_same_params(p, _shared_reference(pr), "native fit_shared_shape")


def test_fit_shared_shape_reference(benchmark, face_model, shared_fit_problem_n256):
    pr = shared_fit_problem_n256
    _info(benchmark, "shape-fit-shared", "numpy-reference", pr)
    p = benchmark(_shared_reference, pr)
    assert_same_params(dffx.fit_shared_shape(face_model, pr.targets, pr.cameras, w_lan=W_LAN, w_reg=W_REG), p,
                       "reference fit_shared_shape vs native")
