"""Indoor-6 (Microsoft's SceneLandmarkLocalization data set: scene1, scene2a, scene3,
scene4a, scene5, scene6) in its native layout, with the official split.

A scene folder ``sceneN/`` holds

* ``images/`` with, per frame, ``image-XXXXXX.color.jpg`` (the RGB image),
  ``image-XXXXXX.pose.txt`` (the **world-to-camera** transform as a 3x4 matrix, row by
  row, metres; a 4x4 one is accepted too) and ``image-XXXXXX.intrinsics.txt`` (one line,
  ``W H f cx cy k name``: image size, focal length and principal point in pixels, a
  radial term and the image's original name);
* the split lists ``sceneN_train.txt``, ``sceneN_val.txt`` and ``sceneN_test.txt``, one
  image file name per line (the pickled ``train_test_val.pkl`` beside them holds the same
  lists and is never read). The official split: ``train`` maps, ``test`` queries;
  ``val`` is not used.

The poses and intrinsics come from the data set's COLMAP reconstruction (its pseudo
ground truth); the COLMAP model itself, a separate download, is not needed. Conventions:
the camera-to-world pose is the inverse of the file's matrix (camera axes OpenCV's, as
COLMAP's); ``fx = fy = f`` and ``cx, cy`` are taken as written; the radial term ``k`` is
ignored, as the data set's own code and the ACE-based setups ignore it. ``W H`` must be
the image's size. A frame whose pose holds non-finite values is skipped and counted in
the scene's notes.

The path is the scene folder (every frame of the three lists) or one list file (its
frames). Frames are named by their image file and sorted by name.
"""

from __future__ import annotations

import re
from pathlib import Path

from aceg.data.camera import Intrinsics
from aceg.data.readers._benchmark_sets import (
    MAPPING,
    QUERY,
    checked_scene_root,
    list_lines,
    read_pose_or_skip,
    read_scene_name,
    scene_root,
    skipped_note,
    split_scenes,
    text_rows,
    whole_scene,
)
from aceg.data.readers._common import check_image_size, parse_float, parse_int
from aceg.data.scene import Frame, Scene
from aceg.errors import file_error

NAME = "indoor6"

IMAGES_FOLDER = "images"
#: The split lists' suffixes, by half; ``val`` is read only with the whole scene.
LIST_SUFFIXES = {MAPPING: "_train.txt", QUERY: "_test.txt", "val": "_val.txt"}
LIST_NAME = re.compile(r"^(?P<scene>.+)_(?P<split>train|val|test)\.txt$")
NOT_A_SCENE = (f"not an Indoor-6 scene (needs {IMAGES_FOLDER}/ and the lists "
               "<scene>_train.txt and <scene>_test.txt)")


def _list_file(root: Path, half: str) -> Path:
    return root / f"{root.resolve().name}{LIST_SUFFIXES[half]}"


def detect(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        match = LIST_NAME.match(path.name)
        return (match is not None and match.group("scene") == path.parent.resolve().name
                and (path.parent / IMAGES_FOLDER).is_dir())
    return (path.is_dir() and (path / IMAGES_FOLDER).is_dir()
            and _list_file(path, MAPPING).is_file() and _list_file(path, QUERY).is_file())


def read_intrinsics(path: Path) -> tuple[Intrinsics, int, int]:
    """``(intrinsics, width, height)`` from an ``image-XXXXXX.intrinsics.txt`` file."""
    if not path.is_file():
        raise file_error(path, "intrinsics file not found")
    rows = text_rows(path)
    if not rows or len(rows[0][1]) < 5:
        raise file_error(path, "expected 'W H f cx cy [k name]' on the first line",
                         rows[0][0] if rows else None)
    line, tokens = rows[0]
    width = parse_int(tokens[0], path, line, "image width")
    height = parse_int(tokens[1], path, line, "image height")
    focal, cx, cy = (parse_float(token, path, line) for token in tokens[2:5])
    if width <= 0 or height <= 0:
        raise file_error(path, f"image size must be positive, got {width}x{height}", line)
    intrinsics = Intrinsics(focal, focal, cx, cy)
    intrinsics.check(f"{path}:{line}", width, height)
    return intrinsics, width, height


def _read_list(list_file: Path, images: Path) -> tuple[list[Frame], list[Path], list[Path]]:
    """``(frames, source files, skipped pose files)`` of one split list."""
    if not list_file.is_file():
        raise file_error(list_file, "split list not found")
    frames, sources, skipped = [], [], []
    for line, name in list_lines(list_file):
        image = images / name
        if "/" in name or " " in name or not image.is_file():
            raise file_error(list_file, f"image {name[:60]!r} not found in {images}", line)
        stem = name.split(".", 1)[0]
        pose_file, calibration = images / f"{stem}.pose.txt", images / f"{stem}.intrinsics.txt"
        sources += [pose_file, calibration]
        pose = read_pose_or_skip(pose_file, skipped, world_to_camera=True)
        if pose is None:
            continue
        intrinsics, width, height = read_intrinsics(calibration)
        check_image_size(image, width, height, str(calibration))
        frames.append(Frame(name, image, width, height, intrinsics, pose))
    return frames, sources, skipped


def _read_halves(root: Path, halves: tuple[str, ...]):
    """``(frames by half, notes, source files)`` of the scene at ``root``."""
    frames: dict[str, list[Frame]] = {}
    sources: list[Path] = []
    skipped: list[Path] = []
    for half in halves:
        list_file = _list_file(root, half)
        frames[half], files, lost = _read_list(list_file, root / IMAGES_FOLDER)
        sources += [list_file, *files]
        skipped += lost
    total = sum(len(f) for f in frames.values()) + len(skipped)
    return frames, skipped_note(skipped, total, "non-finite pose"), sources


def read(path: Path) -> Scene:
    """Every frame of an Indoor-6 scene folder (train, val and test), or of one list."""
    path = Path(path)
    root = checked_scene_root(path, detect, NOT_A_SCENE)
    if path.is_file():
        split = LIST_NAME.match(path.name).group("split")
        halves = tuple(h for h, suffix in LIST_SUFFIXES.items() if suffix == f"_{split}.txt")
    else:
        halves = tuple(h for h in LIST_SUFFIXES if _list_file(root, h).is_file())
    frames, notes, sources = _read_halves(root, halves)
    name = read_scene_name(path, root, halves[0])
    return whole_scene(name, frames, root, NAME, notes, sources)


def read_split(path: Path) -> tuple[Scene, Scene]:
    """The official ``(mapping, query)`` scenes: the ``train`` and ``test`` lists."""
    root = checked_scene_root(scene_root(Path(path)), detect, NOT_A_SCENE)
    frames, notes, sources = _read_halves(root, (MAPPING, QUERY))
    notes = [*notes, "the val list is not used (not part of the mapping / query split)"]
    return split_scenes(root.resolve().name, frames, root, NAME, notes, sources)
