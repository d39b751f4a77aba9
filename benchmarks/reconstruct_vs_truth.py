"""Benchmark: relocalize on a map built from photos with their poses withheld (issue 32).

For each real set (every-3rd split: every third photo a query, the rest mapping photos):
1. ``aceg reconstruct`` poses the mapping photos alone (pycolmap SfM; the queries are
   never seen), timed;
2. a similarity transform (Umeyama) of the recovered camera centres onto the ground truth
   brings the reconstruction into the ground-truth frame in metres; the centres' errors
   after it are printed;
3. each method maps the reconstructed scene (aligned poses, SfM's own intrinsics and
   distortion) and, in the same run, the ground-truth scene; both localize the same
   queries with the intrinsics their map was made with, and errors are taken against the
   ground truth.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/reconstruct_vs_truth.py \
        --data ../shared/data --work /work/recon-bench --out benchmarks/results/reconstruct-vs-truth.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from aceg.data.readers import read_scene
from aceg.data.reconstruct import ReconstructSettings, reconstruct
from aceg.data.scene import Scene
from aceg.evaluation.benchmark import METHOD_LABELS, Dataset, real_datasets, run_method
from aceg.evaluation.metrics import similarity_alignment

SETS = ("strecha/fountain-P11", "strecha/castle-P30")


def reconstruct_mapping(mapping: Scene, work: Path) -> tuple[Scene, float]:
    """The mapping photos posed by SfM (reused when ``work/sfm`` exists) and the seconds
    the reconstruction took (0 when reused)."""
    photos, out = work / "photos", work / "sfm"
    if not out.exists():
        photos.mkdir(parents=True, exist_ok=True)
        for frame in mapping.frames:
            link = photos / frame.name
            if not link.exists():
                link.symlink_to(Path(frame.image_path).resolve())
        start = time.perf_counter()
        reconstruct(photos, out, ReconstructSettings())
        seconds = time.perf_counter() - start
    else:
        seconds = 0.0
    return read_scene(out), seconds


def aligned(recon: Scene, truth: Scene) -> tuple[Scene, np.ndarray, float]:
    """``recon``'s frames found in ``truth`` (by file stem: the reconstruction writes its
    undistorted images as PNG), moved by the similarity that best maps their centres onto
    the true ones; the centre errors (metres) after it; the scale."""
    truth_by_stem = {Path(f.name).stem: f for f in truth.frames}
    frames = [f for f in recon.frames if Path(f.name).stem in truth_by_stem]
    if len(frames) < 3:
        raise SystemExit(f"{recon.name}: {len(frames)} reconstructed frames match the ground truth")
    src = np.array([f.camera_centre for f in frames])
    dst = np.array([truth_by_stem[Path(f.name).stem].camera_centre for f in frames])
    s, rotation, t = similarity_alignment(src, dst)
    moved = []
    for f in frames:
        pose = np.eye(4)
        pose[:3, :3] = rotation @ f.cam_to_world[:3, :3]
        pose[:3, 3] = s * rotation @ f.cam_to_world[:3, 3] + t
        moved.append(f.with_pose(pose))
    errors = np.linalg.norm(np.array([f.camera_centre for f in moved]) - dst, axis=1)
    return dataclasses.replace(recon, frames=moved), errors, s


def _cell(figures: dict, queries: int) -> str:
    return (f"{100 * figures['within_10cm_10deg'] / queries:.0f} % "
            f"({figures['median_m'] * 100:.1f} cm)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data", help="the shared data folder")
    ap.add_argument("--work", required=True, help="reconstructions and maps (reused)")
    ap.add_argument("--methods", nargs="+", default=["aceg", "aceg-kp", "feature-matching"])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--out", default=None, help="JSON of the figures")
    args = ap.parse_args()
    report = []
    for name in args.sets:
        data = real_datasets(Path(args.data), (name,), ("every3",))[0]
        work = Path(args.work) / data.name
        recon, sfm_seconds = reconstruct_mapping(data.mapping, work)
        recon, centre_errors, scale = aligned(recon, data.mapping)
        print(f"{data.name}: {len(recon.frames)} of {len(data.mapping.frames)} mapping photos "
              f"posed{f' in {sfm_seconds:.0f} s' if sfm_seconds else ' (reused)'}; centres after "
              f"the similarity: median {np.median(centre_errors) * 100:.1f} cm, max "
              f"{centre_errors.max() * 100:.1f} cm (scale {scale:.3f})", flush=True)
        camera = recon.frames[0].intrinsics
        queries = data.queries["query"]
        recon_queries = dataclasses.replace(
            queries, frames=[dataclasses.replace(f, intrinsics=camera) for f in queries.frames])
        variants = {"truth": Dataset(f"{data.name}-truth", "real", data.mapping, {"query": queries}),
                    "reconstructed": Dataset(f"{data.name}-recon", "real", recon,
                                             {"query": recon_queries})}
        row = {"set": data.name, "posed": len(recon.frames), "mapping": len(data.mapping.frames),
               "sfm_seconds": sfm_seconds, "centre_median_m": float(np.median(centre_errors)),
               "centre_max_m": float(centre_errors.max()), "queries": len(queries.frames),
               "methods": {}}
        for method in args.methods:
            for variant, ds in variants.items():
                run = run_method(method, ds, work, {})
                errs = run.errors["query"]
                good = sum(r <= 10 and t <= 0.10 for r, t in errs)
                finite = [t for _, t in errs if math.isfinite(t)]
                row["methods"].setdefault(method, {})[variant] = {
                    "within_10cm_10deg": good, "median_m": float(np.median([t for _, t in errs])),
                    "localized": len(finite), "mapping_seconds": run.mapping_seconds}
        report.append(row)
        print(f"\n{data.name}: {row['queries']} queries, within 10 cm / 10 deg (median translation error)")
        print(f"{'method':<18}{'ground-truth poses':>24}{'reconstructed, aligned':>26}{'difference':>12}")
        for method, v in row["methods"].items():
            cells = [_cell(v[k], row["queries"]) for k in ("truth", "reconstructed")]
            gain = 100 * (v["reconstructed"]["within_10cm_10deg"]
                          - v["truth"]["within_10cm_10deg"]) / row["queries"]
            print(f"{METHOD_LABELS[method]:<18}{cells[0]:>24}{cells[1]:>26}{gain:>+9.0f} pts",
                  flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
