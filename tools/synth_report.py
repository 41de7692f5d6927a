"""Summarise a `dffx synth` set for docs/synthesis.md: the photo fits' error and what the set cost.

Reads ``DATA/fits.npz`` (one 3DMM and camera fit per source photo, its landmark NME over the
outer-eye-corner distance, the held-out flag) and ``DATA/manifest.json`` (settings and the last
run's timing), and writes one JSON summary that ``tools/results_tables.py`` turns into the
"synth_fit" and "synth_cost" tables:

    python tools/synth_report.py DATA --out docs/results/synth_ctx24.json
    python tools/results_tables.py

Fits are binned by the fitted |yaw| (0-15, 15-30, 30-90 degrees), each bin with its photo count
and mean NME in %. The fit has no learned parameters beyond ``w_reg``, so the held-out photos
score like the rest; they are reported apart all the same.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

YAW_BINS = ((0.0, 15.0), (15.0, 30.0), (30.0, 90.0))


def folder_bytes(root: Path) -> int:
    """Total size of the files under ``root`` in bytes."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def summarise(root) -> dict:
    """The summary of one set (module docstring).

    Raises:
        FileNotFoundError / ValueError: ``root`` is not a finished ``dffx synth`` folder.
    """
    root = Path(root)
    manifest_path, fits_path = root / "manifest.json", root / "fits.npz"
    for path in (manifest_path, fits_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {root} is not a dffx synth output folder")
    manifest = json.loads(manifest_path.read_text())
    run = manifest.get("last_run")
    if not run:
        raise ValueError(f"{manifest_path}: no finished run recorded")
    with np.load(fits_path) as fits:
        nme = 100.0 * fits["nme_io"]
        yaw = np.degrees(np.abs(fits["camera"][:, 2]))
        held_out = fits["held_out"].astype(bool)
        rms_px = fits["rms_px"]
    bins = {}
    for lo, hi in YAW_BINS:
        sel = (yaw >= lo) & ((yaw < hi) if hi < 90 else (yaw <= hi))
        bins[f"{lo:g}-{hi:g}"] = {"photos": int(sel.sum()), "nme": float(nme[sel].mean()) if sel.any() else math.nan}
    return {
        "command": f"python tools/synth_report.py DATA --out docs/results/synth_{root.name}.json (DATA: {root.name})",
        "settings": manifest["settings"],
        "fit": {"bins": bins, "photos": int(len(nme)), "mean": float(nme.mean()), "median": float(np.median(nme)),
                "held_out_photos": int(held_out.sum()),
                "held_out_mean": float(nme[held_out].mean()) if held_out.any() else math.nan,
                "rms_px": float(rms_px.mean())},
        "cost": {"samples": int(run["samples"]), "workers": int(run["workers"]),
                 "fit_seconds": float(run["fit_seconds"]), "render_seconds": float(run["render_seconds"]),
                 "ms_per_sample": float(run["ms_per_sample"]), "bytes": folder_bytes(root)},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a dffx synth output folder")
    p.add_argument("--out", required=True, help="the JSON summary to write (docs/results/synth_NAME.json)")
    args = p.parse_args(argv)
    try:
        summary = summarise(args.data)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"synth_report: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["fit"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
