"""Scene readers. Each format lives in its own module exposing

* ``NAME``: the format's name for ``--format``,
* ``detect(path: Path) -> bool``: whether ``path`` looks like this format,
* ``read(path: Path) -> Scene``: the scene, validated (raises :class:`AcegError`).

:func:`read_scene` auto-detects the format (first module whose ``detect`` says yes, in
the order of :data:`READERS`) unless one is named.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from aceg.data.scene import Scene
from aceg.errors import AcegError

#: Reader modules, in detection order (most specific first).
READERS = ("ace", "nerfstudio", "colmap", "strecha", "middlebury")


def _module(name: str):
    return importlib.import_module(f"aceg.data.readers.{name}")


def format_names() -> list[str]:
    return list(READERS)


#: One-line description of each format, for ``--help`` texts (``aceg convert --help``).
FORMAT_SUMMARIES = {
    "ace": "ACE / DSAC* folder: rgb/, poses/ (camera-to-world), calibration/, optional depth/",
    "nerfstudio": "nerfstudio / instant-ngp transforms.json (OpenGL camera axes)",
    "colmap": "COLMAP sparse model (.bin or .txt; also sparse/0) with images/ beside it",
    "strecha": "Strecha benchmark folder: images/ and gt_dense_cameras/*.camera",
    "middlebury": "Middlebury multi-view folder with a *_par.txt camera file",
}


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        raise AcegError(f"{path}: no such file or directory")
    for name in READERS:
        if _module(name).detect(path):
            return name
    raise AcegError(
        f"{path}: cannot tell the scene format; expected one of {', '.join(READERS)} "
        "(pass --format to choose)"
    )


def read_scene(path: str | Path, fmt: str | None = None) -> Scene:
    """Read a scene from ``path`` in format ``fmt`` (auto-detected when None)."""
    path = Path(path)
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in READERS:
        raise AcegError(f"unknown format {fmt!r}; known: {', '.join(READERS)}")
    if not path.exists():
        raise AcegError(f"{path}: no such file or directory")
    scene = _module(fmt).read(path)
    if not scene.frames:
        raise AcegError(f"{path}: no frames found ({fmt} format)")
    return scene
