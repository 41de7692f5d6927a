"""Paired comparison of two `dffx eval --per-image` CSVs of the same faces: is B better than A?

    python tools/compare_eval.py A.csv B.csv
    python tools/compare_eval.py A.csv B.csv --json docs/results/paired_NAME.json --label "B against A"

Prints per yaw bin the mean NME (%) of each run, the mean paired difference B - A with its
standard error (the per-face differences' standard deviation / sqrt(n)), and the share of faces
B improves. A difference within two standard errors is inside the noise of the set. ``--json``
also stores those figures (with the command) for the docs' paired tables
(``tools/results_tables.py``, table kind ``paired``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
from pathlib import Path


def read(path: str) -> dict[str, tuple[str, float]]:
    """name -> (bin, NME as a fraction) of one per-image CSV.

    Raises:
        FileNotFoundError: no such file.
        KeyError: a column ``name``, ``bin`` or ``nme`` is missing.
    """
    with open(path, newline="") as f:
        return {row["name"]: (row["bin"], float(row["nme"])) for row in csv.DictReader(f)}


def _group(a: dict, b: dict, faces: list[str]) -> dict:
    d = [100 * (b[n][1] - a[n][1]) for n in faces]
    mean_d = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean_d) ** 2 for x in d) / max(len(d) - 1, 1))
    return {"faces": len(faces), "a": 100 * sum(a[n][1] for n in faces) / len(faces),
            "b": 100 * sum(b[n][1] for n in faces) / len(faces), "diff": mean_d, "se": sd / math.sqrt(len(d)),
            "b_better": sum(x < 0 for x in d) / len(d)}


def paired(a: dict, b: dict) -> dict:
    """The paired difference B - A of two :func:`read` results over the faces both hold.

    Returns:
        ``{"faces": n, "bins": {bin: group}, "all": group}``, a group being ``{"faces", "a", "b"``
        (mean NME in %), ``"diff"`` (mean of B - A per face, NME points), ``"se"`` (its standard
        error), ``"b_better"`` (share of faces with B < A)}``; bins keyed as in the CSVs ("0-30").

    Raises:
        ValueError: the two share no face.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two files share no face")
    bins = sorted({a[n][0] for n in common}, key=lambda s: float(s.split("-")[0]))
    return {"faces": len(common),
            "bins": {name: _group(a, b, [n for n in common if a[n][0] == name]) for name in bins},
            "all": _group(a, b, common)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--json", metavar="OUT", help="also store the comparison as JSON")
    parser.add_argument("--label", default="", help="what B and A are, stored in the JSON")
    args = parser.parse_args(argv)
    try:
        result = paired(read(args.a), read(args.b))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(f"{result['faces']} faces in both; NME in % (B - A < 0: B better)")
    print(f"{'bin':>8} {'n':>5} {'A':>6} {'B':>6} {'B-A':>7} {'s.e.':>6} {'B better':>9}")
    for name, g in [*result["bins"].items(), ("all", result["all"])]:
        print(f"{name:>8} {g['faces']:>5} {g['a']:6.2f} {g['b']:6.2f} {g['diff']:+7.2f} {g['se']:6.2f} "
              f"{g['b_better']:9.0%}")
    bins = result["bins"].values()
    print(f"mean of the bin means: A {sum(g['a'] for g in bins) / len(bins):.2f}, "
          f"B {sum(g['b'] for g in bins) / len(bins):.2f}")
    if args.json:
        command = "python tools/compare_eval.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        Path(args.json).write_text(json.dumps({"label": args.label, "a": args.a, "b": args.b, "command": command,
                                               **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
