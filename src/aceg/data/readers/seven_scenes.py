"""Microsoft 7-Scenes in its native layout, with its official split.

A scene folder (``chess/``, ``fire/``, ...) holds

* ``TrainSplit.txt`` and ``TestSplit.txt``: one sequence per line, ``sequence1`` naming
  the folder ``seq-01``. The official split: the training sequences map, the test
  sequences query;
* one folder ``seq-XX/`` per sequence with, per frame, ``frame-XXXXXX.color.png`` (the
  RGB image), ``frame-XXXXXX.pose.txt`` (a 4x4 camera-to-world matrix, metres) and
  ``frame-XXXXXX.depth.png``.

Conventions and choices:

* The files record no intrinsics. The colour camera is taken as a pinhole with focal
  length :data:`DEFAULT_FOCAL` pixels (for the 640x480 images) and the principal point
  at the image centre: the values the ACE and DSAC* setup scripts write for the colour
  images (the often-quoted 585 px is the depth camera's). ``focal`` overrides it
  (``aceg bench --seven-scenes-focal``). The centre is ``((W - 1) / 2, (H - 1) / 2)`` in
  the pixel convention of :mod:`aceg.data.camera`, the point ACE writes as ``W / 2``.
* Poses are read as written, as DSAC*'s setup does. They were tracked with the depth
  camera; ACE's setup can instead move them to the colour camera with a Kinect
  depth-to-colour calibration (an offset of a few centimetres). aceg does not.
* The depth maps (16-bit millimetres, 65535 where invalid) belong to the depth camera and
  are not registered to the colour images (another focal length, an offset sensor), so
  no frame carries one: a note says so and mapping triangulates instead.

The path is the scene folder (every frame of both splits) or one of the split files (the
frames of that split). Frames are named ``seq-XX/frame-XXXXXX.color.png`` and sorted by
name. A frame whose pose file holds non-finite values is skipped; the scene's notes count
them.
"""

from __future__ import annotations

import re
from pathlib import Path

from aceg.data.camera import Intrinsics
from aceg.data.readers._benchmark_sets import (
    MAPPING,
    QUERY,
    checked_scene_root,
    holds_list_files,
    list_lines,
    read_pose_or_skip,
    read_scene_name,
    scene_root,
    skipped_note,
    split_scenes,
    whole_scene,
)
from aceg.data.readers._common import image_size
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error

NAME = "7scenes"

#: The official split files, by half of the split.
SPLIT_FILES = {MAPPING: "TrainSplit.txt", QUERY: "TestSplit.txt"}
#: Focal length (pixels) of the colour camera at 640x480, as ACE and DSAC* set it.
DEFAULT_FOCAL = 525.0
COLOR_SUFFIX = ".color.png"
POSE_SUFFIX = ".pose.txt"
SEQUENCE_LINE = re.compile(r"^sequence(\d+)$", re.IGNORECASE)
DEPTH_NOTE = ("7-Scenes depth maps are the depth camera's, not registered to the colour "
              "images: frames carry none (mapping triangulates)")
NOT_A_SCENE = f"not a 7-Scenes scene (needs {SPLIT_FILES[MAPPING]} and {SPLIT_FILES[QUERY]})"


def detect(path: Path) -> bool:
    return holds_list_files(Path(path), SPLIT_FILES)


def sequence_folders(split_file: Path) -> list[Path]:
    """The sequence folders a split file lists (``sequence3`` -> ``seq-03``), in order."""
    folders = []
    for line, text in list_lines(split_file):
        match = SEQUENCE_LINE.match(text)
        if match is None:
            raise file_error(split_file, f"expected a sequence such as 'sequence1', got "
                                         f"{text[:60]!r}", line)
        folder = split_file.parent / f"seq-{int(match.group(1)):02d}"
        if not folder.is_dir():
            raise file_error(split_file, f"{text}: sequence folder {folder.name} not found", line)
        folders.append(folder)
    if not folders:
        raise file_error(split_file, "lists no sequence")
    return folders


def _read_sequence(folder: Path, focal: float) -> tuple[list[Frame], list[Path], list[Path]]:
    """``(frames, pose files, skipped pose files)`` of one sequence folder."""
    images = sorted(p for p in folder.iterdir() if p.name.endswith(COLOR_SUFFIX) and p.is_file())
    if not images:
        raise AcegError(f"{folder}: no frame-*{COLOR_SUFFIX} images found")
    frames, poses, skipped = [], [], []
    for image in images:
        pose_file = folder / (image.name[: -len(COLOR_SUFFIX)] + POSE_SUFFIX)
        poses.append(pose_file)
        pose = read_pose_or_skip(pose_file, skipped)
        if pose is None:
            continue
        width, height = image_size(image)
        intrinsics = Intrinsics(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0)
        intrinsics.check(str(image), width, height)
        frames.append(Frame(f"{folder.name}/{image.name}", image, width, height, intrinsics, pose))
    return frames, poses, skipped


def _read_halves(root: Path, halves: tuple[str, ...], focal: float):
    """``(frames by half, notes, source files)`` of the scene at ``root``."""
    if not (focal > 0 and focal < float("inf")):
        raise AcegError(f"7-Scenes focal length must be a positive number of pixels, got {focal}")
    frames: dict[str, list[Frame]] = {}
    notes = [f"intrinsics: focal length {focal:g} px, principal point at the image centre "
             "(7-Scenes records none)", DEPTH_NOTE]
    sources: list[Path] = []
    skipped: list[Path] = []
    total = 0
    for half in halves:
        split_file = root / SPLIT_FILES[half]
        if not split_file.is_file():
            raise file_error(split_file, "split file not found")
        sources.append(split_file)
        frames[half] = []
        for folder in sequence_folders(split_file):
            got, poses, lost = _read_sequence(folder, focal)
            frames[half] += got
            sources += poses
            skipped += lost
            total += len(poses)
    notes += skipped_note(skipped, total, "non-finite pose (tracking lost)")
    return frames, notes, sources


def read(path: Path, focal: float = DEFAULT_FOCAL) -> Scene:
    """Every frame of a 7-Scenes scene folder, or of one split file (module docstring)."""
    path = Path(path)
    root = checked_scene_root(path, detect, NOT_A_SCENE)
    halves = tuple(h for h, name in SPLIT_FILES.items() if path.is_dir() or path.name == name)
    frames, notes, sources = _read_halves(root, halves, focal)
    name = read_scene_name(path, root, halves[0])
    return whole_scene(name, frames, root, NAME, notes, sources)


def read_split(path: Path, focal: float = DEFAULT_FOCAL) -> tuple[Scene, Scene]:
    """The official ``(mapping, query)`` scenes: training and test sequences."""
    root = checked_scene_root(scene_root(Path(path)), detect, NOT_A_SCENE)
    frames, notes, sources = _read_halves(root, (MAPPING, QUERY), focal)
    return split_scenes(root.resolve().name, frames, root, NAME, notes, sources)
