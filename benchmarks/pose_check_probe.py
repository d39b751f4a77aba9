"""Probe: which poses should count as localized (the pose check of issues 29/30)?

Localizes every query of the given data sets against existing maps (an ``aceg bench
--work`` folder: ``<data set>-<method>.map``) exactly as the localizer does, but with the
pose check switched off, and records per query and stage (first, guided) the inlier count,
how many cells of the check's grid hold ``min_cell_inliers`` inliers, and the pose error.
Junk inputs are localized the same way: each room's queries against the next room's map
(a wrong place) and random-noise images. Then prints, per candidate rule, how many
queries each split localizes within 10 cm / 10 deg and how many junk inputs pass.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/pose_check_probe.py \
        --work /work/benchrun5/work --method aceg-kp --synthetic /work/benchrun/work/synthetic
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import aceg.localization.localizer as localizer_module
from aceg.data.images import load_image
from aceg.evaluation.benchmark import REAL_SETS, real_datasets, synthetic_datasets
from aceg.evaluation.metrics import pose_errors
from aceg.localization.localizer import DEFAULT_POSE_CHECK, Localizer
from aceg.model.anchors import AnchorLists

GRID = DEFAULT_POSE_CHECK.grid
CELL_INLIERS = DEFAULT_POSE_CHECK.min_cell_inliers


def cells_covered(inlier_pixels: np.ndarray, width: int, height: int) -> int:
    cols = np.clip((inlier_pixels[:, 0] + 0.5) * GRID // width, 0, GRID - 1).astype(np.int64)
    rows = np.clip((inlier_pixels[:, 1] + 0.5) * GRID // height, 0, GRID - 1).astype(np.int64)
    return int((np.bincount(rows * GRID + cols, minlength=GRID * GRID) >= CELL_INLIERS).sum())


class Recorder:
    """Stands in for the pose check: records (inliers, cells) of every pose and passes it."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, inlier_pixels, width, height, check) -> str:
        self.calls.append((len(inlier_pixels), cells_covered(inlier_pixels, width, height)))
        return ""


def localize_all(loc: Localizer, recorder: Recorder, rgb: np.ndarray, frame) -> dict:
    """Both stages' (inliers, cells, errors) for one query."""
    recorder.calls.clear()
    stages = {}
    original = loc.guided_pose

    def keep_first(descriptors, pixels, intrinsics, width, height, first, name):
        stages["first_pose"] = first.cam_to_world
        return original(descriptors, pixels, intrinsics, width, height, first, name)

    loc.guided_pose = keep_first
    try:
        result = loc.localize(rgb, frame.intrinsics, frame.name)
    finally:
        loc.guided_pose = original
    row: dict = {"calls": list(recorder.calls)}
    truth = frame.cam_to_world
    first_pose = stages.get("first_pose", result.cam_to_world)
    row["first_err"] = pose_errors(first_pose, truth) if first_pose is not None and truth is not None else None
    row["final_err"] = (pose_errors(result.cam_to_world, truth)
                        if result.cam_to_world is not None and truth is not None else None)
    row["guided"] = result.stage == "guided"
    return row


def passes(rule, n: int, cells: int) -> bool:
    min_inliers, min_cells, or_inliers = rule
    return n >= min_inliers and (cells >= min_cells or n >= or_inliers)


def outcome(row: dict, rule) -> str:
    """'good' / 'wrong' / 'none' under a rule: the first stage must pass; the guided pose
    replaces it when it passes too (as the localizer does)."""
    calls = row["calls"]
    if not calls or not passes(rule, *calls[0]):
        return "none"
    err = row["first_err"]
    if row["guided"] and len(calls) > 1 and passes(rule, *calls[1]):
        err = row["final_err"]
    if err is None:
        return "passed"
    rot, trans = err
    return "good" if rot <= 10 and trans <= 0.10 else "wrong"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--method", default="aceg-kp")
    ap.add_argument("--synthetic", default=None)
    ap.add_argument("--real", default=None)
    ap.add_argument("--noise", type=int, default=8, help="random-noise images per map")
    ap.add_argument("--out", default=None, help="JSON of the per-query records")
    ap.add_argument("--splits", nargs="+", default=None, help="only these query splits")
    ap.add_argument("--probe-all", action="store_true",
                    help="search every list of the anchor index (exhaustive search)")
    ap.add_argument("--max-candidates", type=int, default=None,
                    help="the guided stage's anchors per keypoint")
    args = ap.parse_args()
    if args.probe_all:
        search = AnchorLists.search
        AnchorLists.search = lambda self, q, k, probed: search(self, q, k, 1 << 30)
    torch.set_grad_enabled(False)
    recorder = Recorder()
    localizer_module.pose_check_failure = recorder
    datasets = []
    if args.synthetic:
        datasets += synthetic_datasets(Path(args.synthetic))
    if args.real:
        datasets += real_datasets(Path(args.real), REAL_SETS, ("every3", "sparse4"))
    rows = []
    rng = np.random.default_rng(0)
    for i, data in enumerate(datasets):
        loc = Localizer(Path(args.work) / f"{data.name}-{args.method}.map")
        if args.max_candidates and loc.guided is not None:
            loc.guided = dataclasses.replace(loc.guided, max_candidates=args.max_candidates)
        for split, scene in data.queries.items():
            if args.splits and split not in args.splits:
                continue
            tf = data.transforms.get(split)
            for frame in scene.frames:
                rgb = load_image(frame.image_path)
                if tf is not None:
                    rgb = tf(rgb)
                rows.append(localize_all(loc, recorder, rgb, frame) | {"data": data.name, "split": split})
        if args.splits:
            print(data.name, len(rows), flush=True)
            continue
        # Junk: another data set's queries against this map, and noise.
        other = datasets[(i + 1) % len(datasets)]
        if other is not data and other.kind == data.kind:
            frames = next(iter(other.queries.values())).frames[:15]
            for frame in frames:
                row = localize_all(loc, recorder, load_image(frame.image_path), frame)
                row["first_err"] = row["final_err"] = None
                rows.append(row | {"data": data.name, "split": "junk:other-place"})
        frame = next(iter(data.queries.values())).frames[0]
        for _ in range(args.noise):
            h, w = load_image(frame.image_path).shape[:2]
            noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            row = localize_all(loc, recorder, noise, frame)
            row["first_err"] = row["final_err"] = None
            rows.append(row | {"data": data.name, "split": "junk:noise"})
        print(data.name, len(rows), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows))
    rules = [(50, 10, 10**9), (50, 6, 10**9), (50, 8, 10**9), (50, 10, 100), (50, 10, 120),
             (50, 10, 150), (50, 10, 200), (50, 0, 0)]
    splits = sorted({r["split"] for r in rows})
    print(f"{'rule (min inliers, min cells, or inliers)':<44}" + "".join(f"{s[:18]:>20}" for s in splits))
    for rule in rules:
        counts = defaultdict(lambda: defaultdict(int))
        for r in rows:
            counts[r["split"]][outcome(r, rule)] += 1
        cols = []
        for s in splits:
            c = counts[s]
            n = sum(c.values())
            if s.startswith("junk"):
                cols.append(f"passed {c['passed']}/{n}")
            else:
                cols.append(f"{c['good']}/{n} (wrong {c['wrong']})")
        label = f"{rule[0]} inliers, {rule[1]} cells" + (f" or {rule[2]} inliers" if rule[2] < 10**9 else "")
        print(f"{label:<44}" + "".join(f"{c:>20}" for c in cols))
    junk = [r["calls"][0] for r in rows if r["split"].startswith("junk") and r["calls"]]
    if junk:
        print("junk first-stage inliers: max", max(n for n, _ in junk), "cells max", max(c for _, c in junk))


if __name__ == "__main__":
    main()
