"""Scene writers.

:func:`write_ace_scene` writes a :class:`~aceg.data.scene.Scene` in the ACE / DSAC* layout
read by :mod:`aceg.data.readers.ace`:

* ``rgb/<stem><ext>``: the image (copied byte for byte, or linked with
  ``copy_images=False``);
* ``poses/<stem>.txt``: 4x4 camera-to-world pose (OpenCV camera axes, metres);
* ``calibration/<stem>.txt``: the **full 3x3 K** (pixels, pixel centres at integer
  coordinates as in :mod:`aceg.data.camera`), so ``fx != fy`` and the principal point
  survive (the focal-length-only form would lose them);
* ``depth/<stem><ext>``: the depth map, when the frame has one.

``<stem>`` is the frame name without its extension, with ``/`` replaced by ``-`` (names
must stay unique). Numbers are written as the shortest text that reads back to the same
float, so a round trip is exact.

Distorted frames are **undistorted on writing** (:func:`aceg.data.images.prepare_image`:
same K and size, distortion removed): the image as a lossless PNG ``rgb/<stem>.png``, its
depth map (if any) resampled nearest-neighbour into a 16-bit millimetre PNG, and the
pinhole K. ``copy_images=False`` therefore links only the frames without distortion.

The scene is written into a temporary folder beside ``out_dir`` and renamed into place, so
an interrupted write leaves no half-written scene.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aceg.data.images import load_depth, load_image, prepare_image
from aceg.data.readers.ace import CALIBRATION_FOLDER, DEPTH_FOLDER, POSES_FOLDER, RGB_FOLDER
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError
from aceg.io import folder_mode, output_lock, remove_stale_temps, temp_path

#: Largest depth (metres) that fits a 16-bit millimetre PNG.
MAX_PNG_DEPTH_M = 65.535


@dataclass
class WriteReport:
    """What :func:`write_ace_scene` did."""

    out_dir: Path
    frames: int
    undistorted: int
    with_depth: int


def _matrix_text(matrix: np.ndarray) -> str:
    return "".join(" ".join(repr(float(value)) for value in row) + "\n" for row in matrix)


def _output_stems(scene: Scene) -> list[str]:
    stems = []
    seen: dict[str, str] = {}
    for frame in scene.frames:
        stem = frame.name.rsplit(".", 1)[0] if "." in Path(frame.name).name else frame.name
        stem = stem.replace("\\", "/").strip("/").replace("/", "-")
        if stem in seen:
            raise AcegError(
                f"frames {seen[stem]!r} and {frame.name!r} would both be written as {stem!r}"
            )
        seen[stem] = frame.name
        stems.append(stem)
    return stems


def _is_within(inner: Path, outer: Path) -> bool:
    try:
        inner.resolve().relative_to(outer.resolve())
    except ValueError:
        return False
    return True


def _check_target(scene: Scene, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise AcegError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise AcegError(
            f"{out_dir}: folder exists and is not empty (use --overwrite to replace it)"
        )
    sources = scene.files() + ([scene.root] if scene.root is not None else [])
    for source in sources:
        if _is_within(source, out_dir):
            raise AcegError(f"{out_dir}: holds the source scene ({source}); choose another output")
    for folder in {path.parent for path in scene.files()}:
        if _is_within(out_dir, folder):
            raise AcegError(f"{out_dir}: lies inside {folder}, which holds files of the source "
                            "scene; choose another output")


def _write_undistorted(frame: Frame, stem: str, tmp: Path) -> str:
    prepared = prepare_image(
        frame.image_path, frame.intrinsics, short_side=None, depth_path=frame.depth_path
    )
    image_name = f"{stem}.png"
    bgr = cv2.cvtColor(prepared.rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(tmp / RGB_FOLDER / image_name), bgr):
        raise AcegError(f"{tmp / RGB_FOLDER / image_name}: cannot write image")
    if prepared.depth is not None:
        millimetres = np.clip(np.round(prepared.depth * 1000.0), 0, 65535).astype(np.uint16)
        millimetres[prepared.depth > MAX_PNG_DEPTH_M] = 0
        cv2.imwrite(str(tmp / DEPTH_FOLDER / f"{stem}.png"), millimetres)
    return image_name


def _place_image(source: Path, target: Path, copy_images: bool, depth: bool = False) -> None:
    if not source.is_file():
        raise AcegError(f"{source}: file not found")
    (load_depth if depth else load_image)(source)  # a corrupt file stops it, named
    if copy_images:
        shutil.copyfile(source, target)
    else:
        os.symlink(source.resolve(), target)


def write_ace_scene(
    scene: Scene, out_dir: str | Path, copy_images: bool = True, overwrite: bool = False
) -> WriteReport:
    """Write ``scene`` to ``out_dir`` in the ACE / DSAC* layout (see the module docstring).

    Args:
        scene: frames with poses (camera-to-world, OpenCV axes, metres).
        out_dir: output folder; created, or replaced when ``overwrite``.
        copy_images: copy image and depth files; ``False`` makes symbolic links instead
            (undistorted images are always written).
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        A :class:`WriteReport` (frame, undistorted-frame and depth counts).
    """
    out_dir = Path(out_dir)
    if not scene.frames:
        raise AcegError(f"scene {scene.name!r} has no frames to write")
    for frame in scene.frames:
        if frame.cam_to_world is None:
            raise AcegError(
                f"{frame.image_path}: frame {frame.name!r} has no pose; the ACE "
                "layout needs one for every frame"
            )
    _check_target(scene, out_dir, overwrite)
    stems = _output_stems(scene)
    with output_lock(out_dir):  # one writer at a time; temporaries of dead writers go
        remove_stale_temps(out_dir)
        remove_stale_temps(_old_name(out_dir))
        undistorted, with_depth = _write_folder(scene, stems, out_dir, copy_images)
    return WriteReport(out_dir, len(scene.frames), undistorted, with_depth)


def _old_name(out_dir: Path) -> Path:
    """Where a replaced output waits until the new one is in place (its temporary path)."""
    return out_dir.with_name(f"{out_dir.name}.old")


def _write_folder(scene: Scene, stems: list[str], out_dir: Path,
                  copy_images: bool) -> tuple[int, int]:
    """Write the ACE layout into a temporary folder beside ``out_dir``
    (:func:`aceg.io.temp_path`), then put it in place; ``(undistorted, with_depth)``
    frame counts."""
    tmp = temp_path(out_dir)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    os.chmod(tmp, folder_mode())
    undistorted = with_depth = 0
    try:
        for folder in (RGB_FOLDER, POSES_FOLDER, CALIBRATION_FOLDER):
            (tmp / folder).mkdir()
        if any(f.depth_path is not None for f in scene.frames):
            (tmp / DEPTH_FOLDER).mkdir()
        for frame, stem in zip(scene.frames, stems, strict=True):
            if frame.intrinsics.has_distortion:
                _write_undistorted(frame, stem, tmp)
                undistorted += 1
            else:
                suffix = Path(frame.name).suffix or frame.image_path.suffix
                _place_image(frame.image_path, tmp / RGB_FOLDER / f"{stem}{suffix}", copy_images)
                if frame.depth_path is not None:
                    target = tmp / DEPTH_FOLDER / f"{stem}{frame.depth_path.suffix}"
                    _place_image(frame.depth_path, target, copy_images, depth=True)
            with_depth += frame.depth_path is not None
            (tmp / POSES_FOLDER / f"{stem}.txt").write_text(_matrix_text(frame.cam_to_world))
            K = frame.intrinsics.without_distortion().K
            (tmp / CALIBRATION_FOLDER / f"{stem}.txt").write_text(_matrix_text(K))
        if out_dir.exists():
            old = temp_path(_old_name(out_dir))
            if old.exists():
                shutil.rmtree(old)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return undistorted, with_depth
