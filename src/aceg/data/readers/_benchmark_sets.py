"""Helpers shared by the readers of the standard relocalization data sets (7-Scenes,
12-Scenes, Cambridge Landmarks, Indoor-6): pose files that mark lost frames with
non-finite numbers, list files and the scene folder they stand in, notes about skipped
frames, and the official mapping / query split as two scenes.

Every error names the file and, for text content, the line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from aceg.data.camera import check_pose, invert_pose
from aceg.data.readers._common import make_scene, read_text
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error

#: Fragments of the text that C runtimes print for infinities and NaN (``inf``, ``nan``,
#: MSVC's ``-1.#INF00``, ``-1.#IND00``, ``1.#QNAN0``): a token holding one of them marks a
#: frame whose pose was lost, not a typing error.
NON_FINITE_MARKS = ("INF", "IND", "NAN")

#: Names of the two halves of an official split.
MAPPING, QUERY = "mapping", "query"


def text_rows(path: Path) -> list[tuple[int, list[str]]]:
    """``(line_number, tokens)`` of every non-empty line (1-based). Unlike
    :func:`aceg.data.readers._common.numbered_lines`, ``#`` starts no comment: MSVC writes
    infinities as ``-1.#INF00``."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        tokens = line.split()
        if tokens:
            rows.append((number, tokens))
    return rows


def _number(token: str, path: Path, line: int) -> float:
    """``float(token)``; non-finite marks give NaN; anything else unparsable is an error."""
    try:
        return float(token)
    except ValueError:
        if any(mark in token.upper() for mark in NON_FINITE_MARKS):
            return math.nan
        raise file_error(path, f"cannot parse number {token[:40]!r}", line) from None


def read_pose_file(path: Path, *, world_to_camera: bool = False) -> np.ndarray | None:
    """Camera-to-world 4x4 pose (float64, the file's axes and units) from a text file of a
    4x4 matrix, or of its top 3x4 rows, written row by row; ``world_to_camera``: the file
    holds the inverse, which is inverted here. None when any entry is non-finite (``inf``,
    ``nan``, ``-1.#INF00``): the data sets mark frames whose tracking was lost that way.
    Unparsable numbers, a wrong count or a matrix that is not a rigid transform raise
    :class:`AcegError` naming the file (and line)."""
    if not path.is_file():
        raise file_error(path, "pose file not found")
    rows = text_rows(path)
    values = [_number(token, path, line) for line, tokens in rows for token in tokens]
    if len(values) == 12:
        values += [0.0, 0.0, 0.0, 1.0]
    if len(values) != 16:
        raise file_error(path, f"expected a 4x4 pose (16 numbers) or its top 3 rows (12), "
                               f"found {len(values)} numbers", rows[0][0] if rows else None)
    matrix = np.array(values, dtype=np.float64).reshape(4, 4)
    if not np.all(np.isfinite(matrix)):
        return None
    pose = check_pose(matrix, str(path))
    return check_pose(invert_pose(pose), str(path)) if world_to_camera else pose


def read_pose_or_skip(path: Path, skipped: list[Path], *,
                      world_to_camera: bool = False) -> np.ndarray | None:
    """:func:`read_pose_file` of ``path``; when the file marks the frame as lost (the pose
    is None), ``path`` is appended to ``skipped`` so that :func:`skipped_note` counts it."""
    pose = read_pose_file(path, world_to_camera=world_to_camera)
    if pose is None:
        skipped.append(path)
    return pose


def list_lines(path: Path) -> list[tuple[int, str]]:
    """``(line_number, text)`` of every non-empty line of a list file, stripped."""
    return [(number, " ".join(tokens)) for number, tokens in text_rows(path)]


def holds_list_files(path: Path, list_files: Mapping[str, str]) -> bool:
    """Whether ``path`` is one of the list files named by ``list_files`` (file names by
    half of the split), or a folder holding all of them."""
    if path.is_file():
        return path.name in list_files.values()
    return path.is_dir() and all((path / name).is_file() for name in list_files.values())


def scene_root(path: Path) -> Path:
    """The scene folder of ``path``: the folder itself, or the folder of a list file."""
    path = Path(path)
    return path.parent if path.is_file() else path


def checked_scene_root(path: Path, detect: Callable[[Path], bool], not_a_scene: str) -> Path:
    """:func:`scene_root` of ``path`` once the reader's ``detect`` accepts ``path``;
    otherwise :class:`AcegError` ``"<path>: <not_a_scene>"``."""
    if not detect(path):
        raise AcegError(f"{path}: {not_a_scene}")
    return scene_root(path)


def read_scene_name(path: Path, root: Path, half: str) -> str:
    """Name of the scene read from ``path``: the name of its scene folder ``root``, followed
    by ``-<half>`` when ``path`` is the list file of one half rather than the folder."""
    name = root.resolve().name
    return f"{name}-{half}" if path.is_file() else name


def skipped_note(skipped: Sequence[Path], total: int, why: str) -> list[str]:
    """A one-line note about frames left out (none when ``skipped`` is empty)."""
    if not skipped:
        return []
    return [f"{len(skipped)} of {total} frames skipped: {why} (first: {skipped[0]})"]


def split_scenes(base: str, frames: dict[str, list[Frame]], root: Path, fmt: str,
                 notes: list[str], sources: list[Path]) -> tuple[Scene, Scene]:
    """``(mapping, query)`` scenes named ``<base>-mapping`` and ``<base>-query`` from the
    frames of each half; an empty half is an error naming ``root`` (and the note saying
    why frames were left out, if any)."""
    for half in (MAPPING, QUERY):
        if not frames.get(half):
            skipped = [note for note in notes if "skipped" in note]
            why = f" ({skipped[0]})" if skipped else ""
            raise AcegError(f"{root}: the official {half} split holds no usable frame{why}")
    return (make_scene(f"{base}-{MAPPING}", frames[MAPPING], root, fmt, notes, sources),
            make_scene(f"{base}-{QUERY}", frames[QUERY], root, fmt, notes, sources))


def whole_scene(base: str, frames: dict[str, list[Frame]], root: Path, fmt: str,
                notes: list[str], sources: list[Path]) -> Scene:
    """One scene of the frames of every half (sorted by name)."""
    every = [frame for half in frames.values() for frame in half]
    return make_scene(base, every, root, fmt, notes, sources)
