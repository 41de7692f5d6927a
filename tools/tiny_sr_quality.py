"""Super-resolution quality of the tiny-face network against bicubic upsampling (issue 26, item 5).

On the 300-W training photos held out from the tiny network's training (every 20th,
``dffx.tiny.train.HOLDOUT_EVERY``): each face is made tiny by area downscaling alone (no blur,
noise or JPEG), so that its 32-px canonical crop holds the face at x4 (face box 21.3 px) or x8
(10.7 px) below the 128-px target crop; the network's 128-px output and the bicubic upsampling
of the same 32-px crop are compared with the original face's 128-px crop: PSNR (dB, RGB, 0-255)
and SSIM (scikit-image, RGB, Gaussian window). Prints one JSON object; ``--grid FILE`` also
writes a picture of the first faces (rows: tiny input, bicubic, SR, original) to look at.

    pip install scikit-image      # the "tools" extra
    python tools/tiny_sr_quality.py [--weights FILE] [--grid sr_grid.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "300w-train"
SCALES = {"x4": 4, "x8": 8}


def main(argv=None) -> int:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from dffx.preprocess import CROP_SCALE
    from dffx.tiny.degrade import HR_SIZE, LR_SIZE, Degradation, make_pair
    from dffx.tiny.path import TinyPath
    from dffx.tiny.train import PairSource

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=None, help="tiny-face weights (default: the shipped tiny_joint.pt)")
    parser.add_argument("--photos", default=str(PHOTOS))
    parser.add_argument("--grid", default=None, help="also write a grid of the first 8 faces at x4 and x8")
    args = parser.parse_args(argv)

    tiny = TinyPath(args.weights)
    source = PairSource(args.photos, "", "val")
    rng = np.random.default_rng(0)  # unused by a kernel without noise
    out, grid_rows = {"photos": source.count("photo"), "weights": str(tiny.weights)}, []
    for name, factor in SCALES.items():
        face_size = HR_SIZE / CROP_SCALE / factor
        scores = {"sr": {"psnr": [], "ssim": []}, "bicubic": {"psnr": [], "ssim": []}}
        shown = []
        for i in range(source.count("photo")):
            image, box, points = source.face("photo", i)
            pair = make_pair(image, box, points, face_size, rng, Degradation(interpolation="area"))
            bicubic = cv2.resize(pair.lr, (HR_SIZE, HR_SIZE), interpolation=cv2.INTER_CUBIC)
            # the box whose 32-px canonical crop is pair.lr itself (centre (31/2, 31/2), side 32 / CROP_SCALE)
            lr_box = (LR_SIZE - 1) / 2 + np.array([-1, -1, 1, 1]) * LR_SIZE / CROP_SCALE / 2
            sr = tiny.run(pair.lr, lr_box[None]).sr[0]
            for method, result in (("sr", sr), ("bicubic", bicubic)):
                scores[method]["psnr"].append(peak_signal_noise_ratio(pair.hr, result, data_range=255))
                scores[method]["ssim"].append(structural_similarity(pair.hr, result, channel_axis=2, data_range=255))
            if len(shown) < 8:
                shown.append(np.vstack([cv2.resize(pair.lr, (HR_SIZE, HR_SIZE), interpolation=cv2.INTER_NEAREST),
                                        bicubic, sr, pair.hr]))
        out[name] = {"face_box_px": round(face_size, 2),
                     **{m: {k: float(np.mean(v)) for k, v in s.items()} for m, s in scores.items()},
                     "psnr_gain_db": float(np.mean(scores["sr"]["psnr"]) - np.mean(scores["bicubic"]["psnr"])),
                     "sr_better_psnr": float(np.mean(np.array(scores["sr"]["psnr"]) > scores["bicubic"]["psnr"]))}
        grid_rows.append(np.hstack(shown))
    if args.grid:
        cv2.imwrite(args.grid, np.vstack(grid_rows))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
