"""COLMAP sparse models (binary or text), read as COLMAP defines them
(:mod:`aceg.data.readers._colmap_files`: two lines per image in ``images.txt``, the second
possibly empty; zero or non-unit quaternions, non-finite values and degenerate cameras are
refused naming file and line or record).

Where the model is looked for, given a path ``P`` (first match wins):

1. ``P`` itself, if it holds ``cameras``, ``images`` and ``points3D`` (``.bin`` or ``.txt``;
   binary is preferred when both exist, as COLMAP does; newer models' ``rigs`` and
   ``frames`` files are not needed, each image's pose is in ``images``);
2. ``P/sparse/0``;
3. ``P/sparse``.

Images are looked for in an ``images/`` folder beside the model: in the model folder, its
parent or its grandparent (first one that exists), so both ``P/sparse/0`` with ``P/images``
and a model folder holding ``images/`` work. COLMAP image names are relative to it.

Conventions converted on reading:

* COLMAP stores world-to-camera (``cam_from_world``); poses are inverted to
  camera-to-world. COLMAP's camera axes are OpenCV's (x right, y down, z forward).
* COLMAP's pixel grid has pixel centres at half-integers (the top-left pixel centre is
  ``(0.5, 0.5)``); aceg's are at integers, so ``cx_aceg = cx - 0.5``, ``cy_aceg = cy - 0.5``.
* Camera models: ``SIMPLE_PINHOLE (f, cx, cy)``, ``PINHOLE (fx, fy, cx, cy)``,
  ``SIMPLE_RADIAL (f, cx, cy, k)``, ``RADIAL (f, cx, cy, k1, k2)`` and
  ``OPENCV (fx, fy, cx, cy, k1, k2, p1, p2)``; distortion is stored in OpenCV order
  ``(k1, k2, p1, p2)``. Any other model is refused.

COLMAP writes only registered (posed) images. Frames are sorted by image name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aceg.data.camera import Intrinsics, check_pose, invert_pose, quaternion_to_rotation
from aceg.data.readers._colmap_files import (
    ColmapImage,
    check_cameras_of,
    check_points_binary,
    read_cameras_binary,
    read_cameras_text,
    read_images_binary,
    read_images_text,
)
from aceg.data.readers._common import check_image_size, make_scene
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError

NAME = "colmap"

MODEL_FILES = ("cameras", "images", "points3D")
MODEL_SUFFIXES = (".bin", ".txt")
IMAGES_FOLDER = "images"

#: Offset from COLMAP pixel coordinates (centres at half-integers) to aceg's (integers).
PIXEL_CENTRE_OFFSET = 0.5

#: Number of parameters of each supported COLMAP camera model.
SUPPORTED_MODELS = {
    "SIMPLE_PINHOLE": 3,
    "PINHOLE": 4,
    "SIMPLE_RADIAL": 4,
    "RADIAL": 5,
    "OPENCV": 8,
}


def _model_file(folder: Path, stem: str) -> Path | None:
    for suffix in MODEL_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _looks_like_model(folder: Path) -> bool:
    return (
        folder.is_dir()
        and _model_file(folder, "cameras") is not None
        and (_model_file(folder, "images") is not None)
    )


def find_model_folder(path: Path) -> Path | None:
    """The model folder for ``path`` by the search rule of the module docstring."""
    for candidate in (path, path / "sparse" / "0", path / "sparse"):
        if _looks_like_model(candidate):
            return candidate
    return None


def find_images_folder(model_folder: Path) -> Path | None:
    for folder in (model_folder, model_folder.parent, model_folder.parent.parent):
        if (folder / IMAGES_FOLDER).is_dir():
            return folder / IMAGES_FOLDER
    return None


def detect(path: Path) -> bool:
    return Path(path).is_dir() and find_model_folder(Path(path)) is not None


def intrinsics_from_camera(model: str, params: list[float], where: str) -> Intrinsics:
    """aceg intrinsics from COLMAP camera parameters (see the module docstring)."""
    if model not in SUPPORTED_MODELS:
        raise AcegError(
            f"{where}: camera model {model} is not supported (supported: "
            f"{', '.join(SUPPORTED_MODELS)})"
        )
    if len(params) != SUPPORTED_MODELS[model]:
        raise AcegError(
            f"{where}: camera model {model} needs {SUPPORTED_MODELS[model]} parameters, "
            f"got {len(params)}"
        )
    dist: tuple[float, ...] = ()
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = params
        fx = fy = f
    elif model == "PINHOLE":
        fx, fy, cx, cy = params
    elif model == "SIMPLE_RADIAL":
        f, cx, cy, k = params
        fx = fy = f
        dist = (k, 0.0, 0.0, 0.0)
    elif model == "RADIAL":
        f, cx, cy, k1, k2 = params
        fx = fy = f
        dist = (k1, k2, 0.0, 0.0)
    else:  # OPENCV
        fx, fy, cx, cy, k1, k2, p1, p2 = params
        dist = (k1, k2, p1, p2)
    if not any(dist):
        dist = ()
    return Intrinsics(
        float(fx),
        float(fy),
        float(cx) - PIXEL_CENTRE_OFFSET,
        float(cy) - PIXEL_CENTRE_OFFSET,
        tuple(float(d) for d in dist),
    )


def read_model(model_folder: Path):
    """``(cameras, images, cameras_file, images_file)`` of the model in ``model_folder``
    (binary files preferred); a binary ``points3D`` is walked for truncation."""
    files = {}
    for stem in MODEL_FILES:
        files[stem] = _model_file(model_folder, stem)
        if files[stem] is None:
            raise AcegError(f"{model_folder}: COLMAP model file {stem}.bin or {stem}.txt not found")
    binary = {stem: path.suffix == ".bin" for stem, path in files.items()}
    cameras = (read_cameras_binary if binary["cameras"] else read_cameras_text)(files["cameras"])
    images = (read_images_binary if binary["images"] else read_images_text)(files["images"])
    if binary["points3D"]:
        check_points_binary(files["points3D"])
    check_cameras_of(images, cameras, files["cameras"])
    return cameras, images, files["cameras"], files["images"]


def _world_to_camera(image: ColmapImage) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_rotation(np.array(image.qvec))
    pose[:3, 3] = image.tvec
    return pose


def read(path: Path) -> Scene:
    """Read a COLMAP sparse model (see the module docstring)."""
    path = Path(path)
    model_folder = find_model_folder(path)
    if model_folder is None:
        raise AcegError(
            f"{path}: no COLMAP model (cameras/images/points3D .bin or .txt) here, in sparse/0 "
            "or in sparse/"
        )
    images_folder = find_images_folder(model_folder)
    if images_folder is None:
        raise AcegError(
            f"{model_folder}: no images/ folder beside the COLMAP model (looked in the model "
            "folder, its parent and grandparent)"
        )
    cameras, images, _, _ = read_model(model_folder)
    intrinsics_of: dict[int, Intrinsics] = {}
    for camera in cameras.values():
        intrinsics = intrinsics_from_camera(camera.model, list(camera.params), camera.where)
        intrinsics.check(camera.where, camera.width, camera.height)
        intrinsics_of[camera.camera_id] = intrinsics
    frames = []
    for image in images.values():
        camera = cameras[image.camera_id]
        world_to_cam = check_pose(_world_to_camera(image), image.where)
        image_path = images_folder / image.name
        check_image_size(image_path, camera.width, camera.height, camera.where)
        frames.append(Frame(image.name, image_path, camera.width, camera.height,
                            intrinsics_of[camera.camera_id], invert_pose(world_to_cam)))
    root = images_folder.parent
    model_files = [p for p in model_folder.iterdir() if p.stem in MODEL_FILES and p.is_file()]
    return make_scene(root.resolve().name, frames, root, NAME, sources=model_files)
