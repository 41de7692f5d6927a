"""Paired comparison of two `dffx eval --per-image` CSVs of the same faces: is B better than A?

    python tools/compare_eval.py A.csv B.csv

Prints per yaw bin the mean NME (%) of each run, the mean paired difference B - A with its
standard error (the per-face differences' standard deviation / sqrt(n)), and the share of faces
B improves. A difference within two standard errors is inside the noise of the set.
"""

from __future__ import annotations

import argparse
import csv
import math


def read(path: str) -> dict[str, tuple[str, float]]:
    """name -> (bin, NME as a fraction) of one per-image CSV."""
    with open(path, newline="") as f:
        return {row["name"]: (row["bin"], float(row["nme"])) for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args()
    a, b = read(args.a), read(args.b)
    common = sorted(set(a) & set(b))
    if not common:
        raise SystemExit("the two files share no face")
    bins = sorted({a[n][0] for n in common}, key=lambda s: float(s.split("-")[0]))
    print(f"{len(common)} faces in both; NME in % (B - A < 0: B better)")
    print(f"{'bin':>8} {'n':>5} {'A':>6} {'B':>6} {'B-A':>7} {'s.e.':>6} {'B better':>9}")
    bin_means = {"A": [], "B": []}
    for name in bins + ["all"]:
        faces = [n for n in common if name == "all" or a[n][0] == name]
        d = [100 * (b[n][1] - a[n][1]) for n in faces]
        mean_d = sum(d) / len(d)
        sd = math.sqrt(sum((x - mean_d) ** 2 for x in d) / max(len(d) - 1, 1))
        ma = 100 * sum(a[n][1] for n in faces) / len(faces)
        mb = 100 * sum(b[n][1] for n in faces) / len(faces)
        if name != "all":
            bin_means["A"].append(ma)
            bin_means["B"].append(mb)
        better = sum(x < 0 for x in d) / len(d)
        print(f"{name:>8} {len(faces):>5} {ma:6.2f} {mb:6.2f} {mean_d:+7.2f} {sd / math.sqrt(len(d)):6.2f} {better:9.0%}")
    print(f"mean of the bin means: A {sum(bin_means['A']) / len(bins):.2f}, B {sum(bin_means['B']) / len(bins):.2f}")


if __name__ == "__main__":
    main()
