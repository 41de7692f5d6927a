"""tools/device/latency.py, the stage-by-stage latency report the GPU check runs (benchmarks/README.md)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

import dffx

REPO = Path(__file__).resolve().parents[1]
STAGES = ("extract", "extract-b8", "iteration", "initial-geometry", "cascade", "align")


def test_latency_script_times_every_stage(tmp_path, ict_dir):
    pytest.importorskip("torch")
    photo = REPO / "examples" / "face_generated.png"
    box = dffx.detect_faces(cv2.imread(str(photo)))[0, :4]
    out = tmp_path / "latency.json"
    run = subprocess.run([sys.executable, str(REPO / "tools" / "device" / "latency.py"), str(photo),
                          "--box", ",".join(f"{v:.1f}" for v in box), "--device", "cpu", "--repeat", "2",
                          "--json", str(out)], capture_output=True, text=True,
                         env={**os.environ, "DFFX_FACE_MODEL": str(ict_dir)})
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["stages"] == 3 and report["precision"] == "float32"
    for stage in STAGES:
        assert math.isfinite(report[stage]) and report[stage] > 0, stage


def test_latency_script_names_an_unreadable_photo(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "tools" / "device" / "latency.py"), str(tmp_path / "none.jpg"),
                          "--box", "0,0,10,10"], capture_output=True, text=True)
    assert run.returncode != 0 and "cannot read image" in run.stderr
