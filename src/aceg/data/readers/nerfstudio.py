"""nerfstudio / instant-ngp ``transforms.json``.

The path is a folder holding ``transforms.json`` or the JSON file itself. Keys used:

* ``frames``: list of ``{"file_path", "transform_matrix"[, "depth_file_path"]}``; paths
  are relative to the JSON file's folder (a path without extension that does not exist
  is tried with ``.png``, as in the NeRF-synthetic sets);
* intrinsics, per frame or global (a per-frame value wins): ``fl_x``, ``fl_y`` (default
  ``fl_x``), ``cx``, ``cy`` (default ``w / 2``, ``h / 2``), ``w``, ``h`` (default: read
  from the image; checked against it when given); without ``fl_x``, ``camera_angle_x``
  (horizontal field of view, radians) gives ``fl_x = w / (2 tan(angle / 2))`` and
  ``camera_angle_y`` likewise ``fl_y``;
* distortion ``k1 k2 p1 p2`` (and ``k3`` when present), OpenCV's model and order;
  ``camera_model`` may be absent, ``OPENCV``, ``PINHOLE`` or ``SIMPLE_PINHOLE``; fisheye and
  equirectangular models are refused.

Conventions converted on reading:

* ``transform_matrix`` is camera-to-world with **OpenGL camera axes** (x right, y up,
  looking along -z); it is converted with :func:`aceg.data.camera.opengl_to_opencv`.
* ``cx, cy`` follow COLMAP / nerfstudio's pixel grid, whose pixel centres sit at
  half-integers (rays are cast through ``(j + 0.5, i + 0.5)``); aceg's centres are at
  integers, so ``cx_aceg = cx - 0.5`` and ``cy_aceg = cy - 0.5``.
* Depth maps named by ``depth_file_path`` are taken as 16-bit PNG millimetres (nerfstudio's
  default depth unit scale 0.001) or ``.npy`` metres.

Frames are named by ``file_path`` (relative to the JSON folder; the file name for an
absolute path) and sorted by name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from aceg.data.camera import Intrinsics, check_pose, opengl_to_opencv
from aceg.data.readers._common import image_size, make_scene, read_text, scene_name
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error
from aceg.json_limits import parse_json

NAME = "nerfstudio"

FILE_NAME = "transforms.json"
SUPPORTED_CAMERA_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")

#: Offset from nerfstudio / COLMAP pixel coordinates (centres at half-integers) to aceg's.
PIXEL_CENTRE_OFFSET = 0.5


def detect(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".json"
    return (path / FILE_NAME).is_file()


def _line_of(text: str, needle: str) -> int | None:
    """1-based line of the first occurrence of ``needle`` in ``text`` (for messages)."""
    index = text.find(needle)
    return None if index < 0 else text.count("\n", 0, index) + 1


class _FrameContext:
    """Where a frame's values come from, for lookups with a global fallback and messages."""

    def __init__(self, path: Path, text: str, index: int, frame: dict, global_values: dict):
        self.path, self.index, self.frame, self.global_values = path, index, frame, global_values
        file_path = frame.get("file_path")
        self.line = _line_of(text, json.dumps(file_path)) if isinstance(file_path, str) else None
        self.label = f"frames[{index}]" + (f" ({file_path})" if isinstance(file_path, str) else "")

    def error(self, problem: str) -> AcegError:
        return file_error(self.path, f"{self.label}: {problem}", self.line)

    def number(self, key: str, default: float | None = None) -> float | None:
        value: Any = self.frame.get(key, self.global_values.get(key))
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise self.error(f"{key} is not finite ({value})")
        return float(value)


def _resolve_image(base: Path, file_path: str) -> Path:
    image = base / file_path
    if not image.suffix and not image.exists() and image.with_suffix(".png").exists():
        return image.with_suffix(".png")
    return image


def _field_of_view(ctx: _FrameContext, key: str) -> float | None:
    """A field of view in radians, strictly between 0 and pi (None when absent)."""
    angle = ctx.number(key)
    if angle is not None and not 0.0 < angle < math.pi:
        raise ctx.error(f"{key} must be an angle in radians between 0 and pi, got {angle}")
    return angle


def _intrinsics(ctx: _FrameContext, image: Path) -> tuple[Intrinsics, int, int]:
    width_value, height_value = ctx.number("w"), ctx.number("h")
    try:
        actual_width, actual_height = image_size(image)
    except AcegError as exc:
        raise ctx.error(str(exc)) from None
    if width_value is not None and height_value is not None:
        if (int(width_value), int(height_value)) != (actual_width, actual_height):
            raise ctx.error(
                f"states image size {int(width_value)}x{int(height_value)} but {image} is "
                f"{actual_width}x{actual_height}"
            )
    width, height = actual_width, actual_height
    fl_x = ctx.number("fl_x")
    fl_y = ctx.number("fl_y")
    if fl_x is None:
        angle_x = _field_of_view(ctx, "camera_angle_x")
        if angle_x is None:
            raise ctx.error("no focal length: needs fl_x or camera_angle_x")
        fl_x = 0.5 * width / math.tan(0.5 * angle_x)
    if fl_y is None:
        angle_y = _field_of_view(ctx, "camera_angle_y")
        fl_y = 0.5 * height / math.tan(0.5 * angle_y) if angle_y is not None else fl_x
    cx = ctx.number("cx", width / 2.0) - PIXEL_CENTRE_OFFSET
    cy = ctx.number("cy", height / 2.0) - PIXEL_CENTRE_OFFSET
    k1, k2 = ctx.number("k1", 0.0), ctx.number("k2", 0.0)
    p1, p2 = ctx.number("p1", 0.0), ctx.number("p2", 0.0)
    k3 = ctx.number("k3", 0.0)
    for key in ("k4", "k5", "k6"):
        if ctx.number(key, 0.0) != 0.0:
            raise ctx.error(f"{key} is not supported (only k1 k2 p1 p2 k3)")
    dist: tuple[float, ...] = (k1, k2, p1, p2, k3) if k3 != 0.0 else (k1, k2, p1, p2)
    if not any(dist):
        dist = ()
    intrinsics = Intrinsics(fl_x, fl_y, cx, cy, dist)
    intrinsics.check(f"{ctx.path}: {ctx.label}", width, height)
    return intrinsics, width, height


def read(path: Path) -> Scene:
    """Read a ``transforms.json`` scene (see the module docstring)."""
    path = Path(path)
    json_path = path if path.is_file() else path / FILE_NAME
    text = read_text(json_path)
    data = parse_json(text, json_path)
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise file_error(json_path, "expected an object with a 'frames' list")
    base = json_path.parent
    global_values = {k: v for k, v in data.items() if k != "frames"}
    frames = []
    for index, entry in enumerate(data["frames"]):
        if not isinstance(entry, dict):
            raise file_error(json_path, f"frames[{index}] must be an object")
        ctx = _FrameContext(json_path, text, index, entry, global_values)
        model = entry.get("camera_model", global_values.get("camera_model"))
        if model is not None and model not in SUPPORTED_CAMERA_MODELS:
            raise ctx.error(
                f"camera model {model!r} is not supported (supported: "
                f"{', '.join(SUPPORTED_CAMERA_MODELS)})"
            )
        file_path = entry.get("file_path")
        if not isinstance(file_path, str) or not file_path:
            raise ctx.error("missing 'file_path'")
        image = _resolve_image(base, file_path)
        intrinsics, width, height = _intrinsics(ctx, image)
        try:
            matrix = np.array(entry["transform_matrix"], dtype=np.float64)
        except KeyError:
            raise ctx.error("missing 'transform_matrix'") from None
        except (TypeError, ValueError):
            raise ctx.error("transform_matrix must be a 4x4 list of numbers") from None
        if matrix.shape == (3, 4):
            matrix = np.vstack([matrix, [0.0, 0.0, 0.0, 1.0]])
        where = f"{json_path}:{ctx.line}: {ctx.label}" if ctx.line else f"{json_path}: {ctx.label}"
        cam_to_world = check_pose(opengl_to_opencv(check_pose(matrix, where)), where)
        depth = None
        depth_value = entry.get("depth_file_path")
        if depth_value is not None:
            if not isinstance(depth_value, str):
                raise ctx.error("depth_file_path must be a string")
            depth = base / depth_value
            if not depth.is_file():
                raise ctx.error(f"depth file not found: {depth}")
        # Frame name: the path as written, relative to the JSON folder; absolute paths
        # are named by their file name.
        name = image.name if Path(file_path).is_absolute() else file_path.removeprefix("./")
        frames.append(Frame(name, image, width, height, intrinsics, cam_to_world, depth))
    return make_scene(scene_name(base), frames, base, NAME, sources=[json_path])
