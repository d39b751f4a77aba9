"""COLMAP sparse models (binary or text), read through pycolmap.

Where the model is looked for, given a path ``P`` (first match wins):

1. ``P`` itself, if it holds ``cameras``, ``images`` and ``points3D`` (``.bin`` or ``.txt``;
   pycolmap prefers binary when both exist);
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

Images without a pose (not registered) are skipped and counted in ``Scene.notes``.
Frames are sorted by image name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aceg.data.camera import Intrinsics, check_pose, invert_pose
from aceg.data.readers._common import check_image_size, make_scene, numbered_lines
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error

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


def _locate_text_error(model_folder: Path) -> AcegError | None:
    """Find the first malformed line of a text model (pycolmap's errors name no line)."""
    cameras = model_folder / "cameras.txt"
    if cameras.is_file():
        for line, tokens in numbered_lines(cameras):
            if len(tokens) < 4:
                return file_error(cameras, "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...", line)
            for token in (tokens[0], tokens[2], tokens[3]):
                if not token.isdigit():
                    return file_error(cameras, f"expected an integer, got {token!r}", line)
            for token in tokens[4:]:
                try:
                    float(token)
                except ValueError:
                    return file_error(cameras, f"cannot parse number {token!r}", line)
            if tokens[1] in SUPPORTED_MODELS and len(tokens) - 4 != SUPPORTED_MODELS[tokens[1]]:
                return file_error(
                    cameras,
                    f"camera model {tokens[1]} needs {SUPPORTED_MODELS[tokens[1]]} "
                    f"parameters, got {len(tokens) - 4}",
                    line,
                )
    images = model_folder / "images.txt"
    if images.is_file():
        # Two lines per image: the pose line, then the 2D points line (which may be empty,
        # so only every pose line is checked, found by its 10 leading fields).
        lines = images.read_text(encoding="utf-8", errors="replace").splitlines()
        data = [(n, line.split()) for n, line in enumerate(lines, 1) if not line.startswith("#")]
        for number, tokens in data[0::2]:
            if len(tokens) < 10:
                return file_error(
                    images, "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", number
                )
            for token in tokens[1:8]:
                try:
                    float(token)
                except ValueError:
                    return file_error(images, f"cannot parse number {token!r}", number)
            if not tokens[0].isdigit() or not tokens[8].isdigit():
                return file_error(images, "image and camera ids must be integers", number)
    return None


#: Parameter count of every COLMAP camera model id (COLMAP's ``models.h`` numbering); the
#: binary check needs all of them to walk the file, the reader accepts only ``SUPPORTED_MODELS``.
BINARY_MODEL_PARAMS = {0: 3, 1: 4, 2: 4, 3: 5, 4: 8, 5: 8, 6: 12, 7: 5, 8: 4, 9: 5, 10: 12, 11: 16}


def _check_binary_layout(path: Path) -> None:
    """Walk the records of a COLMAP ``cameras.bin`` / ``images.bin`` / ``points3D.bin`` and
    raise a clear error if the counts they declare do not fit the file (pycolmap loops or
    crashes on a truncated file instead of failing). Reads only the fixed-size headers of
    each record, so it is cheap next to the parsing pycolmap does afterwards.

    Layouts (little endian): cameras: ``u64 n``, then per camera ``i32 id, i32 model,
    u64 width, u64 height, f64 params[k(model)]``; images: ``u64 n``, then ``u32 id,
    f64 q[4], f64 t[3], u32 camera_id, name\\0, u64 m, m x (f64 x, f64 y, i64 point_id)``;
    points3D: ``u64 n``, then ``u64 id, f64 xyz[3], u8 rgb[3], f64 error, u64 m,
    m x (i32 image_id, i32 point2d_index)``.
    """
    import struct

    data = path.read_bytes()
    size = len(data)
    kind = path.stem

    def need(offset: int, count: int, what: str) -> None:
        if offset + count > size:
            raise file_error(path, f"truncated: the file ends inside {what} "
                                   f"({size} bytes, at least {offset + count} needed)")

    need(0, 8, "the record count")
    (count,) = struct.unpack_from("<Q", data, 0)
    offset = 8
    for index in range(count):
        record = f"record {index + 1} of the {count} it declares"
        if kind == "cameras":
            need(offset, 24, record)
            _camera_id, model = struct.unpack_from("<iiQQ", data, offset)[:2]
            if model not in BINARY_MODEL_PARAMS:
                raise file_error(path, f"{record}: unknown camera model id {model}")
            offset += 24 + 8 * BINARY_MODEL_PARAMS[model]
            need(offset, 0, record)
        elif kind == "images":
            need(offset, 64, record)
            end = data.find(b"\0", offset + 64)
            if end < 0:
                raise file_error(path, f"truncated: {record} has no end to its image name")
            need(end + 1, 8, record)
            (points,) = struct.unpack_from("<Q", data, end + 1)
            offset = end + 9 + 24 * points
            need(offset, 0, f"{record} ({points} 2-D points)")
        else:  # points3D
            need(offset, 43 + 8, record)
            (track,) = struct.unpack_from("<Q", data, offset + 43)
            offset += 51 + 8 * track
            need(offset, 0, f"{record} (track of {track})")


def _load_reconstruction(model_folder: Path):
    import pycolmap

    for stem in MODEL_FILES:
        model_file = _model_file(model_folder, stem)
        if model_file is None:
            raise AcegError(f"{model_folder}: COLMAP model file {stem}.bin or {stem}.txt not found")
        if model_file.suffix == ".bin":
            if model_file.stat().st_size == 0:
                raise file_error(model_file, "file is empty")
            _check_binary_layout(model_file)
    try:
        return pycolmap.Reconstruction(str(model_folder))
    except Exception as exc:  # pycolmap raises ValueError / RuntimeError with C++ detail
        binary = all((model_folder / f"{stem}.bin").is_file() for stem in MODEL_FILES)
        located = None if binary else _locate_text_error(model_folder)
        if located is not None:
            raise located from None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AcegError(
            f"{model_folder}: cannot read COLMAP model, a file is corrupt or truncated "
            f"(pycolmap: {detail})"
        ) from None


def _cam_from_world_matrix(image) -> np.ndarray:
    transform = image.cam_from_world
    if callable(transform):  # pycolmap >= 3.12 exposes it as a method
        transform = transform()
    matrix = np.eye(4)
    matrix[:3, :4] = np.asarray(transform.matrix(), dtype=np.float64)
    return matrix


def _has_pose(image) -> bool:
    flag = getattr(image, "has_pose", True)
    return bool(flag() if callable(flag) else flag)


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
    reconstruction = _load_reconstruction(model_folder)
    cameras_file = _model_file(model_folder, "cameras")
    images_file = _model_file(model_folder, "images")
    intrinsics_of: dict[int, tuple[Intrinsics, int, int]] = {}
    for camera_id, camera in reconstruction.cameras.items():
        where = f"{cameras_file}: camera {camera_id}"
        intrinsics = intrinsics_from_camera(camera.model.name, list(camera.params), where)
        intrinsics.check(where, camera.width, camera.height)
        intrinsics_of[camera_id] = (intrinsics, int(camera.width), int(camera.height))
    frames = []
    unposed = 0
    for image in reconstruction.images.values():
        if not _has_pose(image):
            unposed += 1
            continue
        where = f"{images_file}: image {image.image_id} ({image.name})"
        intrinsics, width, height = intrinsics_of[image.camera_id]
        world_to_cam = check_pose(_cam_from_world_matrix(image), where)
        image_path = images_folder / image.name
        check_image_size(image_path, width, height, f"{cameras_file}: camera {image.camera_id}")
        frames.append(
            Frame(image.name, image_path, width, height, intrinsics, invert_pose(world_to_cam))
        )
    notes = [f"{unposed} images without a pose were skipped"] if unposed else []
    root = images_folder.parent
    model_files = [p for p in model_folder.iterdir() if p.stem in MODEL_FILES and p.is_file()]
    return make_scene(root.resolve().name, frames, root, NAME, notes, sources=model_files)
