"""Helpers shared by the readers: number parsing with line numbers, cheap image sizes,
frame-name keys and scene assembly.

Every helper raises :class:`aceg.errors.AcegError` whose message names the file (and the
line, for text files).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from aceg.data.image_headers import jpeg_size, png_size
from aceg.data.images import image_size as decoded_image_size
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error

#: File suffixes (lower case) that the folder-based readers treat as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")

#: Tags some layouts put before the extension (``seq-01-frame-000000.color.png``);
#: :func:`frame_key` drops them so that ``rgb/``, ``poses/`` ... entries match.
KNOWN_NAME_TAGS = (".color", ".rgb", ".pose", ".calibration", ".depth", ".camera")


def read_text(path: Path) -> str:
    """Whole text file; missing or undecodable files give a one-line error."""
    if not path.is_file():
        raise file_error(path, "file not found")
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark is dropped
    except UnicodeDecodeError:
        raise file_error(path, "not UTF-8 text (a binary file, or text in another encoding: "
                               "save it as UTF-8)") from None
    except OSError as exc:
        raise file_error(path, f"cannot read file ({exc.strerror})") from None


def numbered_lines(path: Path) -> list[tuple[int, list[str]]]:
    """``(line_number, tokens)`` of each non-empty, non-comment (``#``) line (1-based)."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            rows.append((number, text.split()))
    return rows


def parse_float(token: str, path: Path, line: int | None) -> float:
    """``float(token)``, or an error naming file and line. Non-finite values are refused."""
    try:
        value = float(token)
    except ValueError:
        raise file_error(path, f"cannot parse number {token!r}", line) from None
    if not math.isfinite(value):
        raise file_error(path, f"non-finite value {token!r}", line)
    return value


def parse_floats(tokens: Iterable[str], path: Path, line: int | None) -> list[float]:
    return [parse_float(token, path, line) for token in tokens]


def parse_int(token: str, path: Path, line: int | None, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise file_error(path, f"{what} must be an integer, got {token!r}", line) from None


def frame_key(file_name: str) -> str:
    """Name shared by the files of one frame across folders: the file name without its
    extension and without a known tag (``0004.jpg.camera`` -> ``0004``,
    ``seq-01-frame-000000.pose.txt`` -> ``seq-01-frame-000000``)."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    changed = True
    while changed:
        changed = False
        for tag in (*KNOWN_NAME_TAGS, *IMAGE_SUFFIXES):
            if stem.lower().endswith(tag) and len(stem) > len(tag):
                stem = stem[: -len(tag)]
                changed = True
    return stem


def list_files(folder: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """Sorted regular, non-hidden files of ``folder`` (filtered by lower-case suffix)."""
    if not folder.is_dir():
        raise file_error(folder, "folder not found")
    files = [
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and (suffixes is None or p.suffix.lower() in suffixes)
    ]
    return sorted(files)


def match_by_key(
    reference: list[Path], reference_folder: Path, other: list[Path], other_folder: Path
) -> list[Path]:
    """Files of ``other`` in the order of ``reference``, matched by :func:`frame_key`.

    Raises when the counts differ (naming both folders and counts) or a reference file
    has no partner.
    """
    if len(reference) != len(other):
        raise AcegError(
            f"{other_folder}: holds {len(other)} files but {reference_folder} holds "
            f"{len(reference)}; every frame needs one file in each folder"
        )
    by_key: dict[str, Path] = {}
    for path in other:
        key = frame_key(path.name)
        if key in by_key:
            raise file_error(path, f"same frame name {key!r} as {by_key[key].name}")
        by_key[key] = path
    matched = []
    for path in reference:
        key = frame_key(path.name)
        if key not in by_key:
            raise file_error(path, f"no matching file for frame {key!r} in {other_folder}")
        matched.append(by_key[key])
    return matched


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file in pixels, as stored on disk.

    PNG and JPEG sizes come from the file header (no decoding); other formats, and files
    whose header cannot be parsed, are decoded, so a corrupt image raises an error naming
    it. EXIF orientation is ignored, as by :func:`aceg.data.images.load_image`.
    """
    if not path.is_file():
        raise file_error(path, "image file not found")
    try:
        with path.open("rb") as handle:
            head = handle.read(32)
        size = png_size(head)
        if size is None and head[:2] == b"\xff\xd8":
            size = jpeg_size(path)
    except OSError as exc:
        raise file_error(path, f"cannot read image file ({exc.strerror})") from None
    if size is not None and size[0] > 0 and size[1] > 0:
        return size
    return decoded_image_size(path)


def check_image_size(path: Path, width: int, height: int, stated_in: str) -> None:
    """Raise unless the image at ``path`` is ``width`` x ``height`` as ``stated_in`` says."""
    actual = image_size(path)
    if actual != (width, height):
        raise AcegError(
            f"{stated_in}: states image size {width}x{height} but {path} is {actual[0]}x{actual[1]}"
        )


def make_scene(
    name: str, frames: list[Frame], root: Path, source_format: str, notes: list[str] | None = None,
    sources: list[Path] | None = None,
) -> Scene:
    """Scene with frames sorted by name; duplicate names are an error. ``sources``: the
    files other than images and depth maps that the reader read (see :attr:`Scene.sources`)."""
    frames = sorted(frames, key=lambda f: f.name)
    for previous, current in zip(frames, frames[1:], strict=False):
        if previous.name == current.name:
            raise AcegError(f"{root}: two frames are named {current.name!r}")
    return Scene(name, frames, root, source_format, list(notes or []), list(sources or []))


def scene_name(root: Path) -> str:
    """Scene name from its folder; split folders (train/test) keep the scene's name."""
    root = root.resolve()
    if root.name.lower() in ("train", "test", "val", "mapping", "query") and root.parent.name:
        return f"{root.parent.name}-{root.name}"
    return root.name
