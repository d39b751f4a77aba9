"""Triangulation probe: how many patch cells of the mapping images get a depth, and how
right it is, for the triangulated depth maps of `aceg map` (any triangulation settings) and
for the same maps refined by :func:`aceg.mapping.triangulation.refine_cell_depth`.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/triangulation_probe.py /work/data/heldout 0 1 \
        --cache /work/data/tri-cache --triangulation '{"method": "pairs"}' \
        --refine '{"fill": false}' '{"smooth": false}' '{}'

Scenes need depth maps (synthetic ones have them): the truth is the rendered depth at each
cell centre. Prints, per setting, the % of cells with a depth and, of those, the % within
2 / 5 / 10 cm of the true depth along the camera axis, and the median error.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from aceg.data.images import prepare_image
from aceg.data.readers import read_scene
from aceg.mapping.triangulation import (
    TRIANGULATION_CONFIG,
    refine_cell_depth,
    triangulated_depth_maps,
)
from aceg.model.encoder import get_encoder


def sparse_maps(root: Path, cache: Path | None, stride: int, overrides: dict,
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(triangulated maps, true depth maps) of a scene's mapping split, both in the
    prepared images' pixels; the triangulated ones cached as .npz when ``cache`` is given."""
    scene = read_scene(root / "mapping")
    short = scene.working_short_side(480)
    truth = [prepare_image(f.image_path, f.intrinsics, short, multiple_of=stride,
                           depth_path=f.depth_path).depth for f in scene.frames]
    return cached_triangulation(scene, short, stride, overrides, cache / root.name if cache else None), truth


def cached_triangulation(scene, short: int, stride: int, overrides: dict, stem: Path | None,
                         ) -> list[np.ndarray]:
    """The scene's triangulated depth maps with ``TRIANGULATION_CONFIG`` changed by
    ``overrides``; cached in ``stem`` + a suffix naming the overrides + .npz when given."""
    suffix = "".join(f"-{k}={v}" for k, v in sorted(overrides.items()))
    path = stem.with_name(f"{stem.name}{suffix}.npz") if stem is not None else None
    if path is not None and path.exists():
        data = np.load(path)
        return [data[str(i)] for i in range(len(scene.frames))]
    t0 = time.perf_counter()
    maps, stats = triangulated_depth_maps(scene, short, stride, replace(TRIANGULATION_CONFIG, **overrides),
                                          progress=False, refine=False)
    print(f"{stem.name if stem else scene.name}{suffix}: triangulated in {time.perf_counter() - t0:.1f} s "
          f"({stats['points']} points)", flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{str(i): m for i, m in enumerate(maps)})
    return maps


def score(maps: list[np.ndarray], truth: list[np.ndarray], stride: int) -> str:
    errs, cells = [], 0
    for m, t in zip(maps, truth, strict=True):
        hh, ww = min(m.shape[0], t.shape[0]), min(m.shape[1], t.shape[1])
        a = m[stride // 2: hh: stride, stride // 2: ww: stride]
        b = t[stride // 2: hh: stride, stride // 2: ww: stride]
        cells += a.size
        ok = (a > 0) & (b > 0)
        errs.append(np.abs(a[ok] - b[ok]))
    e = np.concatenate(errs)
    return (f"{100 * e.size / cells:5.1f} % of cells | within 2/5/10 cm: {100 * (e <= 0.02).mean():.1f} / "
            f"{100 * (e <= 0.05).mean():.1f} / {100 * (e <= 0.10).mean():.1f} % | median {100 * np.median(e):.1f} cm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("scenes", nargs="+", type=int)
    ap.add_argument("--cache", type=Path, default=None, help="folder caching the triangulated maps")
    ap.add_argument("--triangulation", type=json.loads, default={},
                    help="fields of TRIANGULATION_CONFIG to change, as JSON (e.g. '{\"method\": \"pairs\"}')")
    ap.add_argument("--refine", nargs="*", type=json.loads, default=[],
                    help="keyword arguments of refine_cell_depth to compare, one JSON object each")
    args = ap.parse_args()
    stride = get_encoder("xfeat").stride
    pairs = [sparse_maps(Path(args.root) / f"scene_{s:04d}", args.cache, stride, args.triangulation) for s in args.scenes]
    maps = [m for p in pairs for m in p[0]]
    truth = [t for p in pairs for t in p[1]]
    print(f"triangulated | {score(maps, truth, stride)}")
    for kwargs in args.refine:
        refined = [refine_cell_depth(m, stride, **kwargs) for m in maps]
        print(f"refined {json.dumps(kwargs)} | {score(refined, truth, stride)}", flush=True)

if __name__ == "__main__":
    main()
