"""Cambridge Landmarks (KingsCollege, OldHospital, ShopFacade, StMarysChurch, GreatCourt,
Street) in their native layout, with the official split.

A scene folder holds

* ``dataset_train.txt`` (the official mapping images) and ``dataset_test.txt`` (the
  queries): three header lines (the third one blank; a header line is one whose first
  field names no image, so a copy without the blank line reads the same), then one
  line per image,
  ``seqN/frameXXXXX.png X Y Z W P Q R``: ``X Y Z`` the camera centre in world
  coordinates (metres) and ``W P Q R`` the unit quaternion ``(w, x, y, z)`` of the
  **world-to-camera** rotation;
* ``reconstruction.nvm``, the VisualSFM reconstruction (``NVM_V3``): after the header
  line and the camera count, one line per camera,
  ``<name> <focal> <qw qx qy qz> <centre x y z> <radial> 0``; names end in ``.jpg``
  where the images are ``.png``. Only the focal length (pixels, at the images' size) is
  taken from it: the data set files record none;
* the images, ``seqN/frameXXXXX.png``.

Conventions, as the ACE and DSAC* setup scripts read these files: the camera-to-world
pose is ``[R^T | C]`` with ``R`` the quaternion's rotation (camera axes OpenCV's, as
VisualSFM's); the principal point is the image centre (``((W - 1) / 2, (H - 1) / 2)`` in
the pixel convention of :mod:`aceg.data.camera`) and the nvm's radial term is ignored.
Images the reconstruction does not hold, and those whose world-to-camera translation
exceeds :data:`OUTLIER_TRANSLATION` in a coordinate (the test ACE's setup applies), are
skipped; the scene's notes count them.

The path is the scene folder (every image of both lists) or one list file (its images).
Frames are named as listed and sorted by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aceg.data.camera import Intrinsics, check_pose, make_pose, quaternion_to_rotation
from aceg.data.readers._benchmark_sets import (
    MAPPING,
    QUERY,
    checked_scene_root,
    holds_list_files,
    read_scene_name,
    scene_root,
    skipped_note,
    split_scenes,
    text_rows,
    whole_scene,
)
from aceg.data.readers._colmap_files import QUATERNION_TOLERANCE
from aceg.data.readers._common import (
    IMAGE_SUFFIXES,
    image_size,
    parse_float,
    parse_floats,
    parse_int,
)
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error

NAME = "cambridge"

LIST_FILES = {MAPPING: "dataset_train.txt", QUERY: "dataset_test.txt"}
NVM_FILE = "reconstruction.nvm"
HEADER_LINES = 3
#: Largest world-to-camera translation coordinate (metres) of a kept image.
OUTLIER_TRANSLATION = 10_000.0
NOT_A_SCENE = (f"not a Cambridge Landmarks scene (needs {LIST_FILES[MAPPING]} and "
               f"{LIST_FILES[QUERY]})")


def detect(path: Path) -> bool:
    return holds_list_files(Path(path), LIST_FILES)


def _image_key(name: str) -> str:
    """An image name without its extension (the nvm says ``.jpg``, the lists ``.png``)."""
    name = name.replace("\\", "/")
    return name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name


def read_nvm_focals(path: Path) -> dict[str, float]:
    """Focal length (pixels) of each camera of the first model of an NVM_V3 file, by image
    name without extension. The file is read line by line up to the last camera: the
    points section that follows can be long and is never read."""
    if not path.is_file():
        raise file_error(path, "reconstruction file not found (it holds the focal lengths)")
    try:
        with path.open(encoding="utf-8-sig") as handle:
            return _nvm_cameras(path, ((n, line.split()) for n, line in enumerate(handle, 1)))
    except UnicodeDecodeError:
        raise file_error(path, "not UTF-8 text") from None
    except OSError as exc:
        raise file_error(path, f"cannot read file ({exc.strerror})") from None


def _nvm_cameras(path: Path, lines) -> dict[str, float]:
    """:func:`read_nvm_focals` on ``(line_number, tokens)`` pairs."""
    number, tokens = next(lines, (1, []))
    if not tokens or not tokens[0].startswith("NVM_V3"):
        raise file_error(path, "not an NVM_V3 file (first line must start with NVM_V3)", number)
    number, tokens = next(((n, t) for n, t in lines if t), (number + 1, []))
    if len(tokens) != 1:
        raise file_error(path, "expected the number of cameras", number)
    count = parse_int(tokens[0], path, number, "number of cameras")
    if count < 0:
        raise file_error(path, f"number of cameras must not be negative, got {count}", number)
    focals: dict[str, float] = {}
    for _ in range(count):
        number, tokens = next(lines, (number + 1, []))
        if len(tokens) < 10:
            raise file_error(path, f"expected a camera line '<name> <focal> <qw qx qy qz> "
                                   f"<x y z> <radial> 0', found {len(tokens)} fields", number)
        focal = parse_float(tokens[1], path, number)
        if focal <= 0:
            raise file_error(path, f"focal length must be positive, got {tokens[1]}", number)
        focals[_image_key(tokens[0])] = focal
    return focals


def _pose(path: Path, line: int, values: list[float]) -> np.ndarray:
    """Camera-to-world pose from a list line's camera centre and world-to-camera
    quaternion; a quaternion of non-unit length is an error naming the line."""
    centre, q = np.array(values[:3]), np.array(values[3:])
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUATERNION_TOLERANCE:
        raise file_error(path, f"quaternion W P Q R has length {norm:.4g}, not 1", line)
    world_to_camera = quaternion_to_rotation(q / norm)
    return check_pose(make_pose(world_to_camera.T, centre), f"{path}:{line}")


def _is_image_line(tokens: list[str]) -> bool:
    """Whether a line among the first :data:`HEADER_LINES` is an image line after all (a
    copy whose blank header line was removed): its first field names an image."""
    return tokens[0].lower().endswith(IMAGE_SUFFIXES)


def _read_list(list_file: Path, root: Path, focals: dict[str, float]):
    """``(frames, images not in the reconstruction, outliers, lines)`` of one list file."""
    if not list_file.is_file():
        raise file_error(list_file, "list file not found")
    frames, missing, outliers = [], [], []
    rows = [(line, tokens) for line, tokens in text_rows(list_file)
            if line > HEADER_LINES or _is_image_line(tokens)]
    for line, tokens in rows:
        if len(tokens) != 8:
            raise file_error(list_file, f"expected 'image X Y Z W P Q R' (8 fields), found "
                                        f"{len(tokens)}", line)
        name = tokens[0]
        pose = _pose(list_file, line, parse_floats(tokens[1:], list_file, line))
        image = root / name
        if _image_key(name) not in focals:
            missing.append(image)
            continue
        if np.abs(-pose[:3, :3].T @ pose[:3, 3]).max() > OUTLIER_TRANSLATION:
            outliers.append(image)
            continue
        try:
            width, height = image_size(image)
        except AcegError as exc:
            raise file_error(list_file, str(exc), line) from None
        focal = focals[_image_key(name)]
        intrinsics = Intrinsics(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0)
        intrinsics.check(f"{list_file}:{line}", width, height)
        frames.append(Frame(name, image, width, height, intrinsics, pose))
    return frames, missing, outliers, len(rows)


def _read_halves(root: Path, halves: tuple[str, ...]):
    """``(frames by half, notes, source files)`` of the scene at ``root``."""
    nvm = root / NVM_FILE
    focals = read_nvm_focals(nvm)
    frames: dict[str, list[Frame]] = {}
    missing, outliers, sources, total = [], [], [nvm], 0
    for half in halves:
        list_file = root / LIST_FILES[half]
        frames[half], lost, far, count = _read_list(list_file, root, focals)
        missing += lost
        outliers += far
        sources.append(list_file)
        total += count
    notes = skipped_note(missing, total, f"not in {NVM_FILE}, so no focal length")
    notes += skipped_note(outliers, total, "world-to-camera translation above "
                                           f"{OUTLIER_TRANSLATION:g} m (an outlier)")
    return frames, notes, sources


def read(path: Path) -> Scene:
    """Every image of a Cambridge Landmarks scene folder, or of one list file."""
    path = Path(path)
    root = checked_scene_root(path, detect, NOT_A_SCENE)
    halves = tuple(h for h, name in LIST_FILES.items() if path.is_dir() or path.name == name)
    frames, notes, sources = _read_halves(root, halves)
    name = read_scene_name(path, root, halves[0])
    return whole_scene(name, frames, root, NAME, notes, sources)


def read_split(path: Path) -> tuple[Scene, Scene]:
    """The official ``(mapping, query)`` scenes: ``dataset_train.txt``, ``dataset_test.txt``."""
    root = checked_scene_root(scene_root(Path(path)), detect, NOT_A_SCENE)
    frames, notes, sources = _read_halves(root, (MAPPING, QUERY))
    return split_scenes(root.resolve().name, frames, root, NAME, notes, sources)
