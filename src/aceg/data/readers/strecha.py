"""Strecha et al. multi-view benchmark layout (fountain-P11, castle-P30, ...).

A scene folder holds ``images/NNNN.jpg`` and ``gt_dense_cameras/NNNN.jpg.camera``. Each
``.camera`` file holds 26 numbers:

* ``K``, 3x3 row-major (pixels, pixel centres at integer coordinates);
* 3 radial distortion terms ``k1 k2 k3``, mapped to OpenCV order ``(k1, k2, 0, 0, k3)``
  (dropped when all zero);
* ``R``, 3x3 row-major, rotation **camera-to-world** (its columns are the camera axes in
  world coordinates);
* ``C``, the camera centre in world coordinates (metres);
* image width and height, checked against the image file.

So the camera-to-world pose is ``[R | C]``. Frames are sorted by image name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aceg.data.camera import Intrinsics, check_pose, check_rotation, make_pose
from aceg.data.readers._common import (
    IMAGE_SUFFIXES,
    check_image_size,
    list_files,
    make_scene,
    match_by_key,
    numbered_lines,
    parse_float,
    scene_name,
)
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error

NAME = "strecha"

IMAGES_FOLDER = "images"
CAMERAS_FOLDER = "gt_dense_cameras"
CAMERA_SUFFIX = ".camera"
NUMBERS_PER_FILE = 26


def detect(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / IMAGES_FOLDER).is_dir() and (path / CAMERAS_FOLDER).is_dir()


def read_camera_file(path: Path) -> tuple[Intrinsics, np.ndarray, int, int]:
    """``(intrinsics, cam_to_world, width, height)`` from one ``.camera`` file."""
    values: list[float] = []
    lines: list[int] = []  # line number of each value, for error messages
    for line, tokens in numbered_lines(path):
        for token in tokens:
            values.append(parse_float(token, path, line))
            lines.append(line)
    if len(values) != NUMBERS_PER_FILE:
        raise file_error(
            path,
            f"expected {NUMBERS_PER_FILE} numbers (K, 3 distortion terms, R, C, width, "
            f"height), found {len(values)}",
        )
    v = np.array(values)
    K = v[0:9].reshape(3, 3)
    radial = v[9:12]
    R = v[12:21].reshape(3, 3)
    centre = v[21:24]
    width, height = v[24], v[25]
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9):
        raise file_error(path, f"last row of K must be 0 0 1, got {K[2].tolist()}", lines[6])
    if abs(K[0, 1]) > 1e-9 or abs(K[1, 0]) > 1e-9:
        raise file_error(path, "K has a skew term; only fx, fy, cx, cy are supported", lines[1])
    if width != int(width) or height != int(height) or width <= 0 or height <= 0:
        raise file_error(
            path, f"image size must be two positive integers, got {width} {height}", lines[24]
        )
    check_rotation(R, f"{path}:{lines[12]}")
    dist = () if not np.any(radial) else (radial[0], radial[1], 0.0, 0.0, radial[2])
    intrinsics = Intrinsics.from_K(K, tuple(float(d) for d in dist))
    intrinsics.check(str(path), int(width), int(height))
    return intrinsics, check_pose(make_pose(R, centre), str(path)), int(width), int(height)


def read(path: Path) -> Scene:
    """Read a Strecha scene folder (see the module docstring)."""
    root = Path(path)
    if not detect(root):
        raise AcegError(
            f"{root}: not a Strecha scene (needs {IMAGES_FOLDER}/ and {CAMERAS_FOLDER}/)"
        )
    images_folder, cameras_folder = root / IMAGES_FOLDER, root / CAMERAS_FOLDER
    images = list_files(images_folder, IMAGE_SUFFIXES)
    if not images:
        raise AcegError(f"{images_folder}: no images found")
    cameras = match_by_key(
        images, images_folder, list_files(cameras_folder, (CAMERA_SUFFIX,)), cameras_folder
    )
    frames = []
    for image, camera in zip(images, cameras, strict=True):
        intrinsics, cam_to_world, width, height = read_camera_file(camera)
        check_image_size(image, width, height, str(camera))
        frames.append(Frame(image.name, image, width, height, intrinsics, cam_to_world))
    return make_scene(scene_name(root), frames, root, NAME, sources=list(cameras))
