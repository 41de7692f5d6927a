"""Damaged network files (issue 28, case 15): the shipped files against dffx/weights/SHA256SUMS,
non-finite weights refused at load, non-finite features refused at the network's exit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import dffx
from dffx.nn.integrity import (MANIFEST_NAME, check_finite_features, check_shipped_file, file_sha256,
                               read_manifest)

WEIGHTS = Path(dffx.__file__).parent / "weights"


def test_manifest_lists_every_shipped_network_and_cascade_file_with_its_sha256():
    """Re-run `sha256sum dff_*.pt dff_*.onnx cascade_*.npz tiny_*.pt tiny_*.onnx > SHA256SUMS` in
    dffx/weights after shipping a file: this test fails until then."""
    sums = read_manifest(WEIGHTS / MANIFEST_NAME)
    shipped = {p.name for pattern in ("dff_*.pt", "dff_*.onnx", "cascade_*.npz", "tiny_*.pt", "tiny_*.onnx")
               for p in WEIGHTS.glob(pattern)}
    assert set(sums) == shipped
    for name, digest in sums.items():
        assert file_sha256(WEIGHTS / name) == digest, name


def _damaged_copy(tmp_path, name, count=50, seed=0) -> Path:
    """A copy of dffx/weights with ``count`` bytes of ``name`` flipped past its first 4 KB."""
    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS, folder)
    data = bytearray((folder / name).read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.choice(np.arange(4096, len(data)), count, replace=False):
        data[i] ^= 0xFF
    (folder / name).write_bytes(bytes(data))
    return folder


@pytest.mark.parametrize("name", ["dff_default.pt", "dff_default.onnx", "cascade_dff.npz", "tiny_joint.pt",
                                  "tiny_landmarks.pt", "tiny_landmarks.onnx"])
def test_a_damaged_shipped_file_is_named(tmp_path, name):
    folder = _damaged_copy(tmp_path, name)
    with pytest.raises(ValueError, match=f"{name} is damaged: its SHA-256"):
        check_shipped_file(folder / name)
    check_shipped_file(folder / "dff_base8.pt")          # untouched: passes
    check_shipped_file(tmp_path / "weights" / "README.md")  # not listed: not checked


def test_extractor_and_aligner_check_the_shipped_files_they_load_by_name(tmp_path, monkeypatch, face_model):
    import dffx.align.aligner as aligner_module
    import dffx.nn.extractor as extractor_module
    from dffx.nn import DFFExtractor

    folder = _damaged_copy(tmp_path, "dff_default.pt")
    monkeypatch.setattr(extractor_module, "default_weights_path", lambda: folder / "dff_default.pt")
    with pytest.raises(ValueError, match="dff_default.pt is damaged"):
        DFFExtractor()
    folder = _damaged_copy(tmp_path / "c", "cascade_dff.npz")
    monkeypatch.setattr(aligner_module, "default_cascade_path", lambda features: folder / f"cascade_{features}.npz")
    with pytest.raises(ValueError, match="cascade_dff.npz is damaged"):
        aligner_module.FaceAligner(model=face_model, device="cpu")
    import dffx.tiny.path as tiny_module

    folder = _damaged_copy(tmp_path / "t", "tiny_joint.pt")
    monkeypatch.setattr(tiny_module, "default_tiny_weights", lambda: folder / "tiny_joint.pt")
    with pytest.raises(ValueError, match="tiny_joint.pt is damaged"):
        tiny_module.TinyPath()


def test_non_finite_weights_are_refused_at_load_and_non_finite_features_at_exit(tmp_path):
    import torch

    from dffx.nn import DFFExtractor, DFFNet, DFFNetConfig, save_weights

    net = DFFNet(DFFNetConfig(base_channels=8, depth=3))
    with torch.no_grad():
        next(net.parameters())[0].fill_(float("nan"))
    path = save_weights(tmp_path / "nan.pt", net, half=False)
    with pytest.raises(ValueError, match="nan.pt is damaged: non-finite weights"):
        DFFExtractor(path)
    image = np.full((32, 32, 3), 128, np.uint8)
    with pytest.raises(FloatingPointError, match="non-finite features"):
        DFFExtractor(net, device="cpu", fuse=False)(image)
    check_finite_features(np.ones((1, 32, 4, 4), np.float32), "ok.onnx")
    bad = np.ones((1, 32, 4, 4), np.float32)
    bad[0, :, 2, 3] = np.nan
    with pytest.raises(FloatingPointError, match="bad.onnx returned non-finite"):
        check_finite_features(bad, "bad.onnx")


def test_manifest_lines_are_checked(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("not-a-digest  dff_default.pt\n")
    with pytest.raises(ValueError, match="expected 'SHA256  NAME'"):
        read_manifest(tmp_path / MANIFEST_NAME)
