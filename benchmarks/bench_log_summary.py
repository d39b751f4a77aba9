"""Summarise the per-scene lines an `aceg bench` run prints (its log), for a run stopped
before it wrote its tables: % of query images within 10 cm / 10 deg per method and split,
over the scenes the log holds, and the mean mapping time per scene.

    python benchmarks/bench_log_summary.py benchmarks/results/bench-anchors-default.log [--frames 15]

Each per-scene figure in the log is a rounded percentage of ``--frames`` images; it is turned
back into an image count (exact for 15 images: steps of 6.7 points).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

LINE = re.compile(r"^\s+(ACE-G|ACE|Feature matching)\s+(\S+): mapped in ([\d.]+) s, (.*)$")
SPLIT = re.compile(r"(\w+) (\d+)% <10cm/10deg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--frames", type=int, default=15, help="query images per split and scene")
    args = ap.parse_args()
    hits: dict = defaultdict(list)
    seconds: dict = defaultdict(list)
    with open(args.log) as fh:
        for line in fh:
            m = LINE.match(line)
            if not m or not m.group(2).startswith("scene_"):
                continue
            seconds[m.group(1)].append(float(m.group(3)))
            for split, pct in SPLIT.findall(m.group(4)):
                hits[(m.group(1), split)].append(round(int(pct) * args.frames / 100))
    print("| method | split | scenes | within 10 cm / 10 deg | mean mapping time per scene |")
    print("| --- | --- | --- | --- | --- |")
    for (method, split), counts in sorted(hits.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        n = len(counts) * args.frames
        print(f"| {method} | {split} | {len(counts)} | {100 * sum(counts) / n:.1f} % ({sum(counts)}/{n}) "
              f"| {sum(seconds[method]) / len(seconds[method]):.1f} s |")


if __name__ == "__main__":
    main()
