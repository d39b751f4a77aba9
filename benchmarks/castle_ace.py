"""ACE baseline on Strecha castle-P30: map frames with index % 3 != 1, localize the rest.

    .venv/bin/python benchmarks/castle_ace.py [--encoder xfeat] [--short-side 480]
        [--iterations 2000] [--passes 4] [--patches N] [--lr 5e-3] [--width 512]
        [--blocks 2] [--seed 0]

Best configuration so far (see BENCHMARKS.md; median 0.222 m / 0.32 deg):
    .venv/bin/python benchmarks/castle_ace.py --encoder xfeat-up2 --iterations 4000 --passes 3 \
        --patches 8000

Prints mapping time, training statistics, per-query errors and the accuracy table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from aceg.data.readers import read_scene
from aceg.evaluation.metrics import accuracy_table, format_table, pose_errors
from aceg.localization.localizer import Localizer
from aceg.mapping.buffer import AugmentConfig
from aceg.mapping.mapper import map_scene
from aceg.model.ace_head import AceHeadConfig
from aceg.model.encoder import get_encoder

ROOT = Path(__file__).resolve().parents[1]
CASTLE = ROOT.parent / "shared" / "data" / "strecha" / "castle-P30"


def run(scene_path: Path, method: str, encoder: str, short_side: int, iterations: int,
        passes: int, patches: int | None, lr: float, width: int, blocks: int, batch: int,
        augment: bool, preset: str, out: Path | None, regressor=None, seed: int = 0) -> dict:
    scene = read_scene(scene_path)
    mapping, queries = scene.split_every(3, 1)
    out = out or Path(tempfile.mkdtemp()) / f"{scene.name}-{method}.map"
    enc = get_encoder(encoder)
    t = time.perf_counter()
    result = map_scene(
        mapping, out, model=method, preset=preset,
        **({"encoder": encoder, "head_config": AceHeadConfig(enc.feature_dim, width, blocks)}
           if method == "ace" else {"regressor": regressor}),
        short_side=short_side, iterations=iterations, passes=passes,
        patches_per_pass=patches, lr_max=lr, batch_size=batch,
        augment=AugmentConfig() if augment else None, seed=seed, progress=False,
    )
    map_s = time.perf_counter() - t
    loc = Localizer(out, regressor=regressor)
    rot, trans, times, inl = [], [], [], []
    for f in queries:
        r = loc.localize_frame(f)
        times.append(r.timings.get("total", np.nan))
        inl.append(r.inliers)
        if r.localized:
            e = pose_errors(r.cam_to_world, f.cam_to_world)
        else:
            e = (np.inf, np.inf)
        rot.append(e[0])
        trans.append(e[1])
        print(f"  {f.name}: {e[1]:.3f} m {e[0]:.2f} deg, {r.inliers} inliers "
              f"/ {r.correspondences}{'' if r.localized else ' ' + r.reason}")
    table = accuracy_table(rot, trans)
    within_1m = float(np.mean((np.array(trans) <= 1.0) & (np.array(rot) <= 10.0)))
    print(format_table(table, f"{method}/{encoder}"))
    print(f"mapping {map_s:.0f} s ({result.patches} patches, {result.iterations} it), "
          f"train stats {result.stats}, map {result.file_size / 1e6:.2f} MB, "
          f"query median {1000 * np.median(times):.0f} ms, within 1m/10deg {100 * within_1m:.0f}%")
    return {"table": table, "map_s": map_s, "stats": result.stats, "query_ms": 1000 * np.median(times),
            "within_1m10deg": within_1m, "median_inliers": float(np.median(inl))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, default=CASTLE)
    ap.add_argument("--method", default="ace", choices=["ace", "transformer"])
    ap.add_argument("--encoder", default="xfeat")
    ap.add_argument("--short-side", type=int, default=480)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--patches", type=int, default=None, help="patches per image and pass")
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("default")
    print(f"castle ACE benchmark: {vars(args)}")
    run(args.scene, args.method, args.encoder, args.short_side, args.iterations, args.passes,
        args.patches, args.lr, args.width, args.blocks, args.batch, not args.no_augment,
        args.preset, args.out, seed=args.seed)


if __name__ == "__main__":
    main()
