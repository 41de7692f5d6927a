"""Landmark NME of tiny-face checkpoints on the trainer's held-out 300-W photos alone, to choose
the checkpoint to ship without looking at the AFLW dev split (issue 26).

The held-out photos are the ones ``dffx train tiny`` never trains on (every ``HOLDOUT_EVERY``-th
300-W training photo); ``--draws`` times their number of them, drawn at random with repetition,
are made tiny faces of ``--face-size`` pixels with the trainer's random camera kernels (a fixed
seed, so every checkpoint sees the same pairs), and the NME is the trainer's (mean point error in
% of the face box, in the 128-px crop).

    python tools/tiny_checkpoint_nme.py CKPT [CKPT ...] --photos ../shared/data/300w-train \\
        [--face-size 12] [--draws 4]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def photo_pairs(photos: str, face_size: float, draws: int, seed: int = 0) -> dict:
    """``draws`` x (held-out photos) tiny-face pairs of random held-out photos at ``face_size`` px
    (``dffx.tiny.train.PairSource.pairs``' arrays)."""
    from dffx.tiny.train import PairSource

    source = PairSource(photos, "", "val")
    rng = np.random.default_rng(seed)
    return source.pairs(draws * source.count("photo"), rng, (face_size, face_size))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="tiny-face checkpoints or weights files")
    parser.add_argument("--photos", required=True, help="the 300-W training photos the trainer read")
    parser.add_argument("--face-size", type=float, default=12.0, help="face box side, pixels (default 12)")
    parser.add_argument("--draws", type=int, default=4, help="tiny faces made of each photo (default 4)")
    args = parser.parse_args(argv)

    from dffx.tiny.path import load_tiny_net
    from dffx.tiny.train import evaluate

    pairs = photo_pairs(args.photos, args.face_size, args.draws)
    for path in args.checkpoints:
        net, _ = load_tiny_net(path)
        print(json.dumps({"checkpoint": path, "pairs": len(pairs["lr"]), "face_size": args.face_size,
                          "nme": round(evaluate(net, pairs)["nme"], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
