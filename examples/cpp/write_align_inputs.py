"""Inputs for ``dffx_align_maps`` (align_maps.cpp): the cascade file, the DFF maps of three faces
and the landmarks the Python loop of dffx.align.Cascade.run (its twin) finds in them.

usage: python examples/cpp/write_align_inputs.py OUT_DIR   (needs PyTorch and $DFFX_FACE_MODEL)

The faces are the generated example photo and two of its turned copies (no dataset image).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

import dffx
from dffx.align.export import write_cascade_file
from dffx.preprocess import crop_face

REPO = Path(__file__).resolve().parents[2]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    aligner = dffx.FaceAligner(backend="torch", device="cpu", refine=0)
    photo = cv2.imread(str(REPO / "examples" / "face_generated.png"))
    box = aligner.detect(photo)[0]
    h, w = photo.shape[:2]
    crops = []
    for angle in (0.0, 12.0, -20.0):  # in-plane turns of the photo about the face's centre
        M = cv2.getRotationMatrix2D(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), angle, 1.0)
        crops.append(crop_face(cv2.warpAffine(photo, M, (w, h), borderMode=cv2.BORDER_REPLICATE), box)[0])
    crops = np.stack(crops)
    maps = aligner.features.extractor.extract(crops).numpy()
    state = aligner.cascade.run(aligner.model, aligner.features, crops, native=False)  # the Python loop
    write_cascade_file(out / "cascade.dffx", aligner.model, aligner.cascade)
    maps.astype("<f4").tofile(out / "maps.f32")
    state.X.astype("<f4").tofile(out / "expected.f32")
    print(f"wrote {out}/cascade.dffx, maps.f32 ({len(crops)} faces), expected.f32")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
