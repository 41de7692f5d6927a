"""Reading image files safely: a pixel limit checked from the file header before decoding.

A 389 KB PNG can declare 20000 x 20000 pixels (1.2 GB decoded, 7.6 GB once aligned), and a
69-byte PNG 60000 x 60000 (OpenCV refuses it with a ``cv2.error`` traceback). :func:`read_image`
reads the size from the header of PNG, JPEG and BMP files (the formats OpenCV reads that
declare it in a fixed place), refuses images over ``max_pixels`` before OpenCV decodes them,
and turns OpenCV's failures into one-line errors naming the file. Other formats are checked
after decoding.

OpenCV decodes a JPEG cut short, or a PNG missing its last chunks, into an image whose lower
part is grey, saying so only in libjpeg's own warning. :func:`damage_report` recognises such
files from their last bytes, and :func:`read_image` warns (:class:`DamagedImageWarning`, naming
the file) and returns what was decoded.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS = 100_000_000   # 100 MP: above every ordinary camera photo (a 12000 x 8000 frame is 96 MP)
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}   # start-of-frame markers (not DHT, JPG, DAC)
_JPEG_HEADER_BYTES = 1 << 20       # the frame header sits in the first segments; stop looking after 1 MB


def header_size(path) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP file's header, without decoding; None for other
    formats or a header too short to say."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
            return struct.unpack(">II", head[16:24])
        if head[:2] == b"BM" and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)
        if head[:2] == b"\xff\xd8":
            f.seek(2)
            return _jpeg_size(f.read(_JPEG_HEADER_BYTES))
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first start-of-frame segment of JPEG data after its SOI marker."""
    i = 0
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD9:  # markers without a length
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _JPEG_SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


class DamagedImageWarning(UserWarning):
    """An image file that decoded only in part (truncated or damaged); the message names it."""


def damage_report(path) -> str | None:
    """What is wrong with the end of a JPEG or PNG file, or None (other formats: None).

    A JPEG must end with its end-of-image marker (FF D9; trailing zero padding allowed), a PNG
    with its IEND chunk. Only the last 64 bytes are read.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64))
        tail = f.read()
    if head[:2] == b"\xff\xd8" and not tail.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return f"the JPEG ends before its end-of-image marker ({size:,} bytes): cut short, the lower part is missing"
    if head == b"\x89PNG\r\n\x1a\n" and not tail.endswith(b"IEND\xaeB`\x82"):
        return f"the PNG ends without its IEND chunk ({size:,} bytes): cut short or damaged"
    return None


def check_pixels(width: int, height: int, max_pixels: int | None, name: str = "image") -> None:
    """Raise ValueError when ``width * height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(f"{name}: {width} x {height} = {width * height:,} pixels, over the limit of "
                         f"{max_pixels:,} (raise it with --max-pixels / max_pixels=)")


def read_image(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 (H, W, 3) BGR pixels of an image file (OpenCV), within a pixel limit.

    Args:
        path: the file.
        max_pixels: largest width x height accepted (None: no limit); checked from the header
            before decoding for PNG, JPEG and BMP, after decoding for other formats.

    Warns:
        DamagedImageWarning: the file decoded but is cut short (:func:`damage_report`).

    Raises:
        FileNotFoundError: no such file; ValueError: over ``max_pixels``; OSError: not an image
            OpenCV can decode. Each message is "PATH: what is wrong".
    """
    import cv2

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such image")
    size = header_size(p)
    if size is not None:
        check_pixels(*size, max_pixels, name=str(p))
    try:
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header OpenCV's own limit refuses
        raise OSError(f"{p}: not an image OpenCV can decode ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise OSError(f"{p}: not an image OpenCV can decode")
    check_pixels(image.shape[1], image.shape[0], max_pixels, name=str(p))
    damage = damage_report(p)
    if damage:
        warnings.warn(DamagedImageWarning(f"{p}: {damage}"), stacklevel=2)
    return image
