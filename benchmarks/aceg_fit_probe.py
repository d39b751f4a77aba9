"""Is ACE-G limited by how well a map code fits the mapping views, or by generalisation?

    .venv/bin/python benchmarks/aceg_fit_probe.py /work/data/heldout 0 300:0.01 300:0.005 1200:0.01

Maps one synthetic scene (``aceg synth`` layout; SCENE_INDEX in sorted order) with ACE-G
(fast preset otherwise) once per ITERATIONS:LR_MAX[:BATCH] setting and localizes three
sets: every 4th **mapping** frame (the views the code was fitted to), ``query_same`` and
``query_light``. Prints, per setting, the mapping time, the last training statistics
(median reprojection error in px, fraction of patches within 10 px) and per set the median
position error (m) and the % of images within 10 cm / 10 deg. If the mapping views are
themselves localized poorly, the bottleneck is the fit (code + transformer capacity or
optimisation), not generalisation to other lighting or viewpoints.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from aceg.data.images import load_image
from aceg.evaluation.benchmark import synthetic_datasets
from aceg.evaluation.metrics import pose_errors
from aceg.localization.localizer import Localizer
from aceg.mapping.mapper import map_scene


def parse_setting(text: str) -> tuple[int, float, int | None]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ITERATIONS:LR_MAX[:BATCH]")
    return int(parts[0]), float(parts[1]), int(parts[2]) if len(parts) == 3 else None


def summarise(localizer: Localizer, frames) -> dict:
    errors = []
    for frame in frames:
        pose = localizer.localize(load_image(frame.image_path), frame.intrinsics, name=frame.name).cam_to_world
        errors.append(pose_errors(pose, frame.cam_to_world) if pose is not None else (np.inf, np.inf))
    rot, trans = np.array(errors).T
    return {"median_m": round(float(np.median(trans)), 3),
            "within_10cm_10deg": round(float(np.mean((trans < 0.1) & (rot < 10)) * 100), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder of synthetic scenes (aceg synth)")
    parser.add_argument("scene", type=int, help="index of the scene in sorted order")
    parser.add_argument("settings", nargs="+", type=parse_setting, metavar="ITERATIONS:LR_MAX[:BATCH]")
    parser.add_argument("--regressor", default=None, help="regressor file (default: shipped)")
    args = parser.parse_args()

    data = synthetic_datasets(args.root)[args.scene]
    mapping = data.mapping
    sets = {"mapping_views": mapping.subset(range(0, len(mapping), 4), name="mapping_views"),
            "query_same": data.queries["query_same"], "query_light": data.queries["query_light"]}
    with tempfile.TemporaryDirectory() as tmp:
        for iterations, lr_max, batch in args.settings:
            path = Path(tmp) / f"{iterations}-{lr_max}-{batch}.map"
            start = time.perf_counter()
            result = map_scene(mapping, path, method="aceg", preset="fast", iterations=iterations,
                               lr_max=lr_max, batch_size=batch, regressor=args.regressor,
                               progress=False)
            row = {"mapping_s": round(time.perf_counter() - start, 1),
                   "train": {k: round(float(v), 3) for k, v in result.stats.items()}}
            localizer = Localizer(path, regressor=args.regressor)
            row.update({name: summarise(localizer, scene.frames) for name, scene in sets.items()})
            print(f"{data.name} iterations={iterations} lr_max={lr_max} batch={batch or 'preset'}: "
                  + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
