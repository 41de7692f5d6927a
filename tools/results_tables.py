"""The current-results tables of the docs, generated from stored `dffx eval --json` summaries.

Every number in a results table comes from one JSON file in ``docs/results/`` (an evaluation's
summary as ``dffx eval ... --json`` prints it; a paired comparison of two evaluations' per-face
CSVs as ``tools/compare_eval.py A.csv B.csv --json`` writes it; or, for numbers dffx did not
measure itself such as the paper's or a peer's, a file with the same fields and a ``source``).
A table sits in a doc between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``; this
script rewrites what is between the markers, so a figure cannot drift from its measurement or
between pages.

    python tools/results_tables.py           # rewrite the tables in place
    python tools/results_tables.py --check   # exit 1 if a table differs (tests/eval/test_results_tables.py)

To change a result: re-run the evaluation into its JSON file (the command is in the file's
``command`` field), run this script, commit both.

The latency table comes from one pytest-benchmark run, kept slim in ``docs/results/latency.json``:

    pytest benchmarks/test_bench_dff.py benchmarks/test_bench_latency.py --benchmark-only \
        --benchmark-json=/tmp/bench.json                      # on a quiet machine
    python tools/results_tables.py --latency-from /tmp/bench.json   # store it, rewrite the tables
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from pathlib import Path

# tiny_method="auto" takes the landmark network's way below this many pixels (the bold tiny rows)
from dffx.tiny.path import TINY_NETWORK_MAX_FACE_SIZE

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
DOCS = (REPO / "README.md", REPO / "docs" / "alignment.md", REPO / "docs" / "tiny.md", REPO / "docs" / "dff.md",
        REPO / "docs" / "synthesis.md", REPO / "docs" / "evaluation.md")
BINS = ("0-30", "30-60", "60-90")

TINY_WAYS = {  # a tiny_dev row's label, and its JSON file's middle part
    "never": "DFF on the upsampled face (`--tiny never`)",
    "sr_cascade": "DFF on the super-resolved face (`--tiny always --tiny-method sr-cascade`)",
    "landmarks": "the landmark network's own landmarks (`--tiny always --tiny-method network`)",
    "network": "the joint network's own landmarks (`... --tiny-weights python/dffx/weights/tiny_joint.pt`)",
}


def _tiny_rows(size: int, ways) -> list:
    """The tiny_dev rows at one face size; bold: the way FaceAligner(tiny="auto") takes there for
    a given box (dffx.tiny.path: TINY_MAX_FACE_SIZE = 20, TINY_NETWORK_MAX_FACE_SIZE)."""
    runs = "never" if size >= 20 else "landmarks" if size < TINY_NETWORK_MAX_FACE_SIZE else "sr_cascade"
    return [(f"{size} px: {TINY_WAYS[way]}", f"tiny_dev_{way}_{size}.json", way == runs) for way in ways]


# name -> (kind, rows); a row is (label, JSON file in docs/results, bold)
TABLES = {
    "dev": ("nme", [
        ("dffx (shipped)", "dev_shipped.json", True),
        ("dffx (shipped), from MTCNN's boxes (`--detector`, one pass; a face MTCNN misses starts from the true box)",
         "dev_shipped_mtcnn.json", False),
        ("dffx (shipped), mirror averaged (`--mirror`: the face aligned in the image and its mirror image, "
         "twice the time)", "dev_shipped_mirror.json", False),
        ("dffx, the same cascade on 12,000 × 5 renders alone (shipped until 2026-12-07)", "dev_sectors_12k.json", False),
        ("dffx until the pose-fused cascade (same network)", "dev_previous.json", False),
        ("dffx 2026-12-03 to -07 (run-3 network, ICT's landmark vertices)", "dev_run3.json", False),
        ("3DDFA_V2 (MobileNet 0.5, ONNX), same protocol", "dev_3ddfa_v2.json", False),
    ]),
    # paired per face on the dev split (tools/compare_eval.py --json): what each change did
    "dev_paired": ("paired", [
        ("shipped cascade against the same cascade on 12,000 × 5 renders alone", "paired_shipped_vs_12k.json", True),
        ("the 300-W photos added to 2,000 × 5 renders", "paired_photos_vs_2k.json", False),
        ("2,000 × 5 renders degraded (`--augment all`, not used) against clean", "paired_degraded_vs_2k.json", False),
        ("a turned copy of each photo (`--photo-rotations 1`, not used) against the photos as they are "
         "(2,000 × 5 renders + photos)", "paired_photo_rotations_vs_photos.json", False),
        ("yaw-sector stages against the generic cascade (2,000 × 5 renders)", "paired_sectors_vs_generic.json", False),
        ("mirror averaging (`--mirror`) against the shipped default", "paired_mirror_vs_shipped.json", False),
        ("the network fine-tuned with 8,000 photo views beside its renders (run 7, not used) against the "
         "shipped run 5, each with its own cascade (6,000 × 5 renders + photos)", "paired_run7_vs_shipped.json", False),
    ]),
    "dev_yaw": ("yaw_error", [
        ("dffx (shipped)", "dev_shipped.json", True),
        ("dffx, the same cascade on 12,000 × 5 renders alone", "dev_sectors_12k.json", False),
        ("dffx until the pose-fused cascade", "dev_previous.json", False),
    ]),
    "aflw2000": ("nme_inner", [
        ("dff", "aflw2000_dff.json", False),
        ("dff, mirror averaged (`--mirror`)", "aflw2000_dff_mirror.json", True),
        ("sift (the paper's \"Ours (SIFT)\")", "aflw2000_sift.json", False),
        ("mean shape", "aflw2000_mean_shape.json", False),
        ("paper, DFF (all 2,000 AFLW2000-3D photos)", "aflw2000_paper_dff.json", False),
    ]),
    "tiny_dev": ("nme", [
        ("full size (face box about 85 px), the shipped pipeline", "dev_shipped.json", False),
        *_tiny_rows(32, ("never", "sr_cascade", "landmarks", "network")),
        *_tiny_rows(24, ("never", "sr_cascade")),
        *_tiny_rows(18, ("sr_cascade", "landmarks")),
        *_tiny_rows(16, ("never", "sr_cascade", "landmarks", "network")),
        *_tiny_rows(14, ("never", "sr_cascade", "landmarks")),
        *_tiny_rows(12, ("never", "sr_cascade", "landmarks", "network")),
        *_tiny_rows(10, ("never", "sr_cascade", "landmarks", "network")),
    ]),
    # paired per face on the shrunk dev split (tools/compare_eval.py --json)
    "tiny_paired": ("paired", [
        *((f"{fs} px: DFF on the super-resolved face against DFF on the upsampled face",
           f"paired_tiny_sr_vs_upsampled_{fs}.json", False) for fs in (32, 24, 16, 12, 10)),
        *((f"{fs} px: the landmark network's own landmarks against DFF on the super-resolved face",
           f"paired_tiny_landmarks_vs_sr_{fs}.json", False) for fs in (18, 16, 14, 12, 10)),
    ]),
    "tiny_head": ("paired", [
        (f"{fs} px: regression head against heatmap head, both landmark-only at step 10,500",
         f"paired_tiny_regression_vs_heatmap_{fs}.json", False) for fs in (16, 12)
    ]),
    "tiny_joint": ("paired", [
        *((f"{fs} px: landmark-only network against the joint network, both at step 9,500",
           f"paired_tiny_landmark_only_vs_joint_{fs}.json", False) for fs in (32, 16, 12, 10)),
        *((f"{fs} px: the same at the end of the schedule (landmark-only step 19,500, joint step 20,000)",
           f"paired_tiny_landmark_only_vs_joint_end_{fs}.json", False) for fs in (32, 16, 12, 10)),
    ]),
    "match": ("match", [
        (f"{group}|{method}", "match_run5.json", False)
        for group in ("small", "medium", "large") for method in ("dff", "dff-top", "sift", "dff-dense")
    ]),
    "tiny_sr": ("sr", [
        ("x4", "tiny_sr.json", False),
        ("x8", "tiny_sr.json", False),
    ]),
    "mean_shape": ("nme", [
        ("AFLW2000-3D sample (16, `yaw.csv` bins 12/2/2), 68 points", "aflw2000_mean_shape.json", False),
        ("AFLW sample (24 crops, 8/8/8), 21 points", "aflw24_mean_shape.json", False),
    ]),
    # label "name|training log in docs/training-logs": its last validation, and the dev split's mean
    "network": ("network", [
        ("run 5 (shipped)|dff_context_run5.jsonl", "dev_shipped.json", True),
    ]),
    "score": ("score", [
        ("shipped (run 5, pose-fused cascade on 6,000 × 5 renders and 3,786 photos)", "score_shipped.json", True),
        ("run 5, the pose-fused cascade on 12,000 × 5 renders (until 2026-12-07)", "score_12k.json", False),
        ("run 5, the pose-fused cascade on 4,000 × 5 renders", "score_4k.json", False),
        ("run 5, the generic cascade before it", "score_generic.json", False),
    ]),
    "synth_fit": ("synth_fit", [
        ("24,000-sample context set (the run-5 network's)", "synth_ctx24.json", False),
    ]),
    "synth_cost": ("synth_cost", [
        ("24,000-sample context set", "synth_ctx24.json", False),
    ]),
    "aflw24": ("nme", [
        ("dff", "aflw24_dff.json", False),
        ("dff, mirror averaged", "aflw24_dff_mirror.json", False),
    ]),
    "renders": ("nme_all_and_inner", [
        ("dff", "renders_dff.json", False),
    ]),
    "pose": ("pose", [
        ("held-out renders (1,419) | dff", "renders_dff.json", False),
        ("AFLW2000-3D sample (16) | dff", "aflw2000_dff.json", False),
        (" | dff, mirror averaged", "aflw2000_dff_mirror.json", True),
        (" | sift", "aflw2000_sift.json", False),
    ]),
}

# The latency table: label, the float32 benchmark, the bfloat16 one (or None), calls per timed run.
LATENCY = "latency.json"
LATENCY_ROWS = [
    ("DFF network, one 224 × 224 crop", "test_extract_extractor[1]", "test_extract_extractor_bfloat16[1]", 1),
    ("cascade (C++): 3 iterations, the camera refit, the score (float32 in both)", "test_cascade_run_cpp",
     "test_cascade_run_cpp", 1),
    ("cascade (C++), 24 faces in one call, per face (float32 in both)", "test_cascade_batch_stage_by_stage",
     "test_cascade_batch_stage_by_stage", 24),
    ("`FaceAligner.align`, a given box", "test_align_dff", "test_align_dff_bfloat16", 1),
    ("same, mirror averaged (`mirror=True`)", "test_align_dff_mirror", None, 1),
    ("MTCNN detection, per photo (a portrait and a group photo)", "test_detect[mtcnn]", None, 2),
]
TABLES["latency"] = ("latency", LATENCY_ROWS)
# The tiny-face latency table (docs/tiny.md): label, benchmark, calls per timed run; from
#   pytest benchmarks/test_bench_tiny.py --benchmark-only --benchmark-json=/tmp/tiny.json
#   python tools/results_tables.py --latency-from /tmp/tiny.json --latency-file latency_tiny.json \
#       --latency-command "pytest benchmarks/test_bench_tiny.py --benchmark-only --benchmark-json=BENCH_JSON"
LATENCY_TINY = "latency_tiny.json"
TINY_LATENCY_ROWS = [
    ("`tiny_method=\"network\"` (what `auto` runs below 17 px): landmark network, the cascade's 3DMM fit",
     "test_tiny_path_network", None, 1),
    ("`tiny_method=\"sr-cascade\"` (what `auto` runs from 17 px): joint network, then the DFF pipeline on "
     "the super-resolved face", "test_tiny_path_sr_cascade", None, 1),
    ("the DFF pipeline on the upsampled face (`tiny=\"never\"`)", "test_tiny_face_through_the_default_pipeline",
     None, 1),
    ("the landmark network alone", "test_tiny_network_landmarks", None, 1),
    ("the cascade's 3DMM fit alone", "test_tiny_3dmm_fit", None, 1),
    ("the joint network with its SR head (`super_resolve`)", "test_tiny_network_with_super_resolution", None, 1),
]
TABLES["tiny_latency"] = ("latency", TINY_LATENCY_ROWS)
LATENCY_FILES = {"latency": LATENCY, "tiny_latency": LATENCY_TINY}

MATCH_GROUPS = {"small": "small (< 30°)", "medium": "medium (30-60°)", "large": "large (> 60°)"}
MATCH_METHODS = {"dff": "DFF sparse (< 30°)", "dff-top": "DFF sparse at SIFT's count",
                 "sift": "SIFT sparse (ratio 1/1.3)", "dff-dense": "DFF dense (< 12°)"}

HEADERS = {
    "nme": "| pipeline | [0,30] | (30,60] | (60,90] | Mean |\n|---|---|---|---|---|",
    "yaw_error": "| pipeline | yaw MAE [0,30] | (30,60] | (60,90] | Mean | bias |\n|---|---|---|---|---|---|",
    "nme_inner": "| method | all 68: [0,30] | (30,60] | (60,90] | Mean | visible inner: Mean |\n|---|---|---|---|---|---|",
    "nme_all_and_inner": "| method | landmarks | [0,30] | (30,60] | (60,90] | Mean |\n|---|---|---|---|---|---|",
    "pose": "| set | method | pitch | yaw | roll | mean | [0,30] | (30,60] | (60,90] |\n"
            "|---|---|---|---|---|---|---|---|---|",
    "match": "| yaw difference | method | matches made | correct (of matches) | matching score | hidden matched |\n"
             "|---|---|---|---|---|---|",
    "sr": "| scale | face box, px | PSNR: SR | bicubic | SR - bicubic | faces better | SSIM: SR | bicubic |\n"
          "|---|---|---|---|---|---|---|---|",
    "network": "| network | held-out patch accuracy, % (64 context renders; chance 0.2 %) | AFLW dev split NME with its "
               "cascade |\n|---|---|---|",
    "score": "| cascade file | faces, 1st pct. | backgrounds, 95th pct. | threshold | faces kept | backgrounds kept |\n"
             "|---|---|---|---|---|---|",
    "synth_fit": "| set | fitted \\|yaw\\| 0-15°: NME % (photos) | 15-30° | 30-90° | all: NME % (median) | held out: NME % |\n"
                 "|---|---|---|---|---|---|",
    "synth_cost": "| set | samples | workers | photo fits | renders | per sample | on disk |\n|---|---|---|---|---|---|---|",
    "paired": "| B against A (same faces) | [0,30] | (30,60] | (60,90] | all faces | faces B improves |\n"
              "|---|---|---|---|---|---|",
    "latency": "| stage (median ms) | float32 (default) | `precision=\"bfloat16\"` |\n|---|---|---|",
    "tiny_latency": "| one tiny face, a given box (median ms) | time |\n|---|---|",
}


def load(name: str) -> dict:
    """A stored summary; FileNotFoundError / ValueError name the file."""
    path = RESULTS / name
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None


def last_validation(log_name: str) -> dict:
    """The last ``"kind": "val"`` record of a training log in ``docs/training-logs/``."""
    path = REPO / "docs" / "training-logs" / log_name
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    vals = [r for r in records if r.get("kind") == "val"]
    if not vals:
        raise ValueError(f"{path}: no validation record")
    return vals[-1]


def _cells(values, bold: bool) -> list[str]:
    text = [f"{v:.2f}" for v in values]
    return [f"**{t}**" for t in text] if bold else text


def _bins(block: dict) -> list[float]:
    return [block["bins"][b] for b in BINS] + [block["mean"]]


def row(kind: str, label: str, summary: dict, bold: bool) -> list[str]:
    """The table row(s) of one summary, as markdown lines."""
    name = f"**{label}**" if bold else label
    if kind == "nme":
        return ["| " + " | ".join([name, *_cells(_bins(summary), bold)]) + " |"]
    if kind == "yaw_error":
        err = summary["yaw_error"]
        values = [err["bins"][b] for b in BINS] + [err["mae"], err["bias"]]
        return ["| " + " | ".join([name, *_cells(values, bold)]) + " |"]
    if kind == "nme_inner":
        inner = summary.get("inner_visible")
        cells = _cells(_bins(summary), bold) + ([_cells([inner["mean"]], bold)[0]] if inner else ["-"])
        return ["| " + " | ".join([name, *cells]) + " |"]
    if kind == "nme_all_and_inner":
        lines = ["| " + " | ".join([label, "all 68", *_cells(_bins(summary), bold)]) + " |"]
        if "inner_visible" in summary:
            lines.append("| " + " | ".join([label, "visible inner", *_cells(_bins(summary["inner_visible"]), bold)]) + " |")
        return lines
    if kind == "pose":
        pose = summary["pose"]
        values = [pose["mae"][a] for a in ("pitch", "yaw", "roll", "mean")] + [pose["bins"][b] for b in BINS]
        set_name, method = (part.strip() for part in label.split("|"))
        return ["| " + " | ".join([set_name, f"**{method}**" if bold else method, *_cells(values, bold)]) + " |"]
    if kind == "match":  # label "group|method": a python -m dffx.match.evaluate --json summary
        group, method = label.split("|")
        part = summary["groups"][group][method]
        cells = [MATCH_GROUPS[group], MATCH_METHODS[method], str(part["matches"]), f"{100 * part['correct_rate']:.1f}%",
                 f"{100 * part['matching_score']:.1f}%", f"{100 * part['hidden_matched_rate']:.1f}%"]
        return ["| " + " | ".join(cells) + " |"]
    if kind == "sr":  # label: the scale's key in a tools/tiny_sr_quality.py summary
        part = summary[label]
        cells = [f"{part['face_box_px']:.1f}", f"{part['sr']['psnr']:.2f}", f"{part['bicubic']['psnr']:.2f}",
                 f"{part['psnr_gain_db']:+.2f} dB", f"{100 * part['sr_better_psnr']:.0f} %",
                 f"{part['sr']['ssim']:.3f}", f"{part['bicubic']['ssim']:.3f}"]
        return ["| " + " | ".join([name, *cells]) + " |"]
    if kind == "network":
        network, log = label.split("|")
        accuracy = last_validation(log)["accuracy"]
        return ["| " + " | ".join([f"**{network}**" if bold else network, *_cells([100 * accuracy, summary["mean"]], bold)])
                + " |"]
    if kind == "score":  # a dffx train min-score calibration (dffx.align.score_calibration)
        cells = [f"{summary['face_p1']:.3f}", f"{summary['background_p95']:.3f}", f"{summary['min_score']:.2f}",
                 f"{100 * summary['faces_kept']:.1f} %", f"{100 * summary['backgrounds_kept']:.1f} %"]
        return ["| " + " | ".join([name, *([f"**{c}**" for c in cells] if bold else cells)]) + " |"]
    if kind == "synth_fit":  # a tools/synth_report.py summary; bin cells: NME % (photos)
        fit = summary["fit"]
        cells = [f"{b['nme']:.2f} ({b['photos']})" for b in fit["bins"].values()]
        cells += [f"{fit['mean']:.2f} ({fit['median']:.2f}) of {fit['photos']}",
                  f"{fit['held_out_mean']:.2f} of {fit['held_out_photos']}"]
        return ["| " + " | ".join([name, *cells]) + " |"]
    if kind == "synth_cost":
        cost = summary["cost"]
        cells = [f"{cost['samples']:,}", str(cost["workers"]), f"{cost['fit_seconds'] / 60:.1f} min",
                 f"{cost['render_seconds'] / 60:.0f} min", f"{cost['ms_per_sample']:.0f} ms",
                 f"{cost['bytes'] / 1e9:.2f} GB"]
        return ["| " + " | ".join([name, *cells]) + " |"]
    if kind == "paired":  # a tools/compare_eval.py --json summary: B - A in NME points (standard error)
        groups = [summary["bins"][b] for b in BINS] + [summary["all"]]
        cells = [f"{g['diff']:+.2f} ({g['se']:.2f})" for g in groups] + [f"{100 * summary['all']['b_better']:.0f} %"]
        return ["| " + " | ".join([name, *cells]) + " |"]
    raise ValueError(f"unknown table kind {kind!r}")


def slim_benchmarks(run: dict, command: str) -> dict:
    """The part of a pytest-benchmark JSON (``--benchmark-json``) the latency table reads: per
    benchmark name its median and interquartile range in milliseconds and its rounds, with the
    machine, the date and the command. KeyError names a field the run lacks."""
    machine = run["machine_info"]
    return {
        "command": command,
        "datetime": run["datetime"],
        "machine": {"cpu": machine.get("cpu", {}).get("brand_raw", platform.processor()),
                    "cores": machine.get("cpu", {}).get("count"), "python": machine.get("python_version")},
        "benchmarks": {b["name"]: {"median_ms": b["stats"]["median"] * 1e3, "iqr_ms": b["stats"]["iqr"] * 1e3,
                                   "rounds": b["stats"]["rounds"]} for b in run["benchmarks"]},
    }


def render_latency(rows, file: str = LATENCY, header: str = "latency") -> str:
    """A latency table from a stored benchmark run (``latency.json``, ``latency_tiny.json``):
    medians in ms, divided by the calls per run; "-" where a configuration has no benchmark. A
    header with one column of figures shows each row's first benchmark only. KeyError names a
    benchmark the run lacks."""
    measured = load(file)["benchmarks"]

    def cell(name, calls):
        if name is None:
            return "-"
        if name not in measured:
            raise KeyError(f"{RESULTS / file} has no benchmark {name!r}: re-run the benchmarks (see --help)")
        return f"{measured[name]['median_ms'] / calls:.1f}"

    lines = [HEADERS[header]]
    two = HEADERS[header].splitlines()[0].count("|") > 3
    for label, first, second, calls in rows:
        cells = [cell(first, calls)] + ([cell(second, calls)] if two else [])
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def render(name: str) -> str:
    """The markdown of table ``name`` (header and rows, no trailing newline)."""
    kind, rows = TABLES[name]
    if kind == "latency":
        return render_latency(rows, LATENCY_FILES[name], name)
    lines = [HEADERS[kind]]
    for label, file, bold in rows:
        lines.extend(row(kind, label, load(file), bold))
    return "\n".join(lines)


MARKER = re.compile(r"(<!-- results:(\w+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)


def update(text: str) -> str:
    """``text`` with every marked table re-rendered; ValueError for an unknown table name."""
    def replace(match):
        name = match.group(2)
        if name not in TABLES:
            raise ValueError(f"unknown results table {name!r}; known: {', '.join(TABLES)}")
        return match.group(1) + render(name) + "\n" + match.group(4)

    return MARKER.sub(replace, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a doc's tables differ from the JSON files")
    parser.add_argument("--latency-from", metavar="BENCH_JSON",
                        help="store a pytest-benchmark run (--benchmark-json) as docs/results/LATENCY_FILE first")
    parser.add_argument("--latency-file", default=LATENCY, choices=sorted(set(LATENCY_FILES.values())),
                        help=f"which stored run BENCH_JSON replaces (default {LATENCY})")
    parser.add_argument("--latency-command", default="pytest benchmarks/test_bench_dff.py "
                        "benchmarks/test_bench_latency.py --benchmark-only --benchmark-json=BENCH_JSON",
                        help="the command that made BENCH_JSON, stored beside the figures")
    args = parser.parse_args(argv)
    if args.latency_from:
        run = json.loads(Path(args.latency_from).read_text())
        (RESULTS / args.latency_file).write_text(json.dumps(slim_benchmarks(run, args.latency_command), indent=1)
                                                 + "\n")
    stale = []
    for doc in DOCS:
        text = doc.read_text()
        new = update(text)
        if new != text:
            stale.append(doc.relative_to(REPO))
            if not args.check:
                doc.write_text(new)
    if args.check and stale:
        print(f"results tables out of date in {', '.join(map(str, stale))}: run python tools/results_tables.py",
              file=sys.stderr)
        return 1
    print(("up to date" if not stale else f"rewrote {', '.join(map(str, stale))}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
