"""Scene readers. Each format lives in its own module exposing

* ``NAME``: the format's name for ``--format``,
* ``detect(path: Path) -> bool``: whether ``path`` looks like this format,
* ``read(path: Path) -> Scene``: the scene, validated (raises :class:`AcegError`).

The standard relocalization data sets (7-Scenes, 12-Scenes, Cambridge Landmarks,
Indoor-6) also expose ``read_split(path) -> (mapping, query)``, their official split
(:func:`read_official_split`, :func:`split_scenes_below`).

:func:`read_scene` auto-detects the format (first module whose ``detect`` says yes, in
the order of :data:`READERS`) unless one is named.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from aceg.data.scene import Scene
from aceg.errors import AcegError

#: Formats, in detection order (most specific first).
READERS = ("ace", "nerfstudio", "7scenes", "12scenes", "cambridge", "indoor6", "colmap",
           "strecha", "middlebury")
#: Module of each format whose name is not a Python identifier.
MODULES = {"7scenes": "seven_scenes", "12scenes": "twelve_scenes"}
#: Formats whose files record no focal length, so that one can be given (7-Scenes).
FOCAL_OPTION_FORMATS = ("7scenes",)


def _module(name: str):
    return importlib.import_module(f"aceg.data.readers.{MODULES.get(name, name)}")


def format_names() -> list[str]:
    return list(READERS)


#: One-line description of each format, for ``--help`` texts (``aceg convert --help``).
FORMAT_SUMMARIES = {
    "ace": "ACE / DSAC* folder: rgb/, poses/ (camera-to-world), calibration/, optional depth/",
    "nerfstudio": "nerfstudio / instant-ngp transforms.json (OpenGL camera axes)",
    "colmap": "COLMAP sparse model (.bin or .txt; also sparse/0) with images/ beside it",
    "strecha": "Strecha benchmark folder: images/ and gt_dense_cameras/*.camera",
    "middlebury": "Middlebury multi-view folder with a *_par.txt camera file",
    "7scenes": "7-Scenes scene (TrainSplit.txt, TestSplit.txt, seq-XX/frame-*.color.png, "
               ".pose.txt) or one split file",
    "12scenes": "12-Scenes scene (data/frame-*.color.jpg, .pose.txt, .depth.png; info.txt, "
                "split.txt)",
    "cambridge": "Cambridge Landmarks scene (dataset_train.txt, dataset_test.txt, "
                 "reconstruction.nvm) or one list file",
    "indoor6": "Indoor-6 scene (images/, <scene>_train.txt, _val.txt, _test.txt) or one list",
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


def split_formats() -> list[str]:
    """Formats with an official mapping / query split (their modules have ``read_split``)."""
    return [name for name in READERS if hasattr(_module(name), "read_split")]


def read_official_split(path: str | Path, fmt: str | None = None,
                        focal: float | None = None) -> tuple[Scene, Scene]:
    """The official ``(mapping, query)`` scenes of a standard data set's scene at ``path``
    (format auto-detected when ``fmt`` is None). ``focal``: the focal length in pixels for
    formats whose files record none (:data:`FOCAL_OPTION_FORMATS`), ignored by the others;
    None keeps the reader's default."""
    path = Path(path)
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in READERS:
        raise AcegError(f"unknown format {fmt!r}; known: {', '.join(READERS)}")
    module = _module(fmt)
    if not hasattr(module, "read_split"):
        raise AcegError(f"{path}: a {fmt} scene has no official mapping / query split (formats "
                        f"that have one: {', '.join(split_formats())})")
    if focal is not None and fmt in FOCAL_OPTION_FORMATS:
        return module.read_split(path, focal=focal)
    return module.read_split(path)


def split_scenes_below(path: str | Path, depth: int = 3) -> list[tuple[Path, str]]:
    """``(scene folder, format)`` of every scene with an official split at ``path`` or in
    its sub-folders down to ``depth`` levels (a data set's root, e.g. ``7scenes/`` holding
    ``chess/`` ..., or 12-Scenes' ``apt1/kitchen``), sorted by path; a scene's own
    sub-folders are not searched."""
    path = Path(path)
    if not path.exists():
        raise AcegError(f"{path}: no such file or directory")
    formats = split_formats()
    for name in formats:
        if _module(name).detect(path):
            return [(path.parent if path.is_file() else path, name)]
    if depth <= 0 or not path.is_dir():
        return []
    found = []
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += split_scenes_below(child, depth - 1)
    return found
