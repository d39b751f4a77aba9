"""Query time per stage of several maps of one scene, side by side in one run.

Each map localizes the same query images (every ``k``-th frame of the scene), in turns, so
that a busy machine slows all maps alike; prints the median seconds of every stage the
localizer reports (prepare, encode, regress, ransac, guided, total) per map, and the ratio
of each map's median total to the first map's.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/query_stages.py ../shared/data/strecha/castle-P30 \
        cells.map keypoints.map [--every 3] [--repeat 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from aceg.data.readers import read_scene
from aceg.localization.localizer import Localizer

STAGES = ("prepare", "encode", "regress", "ransac", "guided", "total")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scene")
    ap.add_argument("maps", nargs="+")
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scene = read_scene(args.scene)
    frames = scene.frames[::args.every]
    locs = [Localizer(m) for m in args.maps]
    for loc in locs:  # warm-up
        loc.localize_frame(frames[0])
    times: dict[str, dict[str, list[float]]] = {m: {s: [] for s in STAGES} for m in args.maps}
    size = None
    for _ in range(args.repeat):
        for frame in frames:
            for m, loc in zip(args.maps, locs, strict=True):
                r = loc.localize_frame(frame)
                for s in STAGES:
                    times[m][s].append(r.timings.get(s, 0.0))
                size = size or (loc.data.short_side, frame.width, frame.height)
    print(f"{len(frames)} queries x {args.repeat}, {args.threads} threads, working short side {size[0]} "
          f"(images {size[1]}x{size[2]}); median ms per stage")
    print("map".ljust(40) + "".join(s.rjust(10) for s in STAGES) + "   ratio")
    base = np.median(times[args.maps[0]]["total"])
    for m in args.maps:
        med = {s: 1000 * np.median(v) for s, v in times[m].items()}
        print(Path(m).name[:39].ljust(40) + "".join(f"{med[s]:10.1f}" for s in STAGES)
              + f"   {np.median(times[m]['total']) / base:5.2f}")


if __name__ == "__main__":
    main()
