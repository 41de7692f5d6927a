"""Yaw-sector blending of the descent directions (issue 27, dffx.align.pose_sectors)."""

from __future__ import annotations

import numpy as np
import pytest

from dffx.align.pose_sectors import check_sector_yaw, sector_weights


def test_sector_weights_interpolate_linearly_between_centres():
    centres = (-60.0, 0.0, 60.0)
    yaw = np.radians([-90.0, -60.0, -30.0, 0.0, 15.0, 60.0, 80.0])
    a = sector_weights(yaw, centres)
    expected = np.array([[1, 0, 0], [1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.75, 0.25], [0, 0, 1], [0, 0, 1]])
    np.testing.assert_allclose(a, expected, atol=1e-12)
    # no seam: the weights are continuous in yaw and always sum to 1
    fine = sector_weights(np.radians(np.linspace(-100, 100, 2001)), centres)
    np.testing.assert_allclose(fine.sum(1), 1.0)
    assert np.abs(np.diff(fine, axis=0)).max() < 0.02


def test_sector_weights_reject_bad_input():
    for bad in ((0.0,), (10.0, 10.0), (30.0, -30.0), (0.0, np.nan)):
        with pytest.raises(ValueError, match="strictly increasing"):
            check_sector_yaw(bad)
    with pytest.raises(ValueError, match="not finite"):
        sector_weights(np.array([0.1, np.nan]), (-30, 30))


def _sector_cascade(rng, D=5, S=2):
    from dffx.align import Cascade

    return Cascade("dff", np.r_[2.0, 0, 0, 0, 112, 112], rng.normal(size=(1, D + 1, 136)).astype(np.float32),
                   rng.normal(size=(1, D + 1, 6)).astype(np.float32), sector_yaw=np.array([-30.0, 30.0][:S]),
                   R_X_sectors=rng.normal(size=(2, S, D + 1, 136)).astype(np.float32),
                   R_w_sectors=rng.normal(size=(2, S, D + 1, 6)).astype(np.float32))


def test_sector_stage_blends_the_sector_directions_by_the_current_yaw():
    rng = np.random.default_rng(0)
    c = _sector_cascade(rng)
    assert c.stages == 3 and c.has_sectors
    Z = rng.normal(size=(3, 6)).astype(np.float32)
    camera = np.zeros((3, 6))
    camera[:, 2] = np.radians([-45.0, 0.0, 30.0])
    dX, dw = c.directions(2, Z, camera)
    R0, R1 = c.R_X_sectors[1, 0], c.R_X_sectors[1, 1]
    np.testing.assert_allclose(dX[0], Z[0] @ R0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dX[1], 0.5 * Z[1] @ R0 + 0.5 * Z[1] @ R1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw[2], Z[2] @ c.R_w_sectors[1, 1], rtol=1e-5, atol=1e-5)
    # the generic first stage ignores the pose
    np.testing.assert_allclose(c.directions(0, Z, camera)[0], Z @ c.R_X[0], rtol=1e-6)


def test_sector_cascade_file_roundtrip_and_refusals(tmp_path):
    from dffx.align import Cascade

    rng = np.random.default_rng(1)
    c = _sector_cascade(rng)
    d = Cascade.load(c.save(tmp_path / "s.npz"))
    assert d.stages == 3
    for name in ("sector_yaw", "R_X_sectors", "R_w_sectors"):
        np.testing.assert_array_equal(getattr(d, name), getattr(c, name))
    # a file with only part of the sector arrays, or shapes that disagree, is refused by name
    with np.load(tmp_path / "s.npz") as z:
        arrays = dict(z)
    np.savez(tmp_path / "part.npz", **{k: v for k, v in arrays.items() if k != "R_w_sectors"})
    with pytest.raises(ValueError, match="part.npz"):
        Cascade.load(tmp_path / "part.npz")
    np.savez(tmp_path / "shape.npz", **{**arrays, "R_X_sectors": arrays["R_X_sectors"][:, :, :3]})
    with pytest.raises(ValueError, match="shape.npz"):
        Cascade.load(tmp_path / "shape.npz")


def test_compact_storage_rounds_the_directions_and_compresses(tmp_path):
    """info["significand_bits"]: directions within 2^-(b+1) relative of the exact ones, a smaller
    file (the shipped three-sector cascade must stay under the repository's 16 MB per file),
    kept through a load and a save; bits outside 10..23 are refused."""
    from dffx.align import Cascade
    from dffx.align.cascade import round_significands

    rng = np.random.default_rng(2)
    c = _sector_cascade(rng, D=400)
    exact = c.save(tmp_path / "exact.npz")
    c.info["significand_bits"] = 15
    compact = c.save(tmp_path / "compact.npz")
    assert compact.stat().st_size < 0.85 * exact.stat().st_size
    d = Cascade.load(compact)
    for name in ("R_X", "R_w", "R_X_sectors", "R_w_sectors"):
        want, got = getattr(c, name), getattr(d, name)
        assert np.all(np.abs(got - want) <= 2.0 ** -16 * np.abs(want))
    again = Cascade.load(d.save(tmp_path / "again.npz"))  # the setting travels in info
    np.testing.assert_array_equal(again.R_X_sectors, d.R_X_sectors)
    for bad in (9, 24, 15.0):
        with pytest.raises(ValueError, match="significand_bits"):
            round_significands(np.ones(3), bad)
