"""Per-face latency of the DFF alignment, stage by stage, on one device (paper Sec. III-C, Table IV's
"5 ms extraction, 8.8 ms per iteration, under 35 ms in total" on a GTX 1070).

usage: python tools/device/latency.py PHOTO --box X0,Y0,X1,Y1 [--device cpu|cuda] [--precision float32|bfloat16]
       [--backend torch|onnxruntime] [--repeat 30] [--json OUT]

Stages, each timed on its own (median of ``--repeat`` runs after 5 warm-ups; on CUDA every
stage ends with ``torch.cuda.synchronize()`` so it includes the work it queued):

* ``extract``: the DFF maps of one 224x224 crop (``DFFLandmarkFeatures.prepare``);
* ``initial-geometry``: the mean shape under the mean camera, projected, with visibility (the
  same for every face, so computed once per model and copied: microseconds after the first call);
* ``iteration``: one iteration of the Python cascade loop (the path CUDA maps take): F at the
  160 landmarks (fused sampling kernel), the eq. 4-5 update, the eq. 6-8 shape fit,
  re-projection, depth buffer and visibility;
* ``cascade``: ``Cascade.run`` on the crop (extraction, K iterations, the alignment score; maps
  in CPU memory run the C++ cascade, ``dffx::Cascade``);
* ``align``: ``FaceAligner(refine=0).align`` with the given box (crop, cascade, mesh and pose).

Times are milliseconds. The ``extract-b8`` row is per image of a batch of 8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import cv2
import numpy as np


def timer(device: str):
    """A function f(fn) -> milliseconds of one call of fn, synchronised on CUDA."""
    if device.startswith("cuda"):
        import torch

        sync = torch.cuda.synchronize
    else:
        def sync():
            pass

    def once(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return 1e3 * (time.perf_counter() - start)

    return once


def median_ms(once, fn, repeat: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        once(fn)
    return statistics.median(once(fn) for _ in range(repeat))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo")
    parser.add_argument("--box", required=True, help="face box X0,Y0,X1,Y1 in pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="the DFF network's dtype (dffx.nn.DFFExtractor)")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"],
                        help="where the DFF network runs (FaceAligner(backend=...); onnxruntime: CPU, float32)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import dffx
    from dffx.preprocess import crop_face

    image = cv2.imread(args.photo)
    if image is None:
        raise SystemExit(f"cannot read image {args.photo}")
    box = np.array([float(v) for v in args.box.split(",")])
    aligner = dffx.FaceAligner("dff", device=args.device, refine=0, precision=args.precision, backend=args.backend)
    cascade, features, model = aligner.cascade, aligner.features, aligner.model
    crop = crop_face(image, box)[0][None]  # (1, 224, 224, 3) uint8 BGR
    once = timer(args.device)

    prepared = features.prepare(crop)
    state = cascade.initial_state(model, 1)

    def iteration():
        F = features.sample(prepared, state.U, state.V)
        cascade.step(model, 0, state, F)

    results = {
        "device": args.device,
        "device_name": _device_name(args.device),
        "precision": args.precision,
        "backend": args.backend,
        "extract": median_ms(once, lambda: features.prepare(crop), args.repeat),
        "extract-b8": median_ms(once, lambda: features.prepare(np.repeat(crop, 8, axis=0)), args.repeat) / 8,
        "iteration": median_ms(once, iteration, args.repeat),
        "initial-geometry": median_ms(once, lambda: cascade.initial_state(model, 1), args.repeat),
        "cascade": median_ms(once, lambda: cascade.run(model, features, crop), args.repeat),
        "align": median_ms(once, lambda: aligner.align(image, box[None]), args.repeat),
        "stages": cascade.stages,
        "repeat": args.repeat,
    }
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _device_name(device: str) -> str:
    import os
    import sys

    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name()
    torch = sys.modules.get("torch")  # not imported by the onnxruntime backend
    return f"cpu ({torch.get_num_threads()} torch threads)" if torch else f"cpu ({os.cpu_count()} cores)"


if __name__ == "__main__":
    sys.exit(main())
