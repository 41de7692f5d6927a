"""The synthesis page's fit and cost tables (tools/synth_report.py -> tools/results_tables.py)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import results_tables  # noqa: E402
import synth_report  # noqa: E402


def _fake_set(root, yaw_deg, nme, held_out):
    cams = np.zeros((len(yaw_deg), 6))
    cams[:, 2] = np.radians(yaw_deg)
    np.savez(root / "fits.npz", camera=cams, nme_io=np.asarray(nme) / 100.0, held_out=np.asarray(held_out),
             rms_px=np.full(len(nme), 3.0))
    run = {"samples": 10, "workers": 2, "fit_seconds": 6.0, "render_seconds": 120.0, "ms_per_sample": 12.0}
    (root / "manifest.json").write_text(json.dumps({"settings": {"views": 10}, "last_run": run}))


def test_fits_are_binned_by_fitted_yaw_and_rendered(tmp_path):
    # yaw signs do not matter; 90 degrees falls in the last bin
    _fake_set(tmp_path, [-5.0, 10.0, 16.0, -20.0, 90.0], [2.0, 4.0, 3.0, 5.0, 6.0], [False, True, False, False, True])
    s = synth_report.summarise(tmp_path)
    assert s["fit"]["bins"] == {"0-15": {"photos": 2, "nme": pytest.approx(3.0)},
                                "15-30": {"photos": 2, "nme": pytest.approx(4.0)},
                                "30-90": {"photos": 1, "nme": pytest.approx(6.0)}}
    assert s["fit"]["mean"] == pytest.approx(4.0) and s["fit"]["median"] == pytest.approx(4.0)
    assert (s["fit"]["held_out_photos"], s["fit"]["held_out_mean"]) == (2, pytest.approx(5.0))
    assert s["cost"]["bytes"] == sum(p.stat().st_size for p in tmp_path.iterdir())
    assert results_tables.row("synth_fit", "fake", s, False) == [
        "| fake | 3.00 (2) | 4.00 (2) | 6.00 (1) | 4.00 (4.00) of 5 | 5.00 of 2 |"]
    cost = results_tables.row("synth_cost", "fake", s, False)[0]
    assert cost.startswith("| fake | 10 | 2 | 0.1 min | 2 min | 12 ms | ")


def test_a_folder_that_is_not_a_finished_set_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dffx synth output folder"):
        synth_report.summarise(tmp_path)
    _fake_set(tmp_path, [0.0], [1.0], [False])
    (tmp_path / "manifest.json").write_text(json.dumps({"settings": {}}))
    with pytest.raises(ValueError, match="no finished run"):
        synth_report.summarise(tmp_path)
    assert synth_report.main([str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
