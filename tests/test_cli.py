"""The dffx command line: info (text, JSON, cmake dir) and render-depth on the real model."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

import dffx
import dffx._C as C
from dffx.config import cache_dir


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "dffx", *args], capture_output=True, text=True, env=env)


def test_info_json_reports_the_build():
    out = run("info", "--json")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["version"] == dffx.__version__ == C.version()
    assert facts["cuda_compiled"] == bool(C.cuda_compiled())
    assert facts["native_backend"] == ("cpu+cuda" if C.cuda_compiled() else "cpu")
    assert facts["cpu_kernels"] in ("avx512f", "avx2+fma", "baseline")
    assert facts["gpu_visible"] == (C.cuda_device_count() > 0)
    assert (Path(facts["cmake_dir"]) / "dffxConfig.cmake").is_file()
    assert (Path(facts["include_dir"]) / "dffx" / "dffx.hpp").is_file()
    assert Path(facts["library"]).is_file()
    assert {"dff_default.pt", "dff_default.onnx", "cascade_dff.npz", "cascade_sift.npz",
            "mtcnn_box_calibration.json"} <= set(facts["weights"])
    assert facts["face_detectors"] == ["mtcnn", "haar"]
    assert facts["cache_dir"] == (str(cache_dir()) if cache_dir() else None)
    assert Path(run("info", "--cmake-dir").stdout.strip()) == Path(facts["cmake_dir"])
    assert "native_backend" in run("info").stdout


def test_render_depth_writes_three_yaw_views(tmp_path, ict_dir):
    out = run("render-depth", "--model", str(ict_dir), "--out", str(tmp_path), "--size", "96")
    assert out.returncode == 0, out.stderr
    images = {p.name: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(tmp_path.glob("*.png"))}
    assert sorted(images) == ["mean_face_depth_yaw+000.png", "mean_face_depth_yaw+045.png",
                              "mean_face_depth_yaw+090.png"]
    assert all(img.shape == (96, 96) for img in images.values())
    # frontal: a left-right symmetric silhouette; turned views lose it and show less face area
    masks = [images[name] > 0 for name in sorted(images)]
    symmetry = [(m == m[:, ::-1]).mean() for m in masks]
    assert symmetry[0] > 0.97 and symmetry[2] < 0.95
    areas = [m.sum() for m in masks]
    assert areas[0] > areas[1] > areas[2] > 0.3 * areas[0]


def test_missing_model_is_a_one_line_error(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "DFFX_FACE_MODEL"}
    out = run("render-depth", "--out", str(tmp_path), env=env)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "DFFX_FACE_MODEL" in out.stderr


def test_import_and_command_line_do_not_load_torch():
    # `import dffx` and building every `dffx` sub-command must stay free of PyTorch (about a
    # second of start-up); the network names load it on first use.
    code = ("import sys, dffx, dffx.cli, dffx.nn; dffx.cli.build_parser(); "
            "print('torch' in sys.modules, 'cv2' in sys.modules); "
            "dffx.DFFExtractor; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True"]


def test_top_level_names_are_the_submodules_objects():
    from dffx.align.aligner import FaceAligner, FaceAlignment, draw_alignment
    from dffx.detect import detect_faces
    from dffx.nn.extractor import DFFExtractor

    assert (dffx.DFFExtractor, dffx.FaceAligner, dffx.FaceAlignment, dffx.draw_alignment, dffx.detect_faces) == (
        DFFExtractor, FaceAligner, FaceAlignment, draw_alignment, detect_faces)
    assert set(dffx.__all__) <= set(dir(dffx))
    with pytest.raises(AttributeError, match="no_such_name"):
        dffx.no_such_name
