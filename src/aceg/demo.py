"""The end-to-end demonstration behind ``aceg demo``: scene, map, localize, evaluate, show.

Steps (on CPU; the same code uses CUDA when present):

1. **Scene**: by default a small synthetic room generated on the spot
   (:data:`DEMO_SETTINGS`, seed :func:`demo_seed`, never used for pre-training):
   ``mapping/`` under lighting A, ``query_same/`` (new viewpoints, same lighting) and
   ``query_light/`` (the same viewpoints under lighting B). With a user scene
   (:func:`demo_splits`): its ``mapping/`` and ``query*/`` sub-folders if it has them,
   otherwise every ``query_every``-th frame is a query and the rest is mapped.
2. **Map** with one of :data:`aceg.mapping.mapper.MODELS` (the anchor model by default;
   the model's shipped weights unless others are given).
3. **Localize** every query split; poses files in the ACE results format.
4. **Evaluate** against the queries' ground-truth poses: one accuracy table.
5. **Show**: the map's point cloud (predicted scene coordinates of the mapping images,
   uncertainty-filtered) as a PLY, and a PNG with the error CDFs and a top-down view of
   the point cloud, mapping cameras and ground-truth vs estimated query cameras.

Everything goes into one output folder; each file is written atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aceg.data.readers import read_scene
from aceg.data.scene import Scene
from aceg.errors import AcegError

#: Pre-training uses base seeds below 900000; the demo's scene is index 0 of base 900000.
DEMO_BASE_SEED = 900_000

#: What the demo generates: a small room, quick to map and localize on a CPU.
DEMO_SETTINGS = dict(frames_mapping=60, frames_query=20, height=240, width=320,
                     splits=("mapping", "query_same", "query_light"))

#: Points kept in the PLY and the figure (random subsample, seeded).
MAX_CLOUD_POINTS = 200_000


def demo_seed() -> int:
    from aceg.data.synthetic.generate import scene_seed

    return scene_seed(DEMO_BASE_SEED, 0)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced. ``tables`` maps a query split to its accuracy
    table; ``files`` names every file written."""

    out: Path
    tables: dict = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def demo_splits(path: str | Path, query_every: int = 4, fmt: str | None = None
                ) -> tuple[Scene, dict[str, Scene]]:
    """(mapping scene, {split name: query scene}) of a user's scene folder.

    A folder with ``mapping/`` and ``query*/`` sub-folders (the ``aceg synth`` layout) uses
    them; any other scene is split by index: frames with ``index % query_every == 1`` are
    queries, the rest is mapped (the same rule as ``aceg map --split``).
    """
    path = Path(path)
    if not path.exists():
        raise AcegError(f"{path}: scene not found")
    if (path / "mapping").is_dir():
        queries = {q.name: read_scene(q, fmt) for q in sorted(path.iterdir())
                   if q.is_dir() and q.name.startswith("query")}
        if not queries:
            raise AcegError(f"{path}: has mapping/ but no query*/ folder to localize")
        return read_scene(path / "mapping", fmt), queries
    if query_every < 2:
        raise AcegError(f"--query-every {query_every}: must be at least 2")
    scene = read_scene(path, fmt)
    if len(scene) < query_every:
        raise AcegError(f"{path}: {len(scene)} frame(s); need at least {query_every} to map "
                        "some and query the rest")
    mapping, queries = scene.split_every(query_every, 1)
    return mapping, {"query": queries}


def run_demo(out: str | Path, scene: str | Path | None = None, query_every: int = 4,
             model: str = "anchors", regressor=None, short_side: int | None = None,
             fmt: str | None = None, log=print, **settings) -> DemoResult:
    """Run the demonstration into ``out`` (see module docstring) and return its results.
    ``model``, ``regressor`` and ``settings`` (e.g. ``preset="fast"`` for the optimised
    models) are those of :func:`aceg.mapping.mapper.map_scene`."""
    from aceg.data.images import DEFAULT_SHORT_SIDE
    from aceg.evaluation.metrics import format_tables
    from aceg.localization.localizer import Localizer
    from aceg.mapping.mapper import map_scene
    from aceg.visualization.map_cloud import map_point_cloud
    from aceg.visualization.plots import results_figure, save_figure
    from aceg.visualization.pointcloud import write_ply

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out)
    t0 = time.perf_counter()

    mapping, queries, label = _demo_scene(out, scene, query_every, fmt, log)
    result.seconds["scene"] = time.perf_counter() - t0
    log(f"      {len(mapping)} mapping images; queries: "
        + ", ".join(f"{k} {len(v)}" for k, v in queries.items()))

    log(f"[2/5] mapping with the {model} model")
    map_path = out / "map.map"
    t = time.perf_counter()
    mapped = map_scene(mapping, map_path, model=model, regressor=regressor,
                       short_side=short_side or DEFAULT_SHORT_SIDE, progress=True, **settings)
    result.seconds["mapping"] = time.perf_counter() - t
    result.files["map"] = map_path
    log(f"      map {map_path} ({mapped.file_size / 1024:.0f} KB) in "
        f"{result.seconds['mapping']:.0f} s"
        + (f", regressor: {mapped.regressor_source}" if mapped.regressor_source else ""))

    log("[3/5] localizing the queries")
    localizer = Localizer(map_path, regressor=regressor)
    t = time.perf_counter()
    errors, cameras, query_times = _localize_queries(localizer, queries, result)
    result.seconds["localization"] = time.perf_counter() - t

    log("[4/5] accuracy against the ground-truth poses")
    log(format_tables(result.tables))
    if query_times:
        log(f"      median query time {1000 * float(np.median(query_times)):.0f} ms")

    log("[5/5] point cloud and figure")
    bar = tqdm(total=len(mapping), desc="point cloud", unit="img", leave=False)
    cloud = map_point_cloud(localizer, mapping, max_points=MAX_CLOUD_POINTS, progress=bar.update)
    bar.close()
    ply_path = out / "map_cloud.ply"
    if len(cloud.points):
        write_ply(ply_path, cloud.points, cloud.colors)
        result.files["point_cloud"] = ply_path
    else:
        log("      no map point survived the filters: no PLY written")
    gt_all = np.concatenate([q.camera_centres() for q in queries.values()])
    title = (f"aceg demo: {label}, {len(mapping)} mapping images, {model} map "
             f"{mapped.file_size / 1024:.0f} KB")
    fig = results_figure(errors, gt_all, cameras, title=title,
                         cloud=cloud.points if len(cloud.points) else None,
                         cloud_colors=cloud.colors if len(cloud.points) else None,
                         mapping_centres=mapping.camera_centres())
    figure_path = out / "demo.png"
    save_figure(fig, figure_path)
    result.files["figure"] = figure_path
    result.seconds["total"] = time.perf_counter() - t0
    return result


def _demo_scene(out: Path, scene: str | Path | None, query_every: int, fmt: str | None,
                log) -> tuple[Scene, dict[str, Scene], str]:
    """(mapping scene, {split: query scene}, label) of the demo: the synthetic room,
    generated into ``out/scene`` unless there already, or the user's ``scene``."""
    if scene is None:
        from aceg.data.synthetic.generate import generate_scene

        seed = demo_seed()
        scene_dir = out / "scene"
        log(f"[1/5] generating a synthetic room (seed {seed}) into {scene_dir}")
        if not (scene_dir / "scene.json").is_file():
            generate_scene(scene_dir, seed, **DEMO_SETTINGS)
        mapping, queries = demo_splits(scene_dir)
        return mapping, queries, f"synthetic room (seed {seed})"
    log(f"[1/5] reading {scene}")
    mapping, queries = demo_splits(scene, query_every, fmt)
    return mapping, queries, Path(scene).resolve().name


def _localize_queries(localizer, queries: dict[str, Scene], result: DemoResult
                      ) -> tuple[list, list, list[float]]:
    """Localize every query split, write its poses file into ``result.out`` and record it
    and its accuracy table in ``result``. Returns the figure's error series and camera
    series per split, and the query times (seconds) of the localized images."""
    from aceg.evaluation.results import PoseResult, evaluate_results, write_results
    from aceg.visualization.plots import CameraSeries, ErrorSeries

    errors, cameras, query_times = [], [], []
    for split, qscene in queries.items():
        results = []
        for frame in tqdm(qscene.frames, desc=split, unit="img"):
            r = localizer.localize_frame(frame)
            if r.localized:
                query_times.append(r.timings["total"])
            results.append(PoseResult(frame.name, r.cam_to_world, r.inliers, reason=r.reason,
                                      confident=r.confident if r.localized else None,
                                      centre_std_m=r.centre_std_m))
        evaluated, table = evaluate_results(qscene, results)
        poses_path = result.out / f"poses_{split}.txt"
        write_results(poses_path, evaluated)
        result.files[f"poses_{split}"] = poses_path
        result.tables[split] = table
        errors.append(ErrorSeries(split, np.array([r.rot_err_deg for r in evaluated]),
                                  np.array([r.trans_err_m for r in evaluated])))
        frames = qscene.by_name()
        done = [r for r in evaluated if r.localized]
        cameras.append(CameraSeries(
            split, np.array([r.cam_to_world[:3, 3] for r in done]).reshape(-1, 3),
            np.array([frames[r.name].camera_centre for r in done]).reshape(-1, 3)))
    return errors, cameras, query_times
