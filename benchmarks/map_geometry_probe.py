"""How good is a map's geometry? Scene coordinates against depth, on the mapping views too.

    .venv/bin/python benchmarks/map_geometry_probe.py /work/data/heldout 0 1 2 3 --model transformer --preset fast
    .venv/bin/python benchmarks/map_geometry_probe.py /work/data/heldout 0 1 --model ace --preset fast
    .venv/bin/python benchmarks/map_geometry_probe.py /work/data/heldout 0 --depth      # anchors from depth
    .venv/bin/python benchmarks/map_geometry_probe.py /work/data/heldout 0 --model ace --triangulate  # RGB, triangulated depth
    .venv/bin/python benchmarks/map_geometry_probe.py /work/data/heldout 0 --model ace --iterations 1200

Maps each synthetic scene (``aceg synth`` layout; indices in sorted order) from its
``mapping/`` split with the given model and settings, then, for every 4th mapping view
and every image of ``query_same`` and ``query_light``, predicts one scene coordinate per
patch and compares it with the scene coordinate of the rendered depth at the patch centre:

* ``3d``: median 3-D error (m) and % of patches within 10 cm;
* ``depth ratio``: predicted / true camera depth (z in the image's own camera), median and
  the 10-90 % range: a map can reproject well and still be off *along the rays*;
* ``reproj``: median reprojection error (px) under the ground-truth pose, % within 10 px:
  what RANSAC-PnP sees;
* ``pose``: % of images within 10 cm / 10 deg and the median position error (m), with the
  localizer's defaults.

Reprojection-only mapping constrains each patch's coordinate across its ray only; the
depth along the ray comes from several views agreeing. Comparing ``3d`` with ``reproj``
on the mapping views tells whether a map is geometrically right or only right in the
views it was fitted to. Synthetic scenes carry exact depth, which is why this probe reads
them (real sets in ``../shared/data`` have none).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from aceg.data.camera import backproject, invert_pose, project
from aceg.data.images import prepare_image
from aceg.evaluation.benchmark import synthetic_datasets
from aceg.evaluation.metrics import accuracy_table, pose_errors
from aceg.localization.localizer import Localizer
from aceg.mapping.buffer import DEFAULT_AUGMENT
from aceg.mapping.mapper import MODELS, map_scene

SPLITS = ("mapping_views", "query_same", "query_light")


def frame_geometry(loc: Localizer, frame) -> dict[str, np.ndarray]:
    """Per-patch 3-D error (m), depth ratio and reprojection error (px) of one posed frame
    with depth; patches without depth are left out."""
    prep = prepare_image(frame.image_path, frame.intrinsics, loc.data.short_side,
                         loc.encoder.stride, depth_path=frame.depth_path)
    feats = loc.encoder.encode(prep.rgb)[0]
    world, _ = loc.predict(feats)
    pixels = loc.encoder.centres(*feats.shape[1:]).astype(np.float64)
    ij = np.round(pixels).astype(int)
    depth = prep.depth[ij[:, 1], ij[:, 0]].astype(np.float64)
    K = prep.intrinsics.K
    truth = backproject(pixels, depth, K, frame.cam_to_world)
    w2c = invert_pose(frame.cam_to_world)
    z = world @ w2c[2, :3] + w2c[2, 3]  # predicted camera depth
    reproj = np.linalg.norm(project(world, K, frame.cam_to_world) - pixels, axis=1)
    reproj[np.isnan(reproj)] = np.inf  # behind the camera
    ok = depth > 0
    return {"err3d": np.linalg.norm(world - truth, axis=1)[ok], "ratio": z[ok] / depth[ok],
            "reproj": reproj[ok]}


def summarise(rows: list[dict[str, np.ndarray]], errors: list[tuple[float, float]]) -> dict:
    err3d = np.concatenate([r["err3d"] for r in rows])
    ratio = np.concatenate([r["ratio"] for r in rows])
    reproj = np.concatenate([r["reproj"] for r in rows])
    table = accuracy_table([e[0] for e in errors], [e[1] for e in errors])
    return {
        "3d": f"{np.median(err3d):.3f} m, {100 * np.mean(err3d < 0.1):.0f}% <10cm",
        "depth ratio": "{:.2f} [{:.2f}-{:.2f}]".format(*np.quantile(ratio, [0.5, 0.1, 0.9])),
        "reproj": f"{np.median(reproj):.1f} px, {100 * np.mean(reproj < 10):.0f}% <10px",
        "pose": f"{table.within['10cm/10deg']:.0f}% 10cm/10deg, median {table.median_trans_m:.3f} m",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder of synthetic scenes (aceg synth)")
    parser.add_argument("scenes", type=int, nargs="+", help="scene indices in sorted order")
    parser.add_argument("--model", choices=MODELS, default=MODELS[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's")
    parser.add_argument("--depth", action="store_true", help="map with depth supervision (RGB-D)")
    parser.add_argument("--triangulate", action="store_true",
                        help="map with depth triangulated between the mapping images (RGB only)")
    parser.add_argument("--relight", type=float, default=0.0,
                        help="relighting strength of the augmented passes (AugmentConfig.relight)")
    parser.add_argument("--passes", type=int, default=None, help="override the preset's")
    parser.add_argument("--regressor", default=None, help="ACE-G regressor file (default: shipped)")
    args = parser.parse_args()

    datasets = synthetic_datasets(args.root)
    pooled: dict[str, tuple[list, list]] = {s: ([], []) for s in SPLITS}
    for index in args.scenes:
        data = datasets[index]
        splits = {"mapping_views": data.mapping.frames[::4],
                  "query_same": data.queries["query_same"].frames,
                  "query_light": data.queries["query_light"].frames}
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            settings = {"use_depth": args.depth}
            if args.model != "anchors":  # the optimised models
                settings.update(preset=args.preset, iterations=args.iterations,
                                triangulate=args.triangulate, passes=args.passes,
                                augment=replace(DEFAULT_AUGMENT, relight=args.relight))
            regressor = args.regressor if args.model != "ace" else None
            result = map_scene(data.mapping, Path(tmp) / "scene.map", args.model, regressor,
                               progress=False, **settings)
            seconds = time.perf_counter() - t
            loc = Localizer(result.path, regressor=regressor)
            row = {"mapping_s": round(seconds, 1), "train_median_px": result.stats.get("median_px")}
            if args.triangulate:
                row["triangulated"] = result.stats.get("triangulated")
            for split, frames in splits.items():
                geometry = [frame_geometry(loc, f) for f in frames]
                errors = []
                for f in frames:
                    r = loc.localize_frame(f)
                    errors.append(pose_errors(r.cam_to_world, f.cam_to_world) if r.localized
                                  else (np.inf, np.inf))
                pooled[split][0].extend(geometry)
                pooled[split][1].extend(errors)
                row[split] = summarise(geometry, errors)
        print(f"{data.name}: " + json.dumps(row), flush=True)
    if len(args.scenes) > 1:
        print("pooled: " + json.dumps({s: summarise(*pooled[s]) for s in SPLITS}), flush=True)


if __name__ == "__main__":
    main()
