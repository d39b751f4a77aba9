"""Generate a synthetic scene: layout, textures, lightings, camera paths, rendered splits.

A scene folder holds one sub-folder per split in the ACE / DSAC* layout
(:mod:`aceg.data.synthetic.ace_layout`), ``scene.json`` (generator version, seed, settings,
camera, layout, lightings, split statistics) and ``contact_sheet.png``:

* ``mapping/``: the scanning path under lighting A;
* ``query_same/``: new viewpoints near the path, lighting A;
* ``query_light/``: the same poses as ``query_same`` under lighting B (so any difference
  between the two is due to light alone: depth is identical);
* ``query_view/``: viewpoints farther from the path (other heights, opposite directions),
  lighting A;
* ``query_moved/`` (optional): viewpoints like ``query_same`` with a few objects displaced.

All randomness flows from the scene seed through independent streams (layout and
textures, camera, lighting, paths, queries, moved objects), so the same seed gives the same
scene: depth is byte-identical, images equal up to the renderer's float rounding.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from aceg import __version__
from aceg.data.camera import Intrinsics
from aceg.data.synthetic.ace_layout import AceSplitWriter
from aceg.data.synthetic.contact_sheet import thumbnail, write_contact_sheet
from aceg.data.synthetic.layout import Layout, displace_objects
from aceg.data.synthetic.lighting import lighting_a, lighting_b
from aceg.data.synthetic.mesh import build_mesh
from aceg.data.synthetic.renderer import Lighting, RenderedView, Renderer
from aceg.data.synthetic.rooms import random_layout
from aceg.data.synthetic.textures import PhotoSource, TextureSet
from aceg.data.synthetic.trajectories import (
    CAMERA_CLEARANCE,
    mapping_poses,
    query_far_from_path,
    query_near_path,
    scan_path,
)
from aceg.errors import AcegError
from aceg.io import atomic_write_text

#: Bumped whenever the same seed would give a different scene.
GENERATOR_VERSION = "1"

#: All splits, in writing order.
SPLITS = ("mapping", "query_same", "query_light", "query_view", "query_moved")

#: Lighting of each split.
SPLIT_LIGHTING = {"mapping": "A", "query_same": "A", "query_light": "B", "query_view": "A",
                  "query_moved": "A"}

#: Camera paths tried before giving up on a scene.
PATH_ATTEMPTS = 4

#: Width (pixels) of the quick low-resolution render that vets candidate views.
CHECK_WIDTH = 80


@dataclass(frozen=True)
class SynthSettings:
    """What to generate for each scene.

    Attributes:
        frames_mapping: frames of the mapping split.
        frames_query: frames of each query split.
        height, width: image size in pixels.
        splits: splits to write (``mapping`` is always written).
        min_median_depth: reject views whose median depth is below this (metres).
        max_near_fraction: reject views with more than this fraction closer than 0.25 m.
        max_plain_fraction: reject views with more than this fraction of plain surfaces.
        max_single_surface_fraction: reject views filled this much by one surface.
        moved_objects: objects displaced in ``query_moved``.
        texture_size: texture layer side in texels.
        contact_sheet: write ``contact_sheet.png``.
        texture_dirs: extra photo folders (None: ``shared/data/textures`` if it has a
            SOURCES.md).
    """

    frames_mapping: int = 200
    frames_query: int = 50
    height: int = 240
    width: int = 320
    splits: tuple[str, ...] = SPLITS
    min_median_depth: float = 0.5
    max_near_fraction: float = 0.05
    max_plain_fraction: float = 0.6
    max_single_surface_fraction: float = 0.9
    moved_objects: int = 3
    texture_size: int = 512
    contact_sheet: bool = True
    texture_dirs: tuple[str, ...] | None = field(default=None)

    def check(self) -> None:
        """Raise :class:`AcegError` for unusable settings."""
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown:
            raise AcegError(f"unknown split(s) {', '.join(unknown)}; known: {', '.join(SPLITS)}")
        if self.frames_mapping < 1 or self.frames_query < 0:
            raise AcegError("need at least 1 mapping frame and a non-negative query count")
        if self.height < 16 or self.width < 16 or self.height > 4096 or self.width > 4096:
            raise AcegError(f"image size {self.height}x{self.width} out of range (16..4096)")


def scene_seed(base_seed: int, index: int) -> int:
    """Seed of scene ``index`` of a run with ``base_seed`` (a 32-bit integer).

    Derived by hashing both (numpy ``SeedSequence``), so runs with different base seeds
    give unrelated scenes: a held-out benchmark uses another base seed.
    """
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1)[0])


def camera_intrinsics(rng: np.random.Generator, width: int, height: int) -> Intrinsics:
    """A pinhole camera with a horizontal field of view of 55-80 deg, fy within 1% of fx
    and the principal point within 2% of the image centre."""
    fov_x = math.radians(rng.uniform(55.0, 80.0))
    fx = (width / 2) / math.tan(fov_x / 2)
    fy = fx * (1.0 + rng.uniform(-0.01, 0.01))
    cx = (width - 1) / 2 + rng.uniform(-0.02, 0.02) * width
    cy = (height - 1) / 2 + rng.uniform(-0.02, 0.02) * height
    return Intrinsics(fx, fy, cx, cy)


def view_is_informative(view: RenderedView, settings: SynthSettings) -> bool:
    """Whether a rendered view is worth keeping (see the thresholds of
    :class:`SynthSettings`): it sees only the room, is not too close to a surface and is
    not filled by one surface or by plain surfaces."""
    seen = view.surface >= 0
    if seen.mean() < 0.99:
        return False
    depth = view.depth[seen]
    if float(np.median(depth)) < settings.min_median_depth:
        return False
    if float(np.mean(depth < 0.25)) > settings.max_near_fraction:
        return False
    codes = view.surface[seen]
    if float(np.mean(codes & 1)) > settings.max_plain_fraction:
        return False
    largest = np.bincount(codes >> 1).max() / codes.size
    return bool(largest <= settings.max_single_surface_fraction)


class ViewChecker:
    """Validator of candidate poses for one loaded layout: free camera position, then a
    quick low-resolution render judged by :func:`view_is_informative`. ``layout``: anything
    with :meth:`Layout.is_free` (a :class:`~aceg.data.synthetic.place.Place` too)."""

    def __init__(self, renderer: Renderer, layout: Layout, intrinsics: Intrinsics,
                 lighting: Lighting | Sequence[Lighting], settings: SynthSettings):
        scale = min(1.0, CHECK_WIDTH / settings.width)
        self.width = max(8, round(settings.width * scale))
        self.height = max(6, round(settings.height * scale))
        self.K = intrinsics.scaled(self.width / settings.width, self.height / settings.height).K
        self.renderer, self.layout, self.lighting, self.settings = (renderer, layout, lighting,
                                                                    settings)

    def __call__(self, pose: np.ndarray) -> bool:
        centre = pose[:3, 3]
        if not self.layout.is_free(centre[None, :2], centre[2], CAMERA_CLEARANCE)[0]:
            return False
        view = self.renderer.render(self.K, pose, self.width, self.height, self.lighting,
                                    colour=False)
        return view_is_informative(view, self.settings)


def offset_from_mapping(split_poses: list[np.ndarray], mapping: list[np.ndarray]
                        ) -> tuple[float | None, float | None]:
    """Median over ``split_poses`` of the distance (metres) to the nearest mapping camera
    centre and of the angle (degrees) to the closest mapping viewing direction among the
    mapping cameras within 0.5 m of that distance; None for the mapping split itself."""
    if split_poses is mapping or not split_poses:
        return None, None
    centres = np.stack([p[:3, 3] for p in mapping])
    axes = np.stack([p[:3, 2] for p in mapping])
    distances, angles = [], []
    for pose in split_poses:
        d = np.linalg.norm(centres - pose[:3, 3], axis=1)
        near = d <= d.min() + 0.5
        cosines = np.clip(axes[near] @ pose[:3, 2], -1.0, 1.0)
        distances.append(d.min())
        angles.append(math.degrees(math.acos(cosines.max())))
    return round(float(np.median(distances)), 4), round(float(np.median(angles)), 2)


def split_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent random generators (layout, textures, camera, lighting, path, query,
    moved), all derived from ``seed``."""
    names = ("layout", "textures", "camera", "lighting", "path", "query", "moved")
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}


def generate_scene(out_dir: str | Path, seed: int, settings: SynthSettings | None = None,
                   renderer: Renderer | None = None, photos: PhotoSource | None = None,
                   **overrides) -> dict:
    """Generate one scene into ``out_dir`` (replaced if it exists) and return its
    ``scene.json`` content.

    Args:
        out_dir: scene folder to write.
        seed: the scene's seed (any non-negative integer).
        settings: what to generate; keyword ``overrides`` replace single fields
            (``generate_scene(path, 7, frames_mapping=20, height=60, width=80)``).
        renderer: an existing :class:`Renderer` to reuse (one per process), else one is
            created and released.
        photos: photographs to draw textures from (default: discovered once).
    """
    settings = settings or SynthSettings()
    if overrides:
        settings = SynthSettings(**{**asdict(settings), **overrides})
    settings.check()
    if seed < 0:
        raise AcegError(f"seed must be non-negative, got {seed}")
    out_dir = Path(out_dir)
    own_renderer = renderer is None
    renderer = renderer or Renderer()
    try:
        return _generate(out_dir, int(seed), settings, renderer, photos)
    finally:
        if own_renderer:
            renderer.release()


def scene_layout(seed: int, settings: SynthSettings | None = None,
                 photos: PhotoSource | None = None) -> tuple[Layout, TextureSet]:
    """The room, objects and textures of the scene with ``seed`` (as :func:`generate_scene`
    builds them), without rendering anything."""
    settings = settings or SynthSettings()
    return _layout_and_textures(split_streams(seed), settings, photos)


def _layout_and_textures(rng: dict[str, np.random.Generator], settings: SynthSettings,
                         photos: PhotoSource | None) -> tuple[Layout, TextureSet]:
    textures = scene_textures(rng, settings, photos)
    return random_layout(rng["layout"], textures), textures


def scene_textures(rng: dict[str, np.random.Generator], settings, photos: PhotoSource | None) -> TextureSet:
    """The textures of a room or place from its ``rng["textures"]`` stream, drawn from
    ``photos`` (None: the photos found with ``settings.texture_dirs`` added)."""
    if photos is None:
        extra = None if settings.texture_dirs is None else [Path(d) for d in settings.texture_dirs]
        photos = PhotoSource.discover(extra)
    return TextureSet(rng["textures"], photos, settings.texture_size)


def _generate(out_dir: Path, seed: int, settings: SynthSettings, renderer: Renderer,
              photos: PhotoSource | None) -> dict:
    rng = split_streams(seed)
    layout, textures = _layout_and_textures(rng, settings, photos)
    intrinsics = camera_intrinsics(rng["camera"], settings.width, settings.height)
    light_a, light_a_info = lighting_a(rng["lighting"], layout)
    light_b, light_b_info = lighting_b(rng["lighting"], layout, light_a)
    lightings = {"A": light_a, "B": light_b}
    renderer.load_scene(build_mesh(layout), textures.stack())
    check = ViewChecker(renderer, layout, intrinsics, light_a, settings)
    path, poses, rejected = _plan_views(layout, settings, check, rng, seed)

    tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    thumbs: dict[str, list[np.ndarray]] = {}
    stats: dict[str, dict] = {}

    def render(split: str) -> None:
        thumbs[split], stats[split] = render_split(
            renderer, tmp_dir / split, poses[split], poses["mapping"], intrinsics.K,
            SPLIT_LIGHTING[split], lightings[SPLIT_LIGHTING[split]], rejected.get(split, 0),
            settings)

    q = settings.frames_query
    try:
        for split in SPLITS:
            if split in settings.splits and split in poses:
                render(split)
        moved_names: list[str] = []
        if q > 0 and "query_moved" in settings.splits:
            moved_layout, moved_names = displace_objects(layout, rng["moved"],
                                                         settings.moved_objects)
            renderer.load_scene(build_mesh(moved_layout), None)
            moved_check = ViewChecker(renderer, moved_layout, intrinsics, light_a, settings)
            poses["query_moved"], rejected["query_moved"] = query_near_path(
                path, q, moved_check, rng["moved"])
            render("query_moved")
        info = _scene_info(seed, settings, intrinsics, path.base_height, layout, textures,
                           {"A": light_a_info, "B": light_b_info}, stats, moved_names)
        atomic_write_text(tmp_dir / "scene.json", json.dumps(info, indent=1) + "\n")
        if settings.contact_sheet:
            write_contact_sheet(tmp_dir / "contact_sheet.png", thumbs, poses)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return info


def _plan_views(layout: Layout, settings: SynthSettings, check: ViewChecker,
                rng: dict[str, np.random.Generator], seed: int):
    """The scanning path and the poses of the mapping and query splits (all but
    ``query_moved``), with the number of candidate views rejected per split."""
    poses: dict[str, list[np.ndarray]] = {}
    rejected: dict[str, int] = {}
    for attempt in range(PATH_ATTEMPTS):  # another path if this one has too few good views
        path = scan_path(layout, rng["path"])
        try:
            poses["mapping"], rejected["mapping"] = mapping_poses(
                path, settings.frames_mapping, check)
            break
        except AcegError:
            if attempt == PATH_ATTEMPTS - 1:
                raise AcegError(f"synthetic scene with seed {seed}: no camera path with "
                                f"{settings.frames_mapping} usable views") from None
    q = settings.frames_query
    wanted = set(settings.splits)
    if q > 0 and wanted & {"query_same", "query_light"}:
        poses["query_same"], rejected["query_same"] = query_near_path(path, q, check, rng["query"])
        poses["query_light"], rejected["query_light"] = poses["query_same"], 0
    if q > 0 and "query_view" in wanted:
        poses["query_view"], rejected["query_view"] = query_far_from_path(
            path, q, check, rng["query"], layout.room.height)
    return path, poses, rejected


def render_split(renderer: Renderer, split_dir: Path, split_poses: list[np.ndarray],
                 mapping: list[np.ndarray], K: np.ndarray, lighting_name: str,
                 lighting: Lighting | Sequence[Lighting], rejected: int, settings: SynthSettings,
                 keep_thumbnails: set[int] | None = None, bar=None
                 ) -> tuple[list[np.ndarray | None], dict]:
    """Render and write one split frame by frame; its thumbnails (those of
    ``keep_thumbnails`` if given, None elsewhere) and ``scene.json`` statistics. ``bar``: a
    tqdm bar advanced per frame."""
    medians, means, thumbs = [], [], []
    with AceSplitWriter(split_dir) as writer:
        for index, pose in enumerate(split_poses):
            view = renderer.render(K, pose, settings.width, settings.height, lighting)
            writer.add(f"frame_{index:05d}", view.rgb, view.depth, pose, K)
            keep = keep_thumbnails is None or index in keep_thumbnails
            thumbs.append(thumbnail(view.rgb) if keep else None)
            medians.append(float(np.median(view.depth[view.depth > 0])))
            means.append(float(view.rgb.mean()))
            if bar is not None:
                bar.update(1)
    distance, angle = offset_from_mapping(split_poses, mapping)
    return thumbs, {
        "frames": len(split_poses),
        "median_distance_to_mapping_m": distance,
        "median_angle_to_mapping_deg": angle,
        "lighting": lighting_name,
        "rejected_candidates": rejected,
        "median_depth_m": round(float(np.median(medians)), 4) if medians else None,
        "mean_intensity": round(float(np.mean(means)), 2) if means else None,
    }


def _scene_info(seed: int, settings: SynthSettings, intrinsics: Intrinsics,
                camera_height: float, layout: Layout, textures: TextureSet,
                lighting_info: dict, stats: dict, moved_names: list[str]) -> dict:
    """The content of ``scene.json``."""
    return common_scene_info("aceg.data.synthetic", GENERATOR_VERSION, seed, settings, intrinsics,
                             camera_height, {"layout": layout.summary()}, textures, lighting_info,
                             stats, moved_names)


def common_scene_info(generator: str, version: str, seed: int, settings, intrinsics: Intrinsics,
                      camera_height: float, geometry: dict, textures: TextureSet, lighting_info,
                      stats: dict, moved_names: list[str]) -> dict:
    """What ``scene.json`` records for a room and a place alike: the ``generator`` and its
    ``version``, the seed, the ``settings`` (a dataclass; texture folders left out), the
    camera, the conventions, ``geometry`` (the room's layout or the place's plan), the
    textures and photos, the lighting, the splits' ``stats`` and the moved objects."""
    photos = textures.photos
    return {
        "generator": generator,
        "generator_version": version,
        "aceg_version": __version__,
        "seed": seed,
        "settings": {k: v for k, v in asdict(settings).items() if k != "texture_dirs"},
        "image_size_hw": [settings.height, settings.width],
        "intrinsics": {"fx": intrinsics.fx, "fy": intrinsics.fy, "cx": intrinsics.cx,
                       "cy": intrinsics.cy},
        "conventions": "world z up, metres; poses camera-to-world with OpenCV camera axes; "
                       "depth PNG = camera z in millimetres (0 invalid)",
        "camera_height_m": round(camera_height, 4),
        **geometry,
        "textures": textures.names(),
        "photo_count": {"surface": len(photos.surface), "objects": len(photos.objects),
                        "poster": len(photos.poster)},
        "extra_photo_dirs": [str(d) for d in photos.extra_dirs],
        "lighting": lighting_info,
        "splits": stats,
        "query_light_poses": "identical to query_same",
        "moved_objects": moved_names,
    }


# --------------------------------------------------------------------------------------
# Many scenes, in parallel

#: Name of scene ``index``'s folder.
SCENE_FOLDER = "scene_{index:04d}"

_worker_renderer: Renderer | None = None


def _generate_task(task: tuple[str, int, int, SynthSettings]) -> tuple[int, int, dict]:
    """Worker: generate one scene with the process's renderer (created on first use)."""
    global _worker_renderer
    out_dir, index, seed, settings = task
    if _worker_renderer is None:
        _worker_renderer = Renderer()
    info = generate_scene(out_dir, seed, settings, renderer=_worker_renderer)
    return index, seed, info


def generate_scenes(out_root: str | Path, base_seed: int, count: int, settings: SynthSettings,
                    workers: int = 1, first_index: int = 0, overwrite: bool = False,
                    progress: bool = True) -> list[dict]:
    """Generate scenes ``first_index .. first_index + count - 1`` into
    ``out_root/scene_XXXX`` with seeds :func:`scene_seed` ``(base_seed, index)``.

    Scenes whose folder already holds a ``scene.json`` are kept unless ``overwrite``.
    ``workers > 1`` renders scenes in parallel processes (spawned, one EGL context each).
    Returns one summary per scene: ``{"index", "seed", "folder", "skipped"}``.
    """
    from tqdm import tqdm

    settings.check()
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    summaries, tasks = [], []
    for index in range(first_index, first_index + count):
        seed = scene_seed(base_seed, index)
        folder = out_root / SCENE_FOLDER.format(index=index)
        skipped = (folder / "scene.json").is_file() and not overwrite
        summaries.append({"index": index, "seed": seed, "folder": str(folder),
                          "skipped": skipped})
        if not skipped:
            tasks.append((str(folder), index, seed, settings))
    bar = tqdm(total=len(tasks), unit="scene", desc="aceg synth", disable=not progress)
    try:
        if workers <= 1 or len(tasks) <= 1:
            renderer = Renderer() if tasks else None
            try:
                for folder, _index, seed, task_settings in tasks:
                    generate_scene(folder, seed, task_settings, renderer=renderer)
                    bar.update(1)
            finally:
                if renderer is not None:
                    renderer.release()
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            with context.Pool(min(workers, len(tasks))) as pool:
                for _ in pool.imap_unordered(_generate_task, tasks):
                    bar.update(1)
    finally:
        bar.close()
    return summaries
