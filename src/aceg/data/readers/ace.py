"""ACE / DSAC* folder layout.

A scene (or one split of it, e.g. ``scene/train``) is a folder holding

* ``rgb/``: the images (any format OpenCV reads);
* ``poses/``: one text file per image with a 4x4 **camera-to-world** matrix (OpenCV
  camera axes, metres), row by row; a 3x4 matrix (bottom row omitted) is also accepted;
* ``calibration/``: one text file per image holding either a single focal length ``f``
  in pixels (``fx = fy = f``, principal point at the image centre) or a full 3x3 ``K``;
* ``depth/`` (optional): one depth map per image (16-bit PNG in millimetres, 0 = invalid,
  or ``.npy`` in metres).

Files of one frame are matched by name (``frame_key``: the file name without extension
and without a tag such as ``.color`` / ``.pose`` / ``.depth``); every folder must hold
the same number of files. Frames are sorted by image file name.

Principal point for a focal-length-only calibration: the geometric image centre, which in
the pixel-centre convention of :mod:`aceg.data.camera` is ``((W - 1) / 2, (H - 1) / 2)``.
(The ACE and DSAC* code writes ``W / 2, H / 2`` in its own pixel grid, whose pixel centres
sit at half-integers, i.e. the same point.) A 3x3 ``K`` is taken as written, in the
convention of :mod:`aceg.data.camera`; :func:`aceg.data.writers.write_ace_scene` writes it
that way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aceg.data.camera import Intrinsics, check_pose
from aceg.data.readers._common import (
    IMAGE_SUFFIXES,
    image_size,
    list_files,
    make_scene,
    match_by_key,
    numbered_lines,
    parse_floats,
    scene_name,
)
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error

NAME = "ace"

RGB_FOLDER = "rgb"
POSES_FOLDER = "poses"
CALIBRATION_FOLDER = "calibration"
DEPTH_FOLDER = "depth"
DEPTH_SUFFIXES = (".png", ".npy")


def detect(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / RGB_FOLDER).is_dir() and (path / POSES_FOLDER).is_dir()


def read_matrix(path: Path) -> tuple[np.ndarray, int]:
    """All numbers of a small text matrix file as a flat array, plus the first data line
    number (for error messages). Unparsable or non-finite numbers name their line."""
    rows = numbered_lines(path)
    if not rows:
        raise file_error(path, "file is empty")
    values: list[float] = []
    for line, tokens in rows:
        values.extend(parse_floats(tokens, path, line))
    return np.array(values, dtype=np.float64), rows[0][0]


def read_pose(path: Path) -> np.ndarray:
    """4x4 camera-to-world pose (OpenCV axes, metres) from a pose text file."""
    values, _ = read_matrix(path)
    if values.size == 12:
        values = np.concatenate([values, [0.0, 0.0, 0.0, 1.0]])
    if values.size != 16:
        raise file_error(path, f"expected a 4x4 pose (16 numbers), found {values.size} numbers")
    return check_pose(values.reshape(4, 4), str(path))


def read_calibration(path: Path, width: int, height: int) -> Intrinsics:
    """Intrinsics from a calibration file: one focal length, or a 3x3 K (pixels)."""
    values, _ = read_matrix(path)
    if values.size == 1:
        focal = float(values[0])
        intrinsics = Intrinsics(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0)
    elif values.size == 9:
        K = values.reshape(3, 3)
        if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9):
            raise file_error(path, f"last row of K must be 0 0 1, got {K[2].tolist()}")
        if abs(K[0, 1]) > 1e-9 or abs(K[1, 0]) > 1e-9:
            raise file_error(path, "K has a skew or shear term; only fx, fy, cx, cy are supported")
        intrinsics = Intrinsics.from_K(K)
    else:
        raise file_error(
            path, f"expected a focal length (1 number) or a 3x3 K (9 numbers), found {values.size}"
        )
    intrinsics.check(str(path), width, height)
    return intrinsics


def read(path: Path) -> Scene:
    """Read an ACE / DSAC* scene folder (see the module docstring)."""
    root = Path(path)
    if not detect(root):
        if (root / "train").is_dir() or (root / "test").is_dir():
            raise AcegError(
                f"{root}: holds split folders (train/, test/); pass one of them, e.g. {root / 'train'}"
            )
        raise AcegError(
            f"{root}: not an ACE scene folder (needs {RGB_FOLDER}/ and {POSES_FOLDER}/)"
        )
    rgb_folder = root / RGB_FOLDER
    images = list_files(rgb_folder, IMAGE_SUFFIXES)
    if not images:
        raise AcegError(f"{rgb_folder}: no images found")
    poses = match_by_key(images, rgb_folder, list_files(root / POSES_FOLDER), root / POSES_FOLDER)
    calibration_folder = root / CALIBRATION_FOLDER
    if not calibration_folder.is_dir():
        raise AcegError(f"{calibration_folder}: folder not found (one calibration file per image)")
    calibrations = match_by_key(
        images, rgb_folder, list_files(calibration_folder), calibration_folder
    )
    depth_folder = root / DEPTH_FOLDER
    depths: list[Path | None] = [None] * len(images)
    if depth_folder.is_dir():
        depths = list(
            match_by_key(images, rgb_folder, list_files(depth_folder, DEPTH_SUFFIXES), depth_folder)
        )
    frames = []
    for image, pose, calibration, depth in zip(images, poses, calibrations, depths, strict=True):
        width, height = image_size(image)
        frames.append(
            Frame(
                name=image.name,
                image_path=image,
                width=width,
                height=height,
                intrinsics=read_calibration(calibration, width, height),
                cam_to_world=read_pose(pose),
                depth_path=depth,
            )
        )
    return make_scene(scene_name(root), frames, root, NAME, sources=[*poses, *calibrations])
