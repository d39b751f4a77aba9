"""Pose results files, compatible with ACE's.

One line per localized query image::

    name qw qx qy qz tx ty tz [rot_err_deg tr_err_m inliers [confident centre_std_m]]

where ``(qw, qx, qy, qz)`` and ``(tx, ty, tz)`` are the **world-to-camera** rotation
(unit quaternion, Hamilton, w first) and translation, OpenCV camera axes, metres (as ACE
writes them). The three trailing columns are optional: rotation error in degrees and
translation error in metres against ground truth (``nan`` when there is none) and the
RANSAC inlier count; aceg adds the localizer's confident flag (1 or 0) and the standard
deviation of the camera centre predicted from the fit (metres; ``nan`` when unknown).
Files of 8, 11 or 13 columns are read; a file without the flag reads as "unknown".
Images that could not be localized are written as comment lines
``# not localized: name [reason]``; lines starting with ``#`` are ignored on reading,
and a query with no line counts as not localized in evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aceg.data.camera import (
    check_rotation,
    invert_pose,
    make_pose,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from aceg.data.readers._common import read_text
from aceg.data.scene import Scene
from aceg.errors import AcegError, file_error
from aceg.evaluation.metrics import AccuracyTable, accuracy_table, pose_errors
from aceg.io import atomic_write_text


@dataclass
class PoseResult:
    """The outcome for one query image. ``cam_to_world`` is None when not localized."""

    name: str
    cam_to_world: np.ndarray | None
    inliers: int = 0
    rot_err_deg: float = math.nan
    trans_err_m: float = math.nan
    reason: str = ""
    #: The localizer's confident flag; None when the file did not record it.
    confident: bool | None = None
    #: Standard deviation of the camera centre predicted from the fit, metres (nan: unknown).
    centre_std_m: float = math.nan

    @property
    def localized(self) -> bool:
        return self.cam_to_world is not None


def format_result_line(result: PoseResult) -> str:
    if result.cam_to_world is None:
        return f"# not localized: {result.name} {result.reason}".rstrip()
    world_to_cam = invert_pose(result.cam_to_world)
    q = rotation_to_quaternion(world_to_cam[:3, :3])
    t = world_to_cam[:3, 3]
    numbers = " ".join(f"{v:.9g}" for v in (*q, *t))
    extras = f"{result.rot_err_deg:.6g} {result.trans_err_m:.6g} {int(result.inliers)}"
    if result.confident is not None:
        extras += f" {int(result.confident)} {result.centre_std_m:.6g}"
    return f"{result.name} {numbers} {extras}"


def write_results(path: str | Path, results: list[PoseResult]) -> None:
    """Write a results file atomically (see module docstring for the format)."""
    for r in results:
        if any(c.isspace() for c in r.name):
            raise AcegError(f"image name {r.name!r} contains white space; cannot write it")
    text = "".join(format_result_line(r) + "\n" for r in results)
    atomic_write_text(path, text)


def read_results(path: str | Path) -> list[PoseResult]:
    """Read a results file; malformed lines raise :class:`AcegError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "results file not found")
    results = []
    seen: set[str] = set()
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (8, 11, 13):
            raise file_error(path, f"expected 8, 11 or 13 columns, found {len(parts)}", number)
        name = parts[0]
        try:
            values = [float(v) for v in parts[1:]]
        except ValueError:
            raise file_error(path, "cannot parse a number", number) from None
        if not all(math.isfinite(v) for v in values[:7]):
            raise file_error(path, "pose contains a non-finite value", number)
        q = np.array(values[:4])
        if abs(np.linalg.norm(q) - 1.0) > 1e-3:
            raise file_error(
                path, f"quaternion is not unit length (|q| = {np.linalg.norm(q):.4g})", number
            )
        R = quaternion_to_rotation(q)
        check_rotation(R, f"{path}:{number}")
        if name in seen:
            raise file_error(path, f"image {name} appears twice", number)
        seen.add(name)
        cam_to_world = invert_pose(make_pose(R, values[4:7]))
        extras = values[7:10] if len(values) >= 10 else [math.nan, math.nan, 0]
        confident, centre_std = None, math.nan
        if len(values) == 12:
            if values[10] not in (0.0, 1.0):
                raise file_error(path, f"confident flag must be 0 or 1, found {parts[11]}", number)
            confident, centre_std = values[10] == 1.0, values[11]
        results.append(
            PoseResult(
                name,
                cam_to_world,
                int(extras[2]) if math.isfinite(extras[2]) else 0,
                extras[0],
                extras[1],
                confident=confident,
                centre_std_m=centre_std,
            )
        )
    return results


def match_frames(names: list[str], gt: Scene) -> list[int]:
    """Index into ``gt.frames`` of each of ``names``: the frame of exactly that name, else
    the only frame with that file name (results written elsewhere may drop folders).
    :class:`AcegError` naming the ground truth for a name with no frame, a file name that
    several frames share (``cam0/0001.jpg``, ``cam1/0001.jpg``) and two names for one frame.
    """
    where = str(gt.root) if gt.root is not None else repr(gt.name)
    exact = {f.name: i for i, f in enumerate(gt.frames)}
    by_file: dict[str, list[int]] = {}
    for i, f in enumerate(gt.frames):
        by_file.setdefault(Path(f.name).name, []).append(i)
    indices, unknown, ambiguous = [], [], []
    for name in names:
        if name in exact:
            indices.append(exact[name])
            continue
        candidates = by_file.get(Path(name).name, [])
        if len(candidates) == 1:
            indices.append(candidates[0])
        else:
            (ambiguous if candidates else unknown).append(name)
    if unknown:
        raise AcegError(f"{len(unknown)} of {len(names)} image(s) are not in the ground truth "
                        f"{where} (first: {unknown[0]})")
    if ambiguous:
        raise AcegError(f"{ambiguous[0]}: several frames of the ground truth {where} have this "
                        "file name; name the image with its folder")
    seen: dict[int, str] = {}
    for name, index in zip(names, indices, strict=True):
        if index in seen:
            raise AcegError(f"{seen[index]} and {name} both name ground-truth frame "
                            f"{gt.frames[index].name} of {where}")
        seen[index] = name
    return indices


def evaluate_results(
    gt: Scene, results: list[PoseResult]
) -> tuple[list[PoseResult], AccuracyTable]:
    """Errors of ``results`` against the ground-truth poses of ``gt``.

    Results are matched to frames by image name (:func:`match_frames`: the exact name, or
    the file name when only one frame has it). Every frame of ``gt`` is a query: one with
    no result counts as not localized. A result for an image that ``gt`` does not contain
    is an error (a wrong ground truth is a silent wrong answer otherwise).
    Returns one :class:`PoseResult` per ground-truth frame (errors filled in) and the table.
    """
    indices = match_frames([r.name for r in results], gt)
    by_frame = dict(zip(indices, results, strict=True))
    evaluated = []
    for index, frame in enumerate(gt.frames):
        if frame.cam_to_world is None:
            raise AcegError(f"ground-truth frame {frame.name} has no pose")
        r = by_frame.get(index)
        if r is None or r.cam_to_world is None:
            evaluated.append(
                PoseResult(frame.name, None, 0, math.inf, math.inf, r.reason if r else "no result")
            )
            continue
        rot, trans = pose_errors(r.cam_to_world, frame.cam_to_world)
        evaluated.append(PoseResult(frame.name, r.cam_to_world, r.inliers, rot, trans,
                                    confident=r.confident, centre_std_m=r.centre_std_m))
    table = accuracy_table([r.rot_err_deg for r in evaluated], [r.trans_err_m for r in evaluated])
    return evaluated, table
