"""COLMAP model files read as COLMAP defines them (text and binary), into plain values.

Only what a scene needs is kept: each camera's model, size and parameters, and each
image's pose, camera and name. ``points3D`` is not read (a binary one is walked, so that a
truncated file is reported). Every error names the file and the line (text) or record
(binary).

Text (``cameras.txt``, ``images.txt``; COLMAP's ``doc/format.rst``)
    * A line whose first non-blank character is ``#`` is a comment; empty lines are
      skipped between records. A later field that starts with ``#`` ends a line.
    * ``cameras.txt``: one line per camera, ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...``
      with as many parameters as the model has (:data:`CAMERA_MODELS`).
    * ``images.txt``: **two lines per image**: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID
      NAME``, then the image's POINTS2D line (``X Y POINT3D_ID`` triples), which is
      **empty** for an image without 2-D points and is taken as that image's whatever it
      holds (as COLMAP does; a comment there counts as empty). So a file whose empty lines
      were stripped puts the next image's line where a POINTS2D line belongs: it is refused
      at that line, instead of being read as every other image (what pycolmap does). A last
      image whose POINTS2D line is missing at the end of the file is kept (COLMAP drops it).
      Names cannot contain spaces. The 2-D points are checked for their shape (triples, an
      integer point id) but not kept.

Binary (``cameras.bin``, ``images.bin``, ``points3D.bin``; little endian)
    cameras: ``u64 n``, then per camera ``u32 id, i32 model, u64 width, u64 height,
    f64 params[k(model)]``; images: ``u64 n``, then ``u32 id, f64 q[4], f64 t[3],
    u32 camera_id, name\\0, u64 m, m x (f64 x, f64 y, u64 point3D_id)``; points3D: ``u64 n``,
    then ``u64 id, f64 xyz[3], u8 rgb[3], f64 error, u64 m, m x (u32 image_id, u32 index)``.
    A count that does not fit the file is reported as truncation.

Values: numbers must be finite; a rotation quaternion ``(w, x, y, z)`` must have unit length
within :data:`QUATERNION_TOLERANCE` (a zero quaternion is no rotation; it is not read as the
identity) and is then normalised; ids are unique; every image's camera exists; sizes are
positive.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

from aceg.data.readers._common import parse_float, read_text
from aceg.errors import AcegError, file_error

#: COLMAP camera models: id -> (name, number of parameters), as in COLMAP's ``models.h``.
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16), 12: ("SIMPLE_DIVISION", 4), 13: ("DIVISION", 5),
    14: ("SIMPLE_FISHEYE", 3), 15: ("FISHEYE", 4), 16: ("EUCM", 6), 17: ("EQUIRECTANGULAR", 2),
}
PARAMS_OF = dict(CAMERA_MODELS.values())
#: Largest allowed deviation of a quaternion's length from 1 (COLMAP writes 17 digits; a
#: hand-written one with 4 decimals is off by about 1e-4).
QUATERNION_TOLERANCE = 1e-3
#: Largest image side, pixels.
MAX_IMAGE_SIDE = 1 << 20
IMAGE_FIELDS = "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"


@dataclass(frozen=True)
class ColmapCamera:
    """A camera: COLMAP model name, image size (pixels), parameters (COLMAP's pixel grid),
    and where it was read (``file:line: camera N``, for messages)."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]
    where: str


@dataclass(frozen=True)
class ColmapImage:
    """An image: unit quaternion ``qvec`` (w, x, y, z) and translation ``tvec`` (metres) of
    world-to-camera, its camera's id, its name (relative to the images folder), and where
    it was read."""

    image_id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str
    where: str


def _tokens(line: str) -> list[str]:
    """The fields of a data line, up to a field starting with ``#``; [] for a comment."""
    fields = line.split()
    for i, field in enumerate(fields):
        if field.startswith("#"):
            return fields[:i]
    return fields


def _uint(token: str, path: Path, line: int | None, what: str, low: int = 0) -> int:
    if not (token.isascii() and token.isdigit()) or int(token) < low or int(token) >= 1 << 32:
        raise file_error(path, f"{what} must be an integer from {low} to 4294967295, got "
                               f"{token[:40]!r}", line)
    return int(token)


def _unit_quaternion(q: list[float], path: Path, line: int | None, where: str) -> tuple:
    norm = math.sqrt(sum(v * v for v in q))
    if not abs(norm - 1.0) <= QUATERNION_TOLERANCE:
        raise file_error(path, f"{where}rotation quaternion (w x y z) {' '.join(f'{v:g}' for v in q)} "
                               f"has length {norm:.3g}, not 1 (a zero quaternion is no rotation)",
                         line)
    return tuple(v / norm for v in q)


def _camera(path: Path, line: int | None, camera_id: int, model: str, width: int, height: int,
            params: list[float], where: str) -> ColmapCamera:
    if model not in PARAMS_OF:
        raise file_error(path, f"{where}unknown camera model {model[:40]!r}", line)
    if len(params) != PARAMS_OF[model]:
        raise file_error(path, f"{where}camera model {model} needs {PARAMS_OF[model]} parameters, "
                               f"got {len(params)}", line)
    for name, value in (("width", width), ("height", height)):
        if not 1 <= value <= MAX_IMAGE_SIDE:
            raise file_error(path, f"{where}image {name} must be from 1 to {MAX_IMAGE_SIDE} "
                                   f"pixels, got {value}", line)
    label = f"{path}:{line}" if line is not None else str(path)
    return ColmapCamera(camera_id, model, width, height, tuple(params),
                        f"{label}: {where or ''}camera {camera_id}")


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    """The cameras of a ``cameras.txt`` (see the module docstring)."""
    cameras: dict[int, ColmapCamera] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        tokens = _tokens(line)
        if not tokens:
            continue
        if len(tokens) < 4:
            raise file_error(path, "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...", number)
        camera_id = _uint(tokens[0], path, number, "camera id")
        width = _uint(tokens[2], path, number, "image width")
        height = _uint(tokens[3], path, number, "image height")
        params = [parse_float(t, path, number) for t in tokens[4:]]
        if camera_id in cameras:
            raise file_error(path, f"camera {camera_id} is defined twice", number)
        cameras[camera_id] = _camera(path, number, camera_id, tokens[1], width, height, params, "")
    return cameras


def _image_line(path: Path, number: int, tokens: list[str]) -> ColmapImage:
    if len(tokens) != 10:
        spaces = " (an image name cannot contain spaces)" if len(tokens) > 10 else ""
        raise file_error(path, f"expected {IMAGE_FIELDS}, found {len(tokens)} fields{spaces}",
                         number)
    image_id = _uint(tokens[0], path, number, "image id")
    numbers = [parse_float(t, path, number) for t in tokens[1:8]]
    camera_id = _uint(tokens[8], path, number, "camera id")
    q = _unit_quaternion(numbers[:4], path, number, "")
    return ColmapImage(image_id, q, tuple(numbers[4:]), camera_id, tokens[9],
                       f"{path}:{number}: image {image_id} ({tokens[9]})")


def _check_points_line(path: Path, number: int, line: str, image: ColmapImage) -> None:
    tokens = [] if line.lstrip().startswith("#") else _tokens(line)
    ids_ok = all(t.isdigit() or t == "-1" for t in tokens[2::3])
    if len(tokens) % 3 == 0 and ids_ok:
        return
    hint = (": it looks like the next image's line; every image takes two lines, the second "
            "empty when it has no 2-D points (were the empty lines removed?)"
            if len(tokens) == 10 else "")
    raise file_error(path, f"expected the POINTS2D line of image {image.image_id} (X Y POINT3D_ID "
                           f"per point, empty for none), found {len(tokens)} fields{hint}", number)


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    """The images of an ``images.txt`` (two lines per image; see the module docstring)."""
    lines = read_text(path).splitlines()
    images: dict[int, ColmapImage] = {}
    index = 0
    while index < len(lines):
        number, tokens = index + 1, _tokens(lines[index])
        index += 1
        if not tokens:
            continue
        image = _image_line(path, number, tokens)
        if image.image_id in images:
            raise file_error(path, f"image {image.image_id} is defined twice", number)
        images[image.image_id] = image
        if index < len(lines):  # its POINTS2D line, whatever it holds
            _check_points_line(path, index + 1, lines[index], image)
            index += 1
    return images


class _Bytes:
    """Little-endian reading of a binary model file with truncation errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise file_error(path, f"cannot read file ({exc.strerror})") from None
        if not self.data:
            raise file_error(path, "file is empty")
        self.offset = 0

    def take(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            raise file_error(self.path, f"truncated: the file ends inside {what} "
                                        f"({len(self.data)} bytes, at least {self.offset + size} needed)")
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def skip(self, count: int, what: str) -> None:
        if self.offset + count > len(self.data):
            raise file_error(self.path, f"truncated: the file ends inside {what} "
                                        f"({len(self.data)} bytes, at least {self.offset + count} needed)")
        self.offset += count

    def name(self, what: str) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise file_error(self.path, f"truncated: {what} has no end to its image name")
        raw, self.offset = self.data[self.offset:end], end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise file_error(self.path, f"{what}: image name is not UTF-8 text") from None

    def records(self):
        """``"record i of the n it declares"`` for each record the file declares."""
        (count,) = self.take("Q", "the record count")
        for index in range(count):
            yield f"record {index + 1} of the {count} it declares"


def _finite(values: tuple, path: Path, where: str) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise file_error(path, f"{where}non-finite value (NaN or inf)")
    return list(values)


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    """The cameras of a ``cameras.bin`` (see the module docstring)."""
    reader, cameras = _Bytes(path), {}
    for record in reader.records():
        camera_id, model_id, width, height = reader.take("IiQQ", record)
        if model_id not in CAMERA_MODELS:
            raise file_error(path, f"{record}: unknown camera model id {model_id}")
        model, count = CAMERA_MODELS[model_id]
        params = _finite(reader.take("d" * count, record), path, f"{record}: ")
        if camera_id in cameras:
            raise file_error(path, f"{record}: camera {camera_id} is defined twice")
        cameras[camera_id] = _camera(path, None, camera_id, model, width, height, params,
                                     f"{record}: ")
    return cameras


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    """The images of an ``images.bin`` (see the module docstring)."""
    reader, images = _Bytes(path), {}
    for record in reader.records():
        image_id, *numbers, camera_id = reader.take("I7dI", record)
        numbers = _finite(tuple(numbers), path, f"{record}: ")
        name = reader.name(record)
        (points,) = reader.take("Q", record)
        reader.skip(24 * points, f"{record} ({points} 2-D points)")
        if image_id in images:
            raise file_error(path, f"{record}: image {image_id} is defined twice")
        q = _unit_quaternion(numbers[:4], path, None, f"{record}: ")
        images[image_id] = ColmapImage(image_id, q, tuple(numbers[4:]), camera_id, name,
                                       f"{path}: {record}: image {image_id} ({name})")
    return images


def check_points_binary(path: Path) -> None:
    """Walk a ``points3D.bin``: :class:`AcegError` if its counts do not fit the file."""
    reader = _Bytes(path)
    for record in reader.records():
        reader.skip(43, record)
        (track,) = reader.take("Q", record)
        reader.skip(8 * track, f"{record} (track of {track})")


def check_cameras_of(images: dict[int, ColmapImage], cameras: dict[int, ColmapCamera],
                     cameras_file: Path) -> None:
    """:class:`AcegError` naming the first image whose camera is not among ``cameras``."""
    for image in images.values():
        if image.camera_id not in cameras:
            raise AcegError(f"{image.where}: camera {image.camera_id} is not in {cameras_file}")
