"""Generate a synthetic multi-room place: floor plan, textures, lightings, the walk through
it and its query viewpoints, rendered frame by frame into the layout of a room scene.

A place folder holds the splits of :mod:`~aceg.data.synthetic.generate` with the same
meanings, spread over the whole place: ``mapping/`` (the walk through every room, lighting
A), ``query_same/`` (new viewpoints near the walk, lighting A), ``query_light/`` (the same
poses under lighting B: every space's lights changed), ``query_view/`` (viewpoints farther
from the walk: other heights, opposite directions) and ``query_moved/`` (like
``query_same`` with :attr:`PlaceSettings.moved_objects` objects displaced in each room).
Beside them: ``scene.json`` (generator version, seed, settings, the place's spaces, doors
and texture layers, statistics per split), ``contact_sheet.png`` and ``plan.png`` (the
floor plan from above with the mapping walk and the query positions,
:mod:`~aceg.data.synthetic.place_picture`).

Frames are written as they are rendered (only the contact sheet's thumbnails are kept), so
memory does not grow with the number of frames. All randomness flows from the place's
seed through independent streams, as for a room.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aceg.data.synthetic.contact_sheet import sheet_picks, write_contact_sheet
from aceg.data.synthetic.floor_plans import MAX_ROOMS, MIN_ROOMS, PLACE_KINDS, random_place
from aceg.data.synthetic.generate import (
    SCENE_FOLDER,
    SPLIT_LIGHTING,
    SPLITS,
    SynthSettings,
    ViewChecker,
    camera_intrinsics,
    common_scene_info,
    render_split,
    scene_seed,
    scene_textures,
    split_streams,
)
from aceg.data.synthetic.layout import displace_objects
from aceg.data.synthetic.lighting import lighting_a, lighting_b
from aceg.data.synthetic.place import Place, Space
from aceg.data.synthetic.place_mesh import build_place_mesh
from aceg.data.synthetic.place_paths import walking_path
from aceg.data.synthetic.place_picture import write_plan_picture
from aceg.data.synthetic.renderer import Lighting, Renderer
from aceg.data.synthetic.textures import PhotoSource, TextureSet
from aceg.data.synthetic.trajectories import (
    ScanPath,
    mapping_poses,
    query_far_from_path,
    query_near_path,
)
from aceg.errors import AcegError
from aceg.io import atomic_write_text

#: Bumped whenever the same seed would give a different place.
PLACE_GENERATOR_VERSION = "1"

#: Rooms of a place of each kind by default.
DEFAULT_ROOMS = {"apartment": 5, "office": 8}

#: Spacing (metres) of a corridor's ceiling lights.
CORRIDOR_LIGHT_SPACING = 3.0


@dataclass(frozen=True)
class PlaceSettings(SynthSettings):
    """What to generate for a place: the fields of :class:`SynthSettings` (view checks,
    image size, splits; ``moved_objects`` counts per room) plus the kind of place and its
    number of rooms (the corridor not counted)."""

    kind: str = "apartment"
    rooms: int = DEFAULT_ROOMS["apartment"]
    frames_mapping: int = 2000
    frames_query: int = 100
    height: int = 480
    width: int = 640
    moved_objects: int = 2

    def check(self) -> None:
        super().check()
        if self.kind not in PLACE_KINDS:
            raise AcegError(f"unknown place {self.kind!r}; known: {', '.join(PLACE_KINDS)}")
        if not MIN_ROOMS <= self.rooms <= MAX_ROOMS:
            raise AcegError(f"a place has {MIN_ROOMS}-{MAX_ROOMS} rooms, got {self.rooms}")

    @property
    def frames_total(self) -> int:
        """Frames rendered for the chosen splits."""
        queries = sum(split != "mapping" for split in self.splits)
        return self.frames_mapping + queries * self.frames_query


def place_layout(seed: int, settings: PlaceSettings | None = None,
                 photos: PhotoSource | None = None) -> tuple[Place, TextureSet]:
    """The place and textures of the place with ``seed`` (as :func:`generate_place` builds
    them), without rendering anything."""
    settings = settings or PlaceSettings()
    return _place_and_textures(split_streams(seed), settings, photos)


def _place_and_textures(rng: dict[str, np.random.Generator], settings: PlaceSettings,
                        photos: PhotoSource | None) -> tuple[Place, TextureSet]:
    textures = scene_textures(rng, settings, photos)
    return random_place(rng["layout"], textures, settings.kind, settings.rooms), textures


def place_lightings(rng: np.random.Generator, place: Place
                    ) -> tuple[list[Lighting], list[Lighting], list[dict]]:
    """Lightings A and B of every space (one zone each), and their descriptions. A
    corridor gets a ceiling light every :data:`CORRIDOR_LIGHT_SPACING` metres."""
    lights_a, lights_b, info = [], [], []
    for space in place.spaces:
        count = None
        if space.kind == "corridor":
            length = float(np.ptp(space.layout.room.polygon[:, 0]))
            count = int(np.clip(round(length / CORRIDOR_LIGHT_SPACING), 2, 7))
        a, a_info = lighting_a(rng, space.layout, count)
        b, b_info = lighting_b(rng, space.layout, a)
        lights_a.append(a)
        lights_b.append(b)
        info.append({"space": space.name, "A": a_info, "B": b_info})
    return lights_a, lights_b, info


def moved_place(place: Place, rng: np.random.Generator, per_room: int) -> tuple[Place, list[str]]:
    """A copy of ``place`` with up to ``per_room`` movable objects displaced in each room
    (not the corridor), and the names of those that moved."""
    spaces, names = [], []
    for space in place.spaces:
        layout = space.layout
        if space.kind != "corridor" and per_room > 0:
            layout, moved = displace_objects(layout, rng, per_room)
            names += moved
        spaces.append(Space(space.name, space.kind, layout, space.openings, space.template))
    return Place(place.kind, spaces, place.doors, place.height), names


def generate_place(out_dir: str | Path, seed: int, settings: PlaceSettings | None = None,
                   renderer: Renderer | None = None, photos: PhotoSource | None = None,
                   progress: bool = True, **overrides) -> dict:
    """Generate one place into ``out_dir`` (replaced if it exists) and return its
    ``scene.json`` content.

    Args:
        out_dir: place folder to write.
        seed: the place's seed (any non-negative integer).
        settings: what to generate; keyword ``overrides`` replace single fields.
        renderer: an existing :class:`Renderer` to reuse, else one is created and released.
        photos: photographs to draw textures from (default: discovered once).
        progress: show progress bars (checking candidate views, rendering frames, with
            the time left).
    """
    settings = settings or PlaceSettings()
    if overrides:
        settings = PlaceSettings(**{**asdict(settings), **overrides})
    settings.check()
    if seed < 0:
        raise AcegError(f"seed must be non-negative, got {seed}")
    out_dir = Path(out_dir)
    own_renderer = renderer is None
    renderer = renderer or Renderer()
    tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    try:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
        tmp_dir.mkdir(parents=True)
        info = _generate(tmp_dir, int(seed), settings, renderer, photos, progress)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
        return info
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
        if own_renderer:
            renderer.release()


class _CountingValidator:
    """A view validator that advances a progress bar per candidate checked."""

    def __init__(self, check, bar):
        self.check, self.bar = check, bar

    def __call__(self, pose: np.ndarray) -> bool:
        self.bar.update(1)
        return self.check(pose)


def _generate(folder: Path, seed: int, settings: PlaceSettings, renderer: Renderer,
              photos: PhotoSource | None, progress: bool) -> dict:
    from tqdm import tqdm

    rng = split_streams(seed)
    place, textures = _place_and_textures(rng, settings, photos)
    intrinsics = camera_intrinsics(rng["camera"], settings.width, settings.height)
    lights_a, lights_b, lighting_info = place_lightings(rng["lighting"], place)
    lightings = {"A": lights_a, "B": lights_b}
    mesh = build_place_mesh(place)
    renderer.load_scene(mesh, textures.stack())
    with tqdm(desc="aceg synth: checking views", unit="view", disable=not progress) as bar:
        check = _CountingValidator(ViewChecker(renderer, place, intrinsics, lights_a, settings),
                                   bar)
        path, poses, rejected = _plan_views(place, settings, check, rng)
        wanted = [s for s in SPLITS if s in settings.splits and s in poses or s == "mapping"]
        moved_mesh, moved_names = None, []
        if settings.frames_query > 0 and "query_moved" in settings.splits:
            moved, moved_names = moved_place(place, rng["moved"], settings.moved_objects)
            moved_mesh = build_place_mesh(moved)
            renderer.load_scene(moved_mesh, None)
            moved_check = _CountingValidator(
                ViewChecker(renderer, moved, intrinsics, lights_a, settings), bar)
            poses["query_moved"], rejected["query_moved"] = query_near_path(
                path, settings.frames_query, moved_check, rng["moved"])
            wanted.append("query_moved")
    keep = _thumbnails_to_keep({s: poses[s] for s in wanted})
    thumbs: dict[str, list] = {}
    stats: dict[str, dict] = {}
    total = sum(len(poses[s]) for s in wanted)
    with tqdm(total=total, desc="aceg synth: rendering", unit="frame",
              disable=not progress) as bar:
        for split in wanted:
            renderer.load_scene(moved_mesh if split == "query_moved" else mesh, None)
            thumbs[split], stats[split] = render_split(
                renderer, folder / split, poses[split], poses["mapping"], intrinsics.K,
                SPLIT_LIGHTING[split], lightings[SPLIT_LIGHTING[split]], rejected.get(split, 0),
                settings, keep_thumbnails=keep[split], bar=bar)
    stats["mapping"].update(_walk_statistics(place, poses["mapping"]))
    info = _place_info(seed, settings, intrinsics, path, place, textures, lighting_info, stats,
                       moved_names)
    atomic_write_text(folder / "scene.json", json.dumps(info, indent=1) + "\n")
    if settings.contact_sheet:
        write_contact_sheet(folder / "contact_sheet.png", thumbs, {s: poses[s] for s in wanted})
    write_plan_picture(folder / "plan.png", place, {s: poses[s] for s in wanted})
    return info


def _thumbnails_to_keep(poses: dict[str, list[np.ndarray]]) -> dict[str, set[int]]:
    """Per split, the frames whose thumbnails the contact sheet shows."""
    picks = sheet_picks(poses)
    keep = {split: {i for i, _ in picks.get(split, [])} for split in poses}
    for split, pairs in picks.items():
        if split == "mapping":
            continue
        source = "query_same" if split == "query_light" and "query_same" in poses else "mapping"
        keep[source] |= {reference for _, reference in pairs}
    return keep


def _plan_views(place: Place, settings: PlaceSettings, check, rng: dict[str, np.random.Generator]
                ) -> tuple[ScanPath, dict[str, list[np.ndarray]], dict[str, int]]:
    """The walk and the poses of the mapping and query splits (all but ``query_moved``),
    with the number of candidate views rejected per split."""
    path = walking_path(place, rng["path"], settings.frames_mapping)
    poses, rejected = {}, {}
    poses["mapping"], rejected["mapping"] = mapping_poses(path, settings.frames_mapping, check)
    q, wanted = settings.frames_query, set(settings.splits)
    if q > 0 and wanted & {"query_same", "query_light"}:
        poses["query_same"], rejected["query_same"] = query_near_path(path, q, check, rng["query"])
        poses["query_light"], rejected["query_light"] = poses["query_same"], 0
    if q > 0 and "query_view" in wanted:
        poses["query_view"], rejected["query_view"] = query_far_from_path(
            path, q, check, rng["query"], place.height)
    return path, poses, rejected


def _walk_statistics(place: Place, mapping: list[np.ndarray]) -> dict:
    """How the mapping frames cover the place: frames per space, and the largest and
    median step (metres, degrees of viewing direction) between consecutive frames."""
    centres = np.stack([p[:3, 3] for p in mapping])
    axes = np.stack([p[:3, 2] for p in mapping])
    spaces = place.space_of(centres[:, :2])
    per_space = {s.name: int(np.sum(spaces == i)) for i, s in enumerate(place.spaces)}
    if len(mapping) < 2:
        return {"frames_per_space": per_space}
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    turns = np.degrees(np.arccos(np.clip(np.sum(axes[1:] * axes[:-1], axis=1), -1.0, 1.0)))
    return {"frames_per_space": per_space,
            "walk_length_m": round(float(steps.sum()), 2),
            "step_m": {"median": round(float(np.median(steps)), 4),
                       "max": round(float(steps.max()), 4)},
            "turn_deg": {"median": round(float(np.median(turns)), 2),
                         "max": round(float(turns.max()), 2)}}


def _place_info(seed: int, settings: PlaceSettings, intrinsics, path: ScanPath, place: Place,
                textures: TextureSet, lighting_info: list[dict], stats: dict,
                moved_names: list[str]) -> dict:
    """The content of ``scene.json``."""
    info = common_scene_info("aceg.data.synthetic.place_generate", PLACE_GENERATOR_VERSION, seed,
                             settings, intrinsics, path.base_height, {"place": place.summary()},
                             textures, lighting_info, stats, moved_names)
    info["field_of_view_deg"] = round(math.degrees(2 * math.atan(settings.width / 2 / intrinsics.fx)), 2)
    return info


def generate_places(out_root: str | Path, base_seed: int, count: int, settings: PlaceSettings,
                    first_index: int = 0, overwrite: bool = False,
                    progress: bool = True) -> list[dict]:
    """Generate places ``first_index .. first_index + count - 1`` into
    ``out_root/scene_XXXX`` (the folders of :func:`~aceg.data.synthetic.generate.
    generate_scenes`) with seeds :func:`~aceg.data.synthetic.generate.scene_seed`
    ``(base_seed, index)``, one after another with one renderer.

    Places whose folder already holds a ``scene.json`` are kept unless ``overwrite``.
    Returns one summary per place: ``{"index", "seed", "folder", "skipped"}``.
    """
    settings.check()
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    summaries = []
    renderer = None
    try:
        for index in range(first_index, first_index + count):
            seed = scene_seed(base_seed, index)
            folder = out_root / SCENE_FOLDER.format(index=index)
            skipped = (folder / "scene.json").is_file() and not overwrite
            summaries.append({"index": index, "seed": seed, "folder": str(folder),
                              "skipped": skipped})
            if not skipped:
                renderer = renderer or Renderer()
                generate_place(folder, seed, settings, renderer=renderer, progress=progress)
    finally:
        if renderer is not None:
            renderer.release()
    return summaries
