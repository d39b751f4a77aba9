"""Middlebury multi-view stereo layout (templeRing, dinoRing, ...).

A folder holds the images and one ``<set>_par.txt``: the first line is the number of
images, then one line per image::

    name k11 k12 k13 k21 k22 k23 k31 k32 k33 r11 r12 r13 r21 r22 r23 r31 r32 r33 t1 t2 t3

with the projection ``x ~ K [R | t] X``: ``R, t`` map **world to camera** (OpenCV camera
axes, image origin top-left, pixel centres at integer coordinates). The camera-to-world
pose is the inverse ``[R^T | -R^T t]``. Image names are relative to the folder. The path
may be the folder or the ``_par.txt`` file itself. Frames are sorted by image name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aceg.data.camera import Intrinsics, check_pose, check_rotation, invert_pose, make_pose
from aceg.data.readers._common import (
    image_size,
    make_scene,
    numbered_lines,
    parse_floats,
    parse_int,
)
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error

NAME = "middlebury"

PARAMETER_FILE_SUFFIX = "_par.txt"
FIELDS_PER_LINE = 22  # name, 9 for K, 9 for R, 3 for t


def parameter_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{PARAMETER_FILE_SUFFIX}") if p.is_file())


def detect(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return path.name.endswith(PARAMETER_FILE_SUFFIX)
    return path.is_dir() and bool(parameter_files(path))


def find_parameter_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = parameter_files(path)
    if not found:
        raise AcegError(f"{path}: no *{PARAMETER_FILE_SUFFIX} camera file found")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise AcegError(f"{path}: several camera files ({names}); pass the one to read")
    return found[0]


def read(path: Path) -> Scene:
    """Read a Middlebury folder or ``_par.txt`` file (see the module docstring)."""
    parameters = find_parameter_file(Path(path))
    folder = parameters.parent
    rows = numbered_lines(parameters)
    if not rows:
        raise file_error(parameters, "file is empty")
    count_line, count_tokens = rows[0]
    if len(count_tokens) != 1:
        raise file_error(parameters, "first line must hold the number of images", count_line)
    declared = parse_int(count_tokens[0], parameters, count_line, "number of images")
    entries = rows[1:]
    if declared != len(entries):
        raise file_error(
            parameters, f"declares {declared} images but lists {len(entries)}", count_line
        )
    frames = []
    for line, tokens in entries:
        if len(tokens) != FIELDS_PER_LINE:
            raise file_error(
                parameters,
                f"expected {FIELDS_PER_LINE} fields (name, K, R, t), found {len(tokens)}",
                line,
            )
        name = tokens[0]
        values = np.array(parse_floats(tokens[1:], parameters, line))
        K, R, t = values[0:9].reshape(3, 3), values[9:18].reshape(3, 3), values[18:21]
        where = f"{parameters}:{line}"
        if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9):
            raise AcegError(f"{where}: last row of K must be 0 0 1, got {K[2].tolist()}")
        if abs(K[0, 1]) > 1e-9 or abs(K[1, 0]) > 1e-9:
            raise AcegError(f"{where}: K has a skew term; only fx, fy, cx, cy are supported")
        check_rotation(R, where)
        cam_to_world = check_pose(invert_pose(make_pose(R, t)), where)
        image = folder / name
        try:
            width, height = image_size(image)
        except AcegError as exc:
            raise AcegError(f"{where}: {exc}") from None
        intrinsics = Intrinsics.from_K(K)
        intrinsics.check(where, width, height)
        frames.append(Frame(name, image, width, height, intrinsics, cam_to_world))
    return make_scene(folder.name, frames, folder, NAME, sources=[parameters])
