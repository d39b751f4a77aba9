"""Image sizes read from file headers, without decoding: the loader's guard against
decompression bombs (:func:`aceg.data.images.load_image`) and the readers' size checks
(:func:`aceg.data.readers._common.image_size`). Imports nothing from aceg, so both can
use it."""

from __future__ import annotations

import struct
from pathlib import Path


def png_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG file's first 24 bytes ``head`` declare, or None (not a PNG)."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    return None


#: JPEG start-of-frame markers (they carry the image size); C4, C8 and CC are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(path: Path) -> tuple[int, int] | None:
    """(width, height) the first start-of-frame marker of the JPEG file at ``path``
    declares, or None (not a JPEG, or no readable frame header)."""
    with path.open("rb") as handle:
        if handle.read(2) != b"\xff\xd8":
            return None
        for _ in range(10_000):
            if handle.read(1) != b"\xff":
                return None  # a marker must start here
            marker = handle.read(1)
            while marker == b"\xff":  # fill bytes
                marker = handle.read(1)
            if not marker:
                return None
            code = marker[0]
            if code in (0x01, *range(0xD0, 0xD8)):
                continue  # stand-alone markers carry no length
            length_bytes = handle.read(2)
            if len(length_bytes) != 2:
                return None
            (length,) = struct.unpack(">H", length_bytes)
            if code in _JPEG_SOF:
                data = handle.read(5)
                if len(data) != 5:
                    return None
                height, width = struct.unpack(">HH", data[1:5])
                return (width, height) if width > 0 and height > 0 else None
            if code == 0xD9 or length < 2:
                return None
            handle.seek(length - 2, 1)
    return None
