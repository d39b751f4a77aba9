"""Probe: when the anchor budget binds (large places), which anchors should a map keep:
a random subset, or one spread evenly over the place (``balanced_subset``, issue 31)?

Maps each held-out room with a budget well below its candidates, once per selection, and
localizes its query splits; prints accuracy per split and selection side by side, and how
many 0.25 m voxels the kept anchors' points cover.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/anchor_selection_probe.py \
        --synthetic /work/benchrun/work/synthetic --work /work/selection --budget 4000
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import aceg.mapping.anchor_map as anchor_map
from aceg.data.images import load_image
from aceg.evaluation.benchmark import synthetic_datasets
from aceg.evaluation.metrics import pose_errors
from aceg.localization.localizer import Localizer
from aceg.mapping.anchor_budget import balanced_subset
from aceg.mapping.mapper import map_scene
from aceg.model.map_file import load_map


def random_subset(points: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """What mapping did before: a uniformly random subset."""
    n = len(points)
    if n <= budget:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:budget])


SELECTIONS = {"random": random_subset, "balanced": balanced_subset}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--budget", type=int, default=4000)
    ap.add_argument("--anchor-points", default="cells", choices=("cells", "keypoints"))
    ap.add_argument("--splits", nargs="+", default=["query_same", "query_view"])
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    good = defaultdict(int)
    total = defaultdict(int)
    cover = defaultdict(list)
    for data in synthetic_datasets(Path(args.synthetic)):
        for name, select in SELECTIONS.items():
            anchor_map.balanced_subset = select
            path = work / f"{data.name}-{args.anchor_points}-{name}-{args.budget}.map"
            if not path.exists():
                map_scene(data.mapping, path, model="anchors", max_anchors=args.budget,
                          anchor_points=args.anchor_points, progress=False)
            code = load_map(path).code
            cover[name].append(len(np.unique(np.floor(code[:, -3:].numpy() / 0.25), axis=0)))
            loc = Localizer(path)
            for split in args.splits:
                for frame in data.queries[split].frames:
                    r = loc.localize(load_image(frame.image_path), frame.intrinsics, frame.name)
                    total[split, name] += 1
                    if r.cam_to_world is not None:
                        rot, trans = pose_errors(r.cam_to_world, frame.cam_to_world)
                        good[split, name] += rot <= 10 and trans <= 0.10
        print(data.name, {f"{s}/{n}": good[s, n] for s in args.splits for n in SELECTIONS},
              flush=True)
    anchor_map.balanced_subset = balanced_subset
    print(f"\nbudget {args.budget} {args.anchor_points} anchors; % within 10 cm / 10 deg")
    print(f"{'split':<14}" + "".join(f"{n:>12}" for n in SELECTIONS))
    for split in args.splits:
        print(f"{split:<14}" + "".join(f"{100 * good[split, n] / max(total[split, n], 1):>11.1f}%"
                                       for n in SELECTIONS))
    print(f"{'0.25 m voxels':<14}" + "".join(f"{np.mean(cover[n]):>12.0f}" for n in SELECTIONS))


if __name__ == "__main__":
    main()
