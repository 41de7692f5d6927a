"""The DFF network on ONNX Runtime: ``dffx export-onnx``, the shipped ``dff_default.onnx``,
:class:`dffx.nn.onnx_runtime.OnnxDFFExtractor` and ``FaceAligner(backend="onnxruntime")``,
each against the PyTorch network it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO

ort = pytest.importorskip("onnxruntime")

PHOTO = REPO / "examples" / "face_generated.png"
TOL = 1e-4  # unit features, ONNX Runtime against PyTorch (float32 both; measured 5e-6)


def torch_features(weights, images):
    from dffx.nn import DFFExtractor

    return DFFExtractor(weights, device="cpu").extract(images).numpy()


def test_shipped_onnx_file_is_the_shipped_default_network():
    from dffx.align.predictor import file_sha256
    from dffx.nn import default_weights_path
    from dffx.nn.onnx_runtime import OnnxDFFExtractor

    extractor = OnnxDFFExtractor()
    assert extractor.source_sha256 == file_sha256(default_weights_path()), \
        "dff_default.onnx is stale: re-export it with `dffx export-onnx --out python/dffx/weights/dff_default.onnx`"
    assert extractor.metadata["source_weights"] == "dff_default.pt"
    image = cv2.imread(str(PHOTO))
    features = extractor.extract(image)
    assert features.shape == (1, 32) + image.shape[:2] and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert np.abs(features - torch_features(None, image)).max() <= TOL


def test_export_of_another_network_runs_as_its_source_and_the_cascade_notices(tmp_path):
    """``dffx export-onnx --weights base8``: odd-sized images (padded to 16 and cropped back) and
    a batch in chunks match the PyTorch network; the DFF cascade, trained with the default
    network, warns that these features are not its own."""
    pytest.importorskip("onnx")
    from dffx.align.cascade import Cascade
    from dffx.align.predictor import cascade_features, default_cascade_path
    from dffx.cli import main
    from dffx.nn.onnx_runtime import OnnxDFFExtractor

    out = tmp_path / "base8.onnx"
    assert main(["export-onnx", "--weights", "base8", "--out", str(out)]) == 0
    extractor = OnnxDFFExtractor(out)
    assert extractor.metadata["source_weights"] == "dff_base8.pt"
    images = np.random.default_rng(0).integers(0, 256, (3, 37, 50, 3), dtype=np.uint8)
    features = extractor.extract(images, batch_size=2)
    assert features.shape == (3, 32, 37, 50) and features.flags.c_contiguous
    assert np.abs(features - torch_features("base8", images)).max() <= TOL
    with pytest.warns(UserWarning, match="not the network this cascade was trained with"):
        cascade_features(Cascade.load(default_cascade_path("dff")), weights=str(out), backend="onnxruntime")


def test_onnx_extractor_names_bad_files_and_images(tmp_path):
    from dffx.detect.mtcnn import weights_dir
    from dffx.nn.onnx_runtime import OnnxDFFExtractor

    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxDFFExtractor(tmp_path / "missing.onnx")
    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxDFFExtractor("nosuchnetwork")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        OnnxDFFExtractor(tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match="not a DFF network exported by dffx"):
        OnnxDFFExtractor(weights_dir() / "pnet.onnx")  # an ONNX network, but MTCNN's
    extractor = OnnxDFFExtractor()
    for bad, message in [(np.zeros((32, 32), np.uint8), "grayscale"), (np.zeros((32, 32, 3), np.float32), "uint8"),
                         (np.zeros((0, 32, 3), np.uint8), "empty"), ([], "empty image list")]:
        with pytest.raises(ValueError, match=message):
            extractor.extract(bad)
    with pytest.raises(ValueError, match="batch_size"):
        extractor.extract(np.zeros((32, 32, 3), np.uint8), batch_size=0)


def test_aligner_on_onnxruntime_matches_pytorch(face_model, aflw2000_dir):
    from conftest import _aflw2000_faces

    from dffx.align import FaceAligner

    on_torch = FaceAligner(model=face_model, backend="torch", device="cpu", refine=0)
    on_ort = FaceAligner(model=face_model, backend="onnxruntime", refine=0)
    for image, _, box in _aflw2000_faces(aflw2000_dir, ["image00050", "image00251", "image04331", "image00081"]):
        a, b = on_torch.align(image, box)[0], on_ort.align(image, box)[0]
        assert np.abs(a.landmarks - b.landmarks).max() < 0.2  # px; 0.08 at most on the 88 dev-photo faces
        assert np.array_equal(a.visible, b.visible)
    with pytest.raises(ValueError, match="float32"):
        FaceAligner(model=face_model, backend="onnxruntime", precision="bfloat16")
    with pytest.raises(ValueError, match="on the CPU"):
        FaceAligner(model=face_model, backend="onnxruntime", device="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        FaceAligner(model=face_model, backend="tensorrt")


def test_alignment_without_pytorch(tmp_path, ict_dir):
    """With PyTorch unimportable, ``dffx align`` picks the onnxruntime backend and writes the same
    landmarks as with PyTorch, and never imports it."""
    script = f"""
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
from dffx.cli import main
code = main(["align", {str(PHOTO)!r}, "--out", {str(tmp_path / "ort")!r}])
assert code == 0, code
assert sys.modules["torch"] is None
"""
    env = dict(os.environ, DFFX_FACE_MODEL=str(ict_dir))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    from dffx.cli import main

    assert main(["align", str(PHOTO), "--out", str(tmp_path / "torch"), "--backend", "torch"]) == 0
    ort_faces = json.loads((tmp_path / "ort" / "face_generated.json").read_text())["faces"]
    torch_faces = json.loads((tmp_path / "torch" / "face_generated.json").read_text())["faces"]
    assert len(ort_faces) == len(torch_faces) == 1
    assert np.abs(np.subtract(ort_faces[0]["landmarks"], torch_faces[0]["landmarks"])).max() <= 0.1


def test_eval_runs_the_onnxruntime_backend(face_model, aflw2000_dir):
    from dffx.align.options import EVAL_DEFAULTS
    from dffx.eval import EvalOptions, evaluate

    def summary(backend):
        return evaluate(EvalOptions(dataset="aflw2000-3d", root=aflw2000_dir, method="dff", limit=4, progress=False,
                                    align=EVAL_DEFAULTS.replace(backend=backend)), face_model)[0]

    on_ort, on_torch = summary("onnxruntime"), summary("torch")
    assert on_ort["backend"] == "onnxruntime" and "backend" not in on_torch
    assert abs(on_ort["mean"] - on_torch["mean"]) < 0.02  # NME %
