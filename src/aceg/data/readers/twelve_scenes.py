"""Stanford 12-Scenes in its native layout, with the split ACE and DSAC* use.

A scene folder (``apt1/kitchen``, ``office2/5a``, ...) holds

* ``data/`` with, per frame, ``frame-XXXXXX.color.jpg`` (the RGB image),
  ``frame-XXXXXX.pose.txt`` (a 4x4 camera-to-world matrix, metres) and
  ``frame-XXXXXX.depth.png`` (16-bit millimetres, 0 where invalid, registered to the
  colour image at a lower resolution);
* ``info.txt``: ``key = value`` lines; ``m_colorWidth``, ``m_colorHeight`` and
  ``m_calibrationColorIntrinsic`` (a 4x4 matrix row by row, ``fx 0 cx 0 0 fy cy 0 ...``)
  give the colour camera;
* ``split.txt``: one line per recorded sequence, the first one
  ``sequence0 [frames=N] [start=0 ; end=N-1]``. The split of the ACE and DSAC* setup
  scripts: the first sequence's frames (numbers below ``N``) query, all later frames map.

Conventions and choices:

* Intrinsics are ``fx, fy, cx, cy`` of ``m_calibrationColorIntrinsic`` as written (ACE and
  DSAC* keep only the mean of ``fx`` and ``fy`` with the principal point at the centre);
  every image is checked to be ``m_colorWidth`` x ``m_colorHeight``.
* A frame whose pose file holds non-finite values (``-inf``, ``-1.#INF00``: tracking lost)
  is skipped, as ACE's setup skips it; the scene's notes count them.
* Depth maps are attached where present (:attr:`aceg.data.scene.Frame.depth_path`); they
  are resized to the image when used.

The path is the scene folder. Frames are named by their image file and sorted by name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from aceg.data.camera import Intrinsics
from aceg.data.readers._benchmark_sets import (
    MAPPING,
    QUERY,
    read_pose_or_skip,
    skipped_note,
    split_scenes,
    text_rows,
    whole_scene,
)
from aceg.data.readers._common import check_image_size, parse_floats, parse_int
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error

NAME = "12scenes"

DATA_FOLDER = "data"
INFO_FILE = "info.txt"
SPLIT_FILE = "split.txt"
FRAME_IMAGE = re.compile(r"^frame-(\d+)\.color\.jpg$")
FIRST_SEQUENCE = re.compile(r"\[frames=(\d+)\]")


def detect(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / DATA_FOLDER).is_dir() and (path / INFO_FILE).is_file()


def scene_name(root: Path) -> str:
    """``apt1-kitchen`` for ``.../apt1/kitchen``: scene names repeat across apartments."""
    root = root.resolve()
    return f"{root.parent.name}-{root.name}" if root.parent.name else root.name


def read_info(path: Path) -> tuple[Intrinsics, int, int]:
    """``(intrinsics, width, height)`` of the colour camera from ``info.txt``."""
    entries: dict[str, tuple[int, str]] = {}
    for line, tokens in text_rows(path):
        text = " ".join(tokens)
        if "=" in text:
            key, value = text.split("=", 1)
            entries[key.strip()] = (line, value.strip())
    for key in ("m_colorWidth", "m_colorHeight", "m_calibrationColorIntrinsic"):
        if key not in entries:
            raise file_error(path, f"no {key} line (the colour camera needs it)")
    sizes = []
    for key in ("m_colorWidth", "m_colorHeight"):
        line, value = entries[key]
        sizes.append(parse_int(value, path, line, key))
        if sizes[-1] <= 0:
            raise file_error(path, f"{key} must be positive, got {value}", line)
    line, value = entries["m_calibrationColorIntrinsic"]
    numbers = np.array(parse_floats(value.split(), path, line))
    if numbers.size != 16:
        raise file_error(path, f"m_calibrationColorIntrinsic must hold a 4x4 matrix (16 "
                               f"numbers), found {numbers.size}", line)
    K = numbers.reshape(4, 4)[:3, :3]
    if abs(K[0, 1]) > 1e-9 or abs(K[1, 0]) > 1e-9 or not np.allclose(K[2], [0, 0, 1]):
        raise file_error(path, "m_calibrationColorIntrinsic is not a pinhole matrix "
                               "(fx 0 cx / 0 fy cy / 0 0 1)", line)
    intrinsics = Intrinsics.from_K(K)
    intrinsics.check(f"{path}:{line}", sizes[0], sizes[1])
    return intrinsics, sizes[0], sizes[1]


def first_sequence_frames(path: Path) -> int:
    """``N`` of the first line's ``[frames=N]``: the number of query frames."""
    rows = text_rows(path)
    if not rows:
        raise file_error(path, "file is empty")
    line, tokens = rows[0]
    match = FIRST_SEQUENCE.search(" ".join(tokens))
    if match is None:
        raise file_error(path, "first line must give the first sequence's frame count as "
                               "'[frames=N]'", line)
    return int(match.group(1))


def _frame_number(image: Path) -> int | None:
    match = FRAME_IMAGE.match(image.name)
    return int(match.group(1)) if match else None


def _read_halves(root: Path):
    """``(frames by half, notes, source files)`` of the scene at ``root``."""
    info, split = root / INFO_FILE, root / SPLIT_FILE
    intrinsics, width, height = read_info(info)
    if not split.is_file():
        raise file_error(split, "split file not found (its first line gives the query frames)")
    queries = first_sequence_frames(split)
    data = root / DATA_FOLDER
    images = sorted(p for p in data.iterdir() if _frame_number(p) is not None and p.is_file())
    if not images:
        raise AcegError(f"{data}: no frame-XXXXXX.color.jpg images found")
    frames: dict[str, list[Frame]] = {MAPPING: [], QUERY: []}
    poses, skipped = [], []
    for image in images:
        stem = image.name[: -len(".color.jpg")]
        pose_file = data / f"{stem}.pose.txt"
        poses.append(pose_file)
        pose = read_pose_or_skip(pose_file, skipped)
        if pose is None:
            continue
        check_image_size(image, width, height, str(info))
        depth = data / f"{stem}.depth.png"
        half = QUERY if _frame_number(image) < queries else MAPPING
        frames[half].append(Frame(image.name, image, width, height, intrinsics, pose,
                                  depth if depth.is_file() else None))
    notes = skipped_note(skipped, len(images), "non-finite pose (tracking lost)")
    return frames, notes, [info, split, *poses]


def read(path: Path) -> Scene:
    """Every frame of a 12-Scenes scene folder (module docstring)."""
    root = Path(path)
    if not detect(root):
        raise AcegError(f"{root}: not a 12-Scenes scene (needs {DATA_FOLDER}/ and {INFO_FILE})")
    frames, notes, sources = _read_halves(root)
    return whole_scene(scene_name(root), frames, root, NAME, notes, sources)


def read_split(path: Path) -> tuple[Scene, Scene]:
    """The ``(mapping, query)`` scenes of ACE's and DSAC*'s split (module docstring)."""
    root = Path(path)
    if not detect(root):
        raise AcegError(f"{root}: not a 12-Scenes scene (needs {DATA_FOLDER}/ and {INFO_FILE})")
    frames, notes, sources = _read_halves(root)
    return split_scenes(scene_name(root), frames, root, NAME, notes, sources)
