"""Benchmark: ``aceg reconstruct`` with COLMAP's SIFT against XFeat + LighterGlue features
(issue 32), side by side in one run, on real photos whose poses are withheld.

For each set (a Strecha set's ``images/`` folder) and each variant, the photos are posed
by :func:`aceg.data.reconstruct.reconstruct` (exhaustive matching, one shared camera) and
compared with the ground truth (:func:`aceg.data.readers.read_scene` of the set): the
recovered camera centres are aligned to the true ones by a similarity (Umeyama), then the
camera-centre errors (cm) and the rotation errors (deg, of the aligned camera-to-world
rotations) are taken. Printed per set and variant: images registered, wall seconds and
process CPU seconds (the machine may be shared: CPU seconds are steadier), mean
reprojection error (px of the stored images), centre error median / max, rotation error
median / max, the focal length found and the ground truth's.

Variants: ``sift``; ``xfeat`` (the defaults of :mod:`aceg.data.reconstruct`);
``xfeat:K:S``, XFeat with at most K keypoints per image at long side S px.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/sfm_features.py \\
        --sets fountain-P11 --variants sift xfeat:2048:1024 xfeat xfeat:4096:1024 \\
        --work /tmp/sfm-features
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/sfm_features.py \\
        --sets castle-P30 --variants sift xfeat:2048:1024 xfeat --work /tmp/sfm-features

(logged together in ``benchmarks/results/sfm-features.log``, whose first lines say how the
variant names of those runs map to these).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from aceg.data.readers import read_scene
from aceg.data.reconstruct import ReconstructSettings, reconstruct
from aceg.evaluation.metrics import similarity_alignment

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "strecha"
SETS = ("fountain-P11", "castle-P30")
VARIANTS = ("sift", "xfeat", "xfeat:2048:1024")


def settings_of(variant: str) -> ReconstructSettings:
    """The reconstruction settings a variant name stands for (module docstring)."""
    if variant == "sift":
        return ReconstructSettings(features="sift", progress=False)
    parts = variant.split(":")
    if parts[0] != "xfeat" or len(parts) not in (1, 3):
        raise SystemExit(f"unknown variant {variant!r}: sift, xfeat or xfeat:K:S")
    extra = {} if len(parts) == 1 else {"xfeat_keypoints": int(parts[1]),
                                        "xfeat_long_side": int(parts[2])}
    return ReconstructSettings(features="xfeat", progress=False, **extra)


def errors_against_truth(out: Path, truth) -> dict:
    """Centre errors (m) and rotation errors (deg) of the scene at ``out`` after the
    similarity aligning its centres with ``truth``'s (frames matched by name without the
    suffix: undistorted images are written as PNG)."""
    recon = read_scene(out)
    truth_by_stem = {Path(f.name).stem: f for f in truth.frames}
    frames = [f for f in recon.frames if Path(f.name).stem in truth_by_stem]
    if len(frames) < 3:
        raise SystemExit(f"{out}: {len(frames)} frames named as in the ground truth")
    true = [truth_by_stem[Path(f.name).stem] for f in frames]
    src = np.array([f.camera_centre for f in frames])
    dst = np.array([f.camera_centre for f in true])
    s, rotation, t = similarity_alignment(src, dst)
    centres = np.linalg.norm(s * src @ rotation.T + t - dst, axis=1)
    angles = []
    for f, g in zip(frames, true, strict=True):
        relative = (rotation @ f.cam_to_world[:3, :3]).T @ g.cam_to_world[:3, :3]
        angles.append(np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1, 1))))
    return {"centres": centres, "angles": np.array(angles),
            "true_focal": float(true[0].intrinsics.K[0, 0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="the Strecha folder")
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--work", type=Path, required=True,
                    help="scratch folder for the reconstructions (emptied per run)")
    args = ap.parse_args()
    header = (f"{'set':<14}{'variant':<17}{'posed':>7}{'wall s':>8}{'cpu s':>8}{'reproj px':>10}"
              f"{'centre cm med/max':>19}{'rot deg med/max':>17}{'focal px':>16}")
    rows = []
    for name in args.sets:
        truth = read_scene(args.data / name)
        for variant in args.variants:
            out = args.work / f"{name}-{variant.replace(':', '-')}"
            shutil.rmtree(out, ignore_errors=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            wall, cpu = time.perf_counter(), time.process_time()
            result = reconstruct(args.data / name / "images", out, settings_of(variant))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            err = errors_against_truth(out, truth)
            c, a, focal = err["centres"] * 100, err["angles"], err["true_focal"]
            row = (f"{name:<14}{variant:<17}{f'{result.registered}/{len(truth)}':>7}{wall:>8.0f}"
                   f"{cpu:>8.0f}{result.reprojection_px:>10.2f}"
                   f"{f'{np.median(c):.1f} / {c.max():.1f}':>19}"
                   f"{f'{np.median(a):.2f} / {a.max():.2f}':>17}"
                   f"{f'{result.focal_px:.0f} ({focal:.0f})':>16}")
            rows.append(row)
            print(row, flush=True)
    print("\n" + header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
