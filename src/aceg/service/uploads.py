"""Checks and decoding of an uploaded query image and its intrinsics.

Everything here runs before any model code sees the request. Each problem is a
:class:`RequestRejected` carrying an HTTP status (4xx), a short machine-readable code and
a one-line message; the app turns it into a JSON error body.

Order of the checks on an upload (cheapest first, so a decompression bomb is refused
before it is decoded):

1. declared content type is ``image/jpeg`` or ``image/png`` (415 otherwise);
2. size in bytes, at most the configured maximum (413; the request body as a whole is
   also capped while it streams in, see :mod:`aceg.service.app`);
3. magic bytes are those of a PNG or JPEG file and agree with the declared type (415);
4. the width and height stated in the file header (PNG ``IHDR``, JPEG start-of-frame) are
   readable (400) and their product is at most the pixel limit (413); the app then checks
   them against the image limits (:func:`aceg.data.images.check_image_shape`);
5. the image decodes (400), with the same conversions as
   :func:`aceg.data.images.load_image` (16-bit scaled to 8-bit in integer arithmetic, grey
   and RGBA to RGB, EXIF orientation ignored), so the service and ``aceg localize`` see
   the same pixels.

Intrinsics follow :mod:`aceg.data.camera`: pixels of the uploaded image as stored, pixel
centres at integer coordinates, OpenCV distortion order ``(k1, k2, p1, p2[, k3])``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from aceg.data.camera import Intrinsics
from aceg.data.images import decoded_to_rgb
from aceg.errors import AcegError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

#: Accepted declared content types and the file kind each one announces.
CONTENT_TYPES = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/pjpeg": "jpeg",
                 "image/png": "png"}

#: JPEG start-of-frame markers (they carry the image size); C4, C8 and CC are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class RequestRejected(Exception):
    """A request refused with an HTTP status (4xx for bad input, 503 when busy, 500 for a
    server-side fault), a short code and a one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedImage:
    """An uploaded image: RGB uint8 (H, W, 3) plus what it was."""

    rgb: np.ndarray
    kind: str  # "png" or "jpeg"

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def sniff_kind(data: bytes) -> str | None:
    """"png", "jpeg" or None from the first bytes of a file."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    return None


def png_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None if the header is not there."""
    if len(data) < 24 or not data.startswith(PNG_MAGIC) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def jpeg_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's first start-of-frame segment, or None if not found."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, n = 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            return None
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return None
        code = data[pos]
        pos += 1
        if code == 0x01 or 0xD0 <= code <= 0xD7:
            continue  # stand-alone markers carry no length
        if code == 0xD9 or pos + 2 > n:
            return None
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2:
            return None
        if code in _JPEG_SOF:
            if pos + 7 > n:
                return None
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            return width, height
        pos += length
    return None


def check_upload(data: bytes, content_type: str | None, filename: str, max_bytes: int,
                 max_pixels: int) -> tuple[str, tuple[int, int]]:
    """Checks 1-4 of the module docstring; returns the file kind ("png" or "jpeg") and the
    (width, height) its header declares."""
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared not in CONTENT_TYPES:
        raise RequestRejected(415, "unsupported_media_type",
                              f"{filename}: content type {declared or 'missing'!r} is not accepted;"
                              " send image/jpeg or image/png")
    if len(data) == 0:
        raise RequestRejected(400, "empty_image", f"{filename}: the uploaded image is empty")
    if len(data) > max_bytes:
        raise RequestRejected(413, "upload_too_large",
                              f"{filename}: image is {len(data)} bytes; the limit is {max_bytes}")
    kind = sniff_kind(data)
    if kind is None:
        raise RequestRejected(415, "not_an_image",
                              f"{filename}: not a PNG or JPEG file (unrecognised first bytes)")
    if kind != CONTENT_TYPES[declared]:
        raise RequestRejected(415, "content_type_mismatch",
                              f"{filename}: declared {declared} but the file is a {kind.upper()}")
    size = png_header_size(data) if kind == "png" else jpeg_header_size(data)
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise RequestRejected(400, "corrupt_image",
                              f"{filename}: cannot read the image size from its {kind.upper()} "
                              "header (truncated or corrupt file)")
    if size[0] * size[1] > max_pixels:
        raise RequestRejected(413, "image_too_large",
                              f"{filename}: image is {size[0]}x{size[1]} = {size[0] * size[1]} "
                              f"pixels; the limit is {max_pixels}")
    return kind, size


def decode_image(data: bytes, kind: str, filename: str) -> DecodedImage:
    """Step 5 of the module docstring: decode to RGB uint8 like ``load_image`` does."""
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise RequestRejected(400, "corrupt_image",
                              f"{filename}: cannot decode the {kind.upper()} image (corrupt or "
                              "truncated)")
    try:
        rgb = decoded_to_rgb(image)
    except ValueError as exc:
        raise RequestRejected(400, "corrupt_image", f"{filename}: {exc}") from None
    return DecodedImage(np.ascontiguousarray(rgb), kind)


def make_intrinsics(fx: float, fy: float, cx: float, cy: float,
                    distortion: dict[str, float | None], width: int, height: int) -> Intrinsics:
    """Validated :class:`Intrinsics` of a ``width`` x ``height`` image (400 if unusable).

    ``distortion`` maps ``k1, k2, p1, p2, k3`` to values or None; missing terms are 0 and
    ``k3`` is only kept when given.
    """
    values = {"fx": fx, "fy": fy, "cx": cx, "cy": cy}
    values.update({k: v for k, v in distortion.items() if v is not None})
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise RequestRejected(400, "invalid_intrinsics",
                              f"intrinsics: non-finite value for {', '.join(bad)}")
    dist: tuple[float, ...] = ()
    if any(distortion.get(k) is not None for k in ("k1", "k2", "p1", "p2", "k3")):
        order = ("k1", "k2", "p1", "p2", "k3") if distortion.get("k3") is not None else \
            ("k1", "k2", "p1", "p2")
        dist = tuple(float(distortion.get(k) or 0.0) for k in order)
    intrinsics = Intrinsics(float(fx), float(fy), float(cx), float(cy), dist)
    try:
        intrinsics.check("intrinsics", width, height)
    except AcegError as exc:
        raise RequestRejected(400, "invalid_intrinsics", str(exc)) from None
    return intrinsics
